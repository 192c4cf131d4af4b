"""Type stub of the compiled decoder (mixer/wire/_cdecode.pyx; mypy does not read Cython).

The signatures are those of :class:`mixer.wire._fast.CompiledDecoder`, written once there.
"""

from mixer.wire._fast import CompiledDecoder

_module: CompiledDecoder
configure = _module.configure
report_elements = _module.report_elements
scan_fields = _module.scan_fields
check_request = _module.check_request
