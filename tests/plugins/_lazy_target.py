"""A handler module that only a lazy factory imports, so a test can see when it is loaded."""

from __future__ import annotations

from pydantic import BaseModel

from mixer import HandlerEnv, ReportBatch, ReportHandler


class Built(ReportHandler):
    def __init__(self, config: BaseModel, env: HandlerEnv) -> None:
        self.config = config
        self.env = env

    def handle_report(self, batch: ReportBatch) -> None:
        return None
