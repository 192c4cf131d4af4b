# The compiled CheckResponse writer (mixer/wire/_cencode.pyx); mixer.wire._check.CompiledEncoder has
# the same signature.
from collections.abc import Callable, Sequence

from mixer.decision import CheckOutcome
from mixer.values import AttributeMatch

def precondition(
    outcome: CheckOutcome, referenced_bytes: Callable[[Sequence[AttributeMatch]], bytes]
) -> bytes | None: ...
