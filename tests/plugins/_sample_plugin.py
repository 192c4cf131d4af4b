"""A plugin module for tests, loaded through a fake entry point."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mixer import AdapterInfo, Handler, HandlerEnv, ReportBatch, ReportHandler, hookimpl


class SampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleHandler(ReportHandler):
    def handle_report(self, batch: ReportBatch) -> None:
        return None


def build(config: BaseModel, env: HandlerEnv) -> Handler:
    return SampleHandler()


def adapter(name: str, templates: frozenset[str] = frozenset({"metric"})) -> AdapterInfo:
    return AdapterInfo(name, f"{name} for tests", templates, SampleConfig, build, version="9.9")


@hookimpl
def mixer_register_adapters() -> list[AdapterInfo]:
    return [adapter("sample")]
