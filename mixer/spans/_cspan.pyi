# The compiled OTLP span encoder (mixer/spans/_cspan.pyx); mixer.spans.otlp.CompiledSpanEncoder
# has the same signatures.
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from mixer.templates import TraceSpanInstance
from mixer.values import IPAddress

def configure(
    utc: tzinfo,
    ip_text: Callable[[IPAddress], str],
    attribute_field: Callable[[str, Any], bytes],
    legacy_names: dict[str, str],
) -> None: ...
def encode(instance: TraceSpanInstance) -> tuple[bytes, str] | None: ...
