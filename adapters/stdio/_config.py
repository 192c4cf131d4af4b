"""The stdio adapter's params, Mixer-compatible, in snake_case or camelCase."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mixer.encoding import DEFAULT_SEVERITY_LEVELS, Level
from mixer.redact import FieldRedaction

__all__ = ["DEFAULT_SEVERITY_LEVELS", "Level", "LevelParam", "LogStream", "StdioConfig"]


class LogStream(enum.Enum):
    STDOUT = "STDOUT"
    STDERR = "STDERR"
    FILE = "FILE"
    #: Mixer's name for a file with rotation; here every FILE rotates (see the rotation params).
    ROTATED_FILE = "ROTATED_FILE"


def _level(value: object) -> object:
    # YAML names the level (INFO); proto JSON may give its number (0).
    if isinstance(value, str):
        try:
            return Level[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown level {value!r} (want INFO, WARNING or ERROR)") from None
    return value


LevelParam = Annotated[Level, BeforeValidator(_level)]

_STREAM_PATHS = {"": LogStream.STDOUT, "stdout": LogStream.STDOUT, "stderr": LogStream.STDERR}


class StdioConfig(BaseModel):
    """Params of a ``stdio`` handler."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    log_stream: LogStream | None = Field(
        default=None,
        description=(
            'Where to write; unset, it follows ``output_path`` ("" or "stdout", "stderr", else a file).'
        ),
    )
    severity_levels: dict[str, LevelParam] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITY_LEVELS),
        description="Severity text of logentry instances -> level; unknown severities are INFO.",
    )
    metric_level: LevelParam = Field(default=Level.INFO, description="The level metrics are written at.")
    output_as_json: bool = Field(
        default=True,
        description=(
            "JSON lines when true; otherwise tab-separated time, level, instance, then the fields as JSON."
        ),
    )
    output_level: LevelParam = Field(
        default=Level.INFO, description="Entries below this level are not written."
    )
    output_path: str = Field(
        default="", description='"" or "stdout", "stderr", or the path of the file to write.'
    )
    max_megabytes_before_rotation: float = Field(
        default=100,
        ge=0,
        description="A file is rotated before it would grow past this size; 0 never rotates.",
    )
    max_days_before_rotation: int = Field(
        default=30, ge=0, description="Rotated files older than this many days are deleted; 0 keeps them."
    )
    redact: FieldRedaction | None = Field(
        default=None,
        description="Fields of each line hashed, masked or dropped before it is written (e.g. API keys).",
    )
    max_backups_before_rotation: int = Field(
        default=1000,
        ge=0,
        validation_alias=AliasChoices(
            "max_backups_before_rotation",
            "maxBackupsBeforeRotation",
            "max_rotated_files",
            "maxRotatedFiles",
        ),
        description=(
            "At most this many rotated files are kept; 0 keeps them all. Mixer calls it max_rotated_files."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> StdioConfig:
        self.severity_levels = {**DEFAULT_SEVERITY_LEVELS, **self.severity_levels}
        path_stream = _STREAM_PATHS.get(self.output_path.strip().lower())
        if self.log_stream in (LogStream.STDOUT, LogStream.STDERR):
            if self.output_path.strip() and path_stream is not self.log_stream:
                raise ValueError(
                    f"output_path {self.output_path!r} cannot be given with "
                    f"log_stream {self.log_stream.value}"
                )
        elif self.log_stream is not None and path_stream is not None:
            raise ValueError(f"log_stream {self.log_stream.value} needs a file path in output_path")
        return self

    @property
    def stream(self) -> LogStream:
        """The effective stream: ``log_stream``, or the one ``output_path`` names."""
        if self.log_stream is not None:
            return self.log_stream
        return _STREAM_PATHS.get(self.output_path.strip().lower(), LogStream.FILE)

    @property
    def max_bytes(self) -> int:
        return int(self.max_megabytes_before_rotation * 1024 * 1024)
