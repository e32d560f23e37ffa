# The optional C reader of policy bodies (engine/core/_policyscan.c).
from typing import Any

def configure(
    policy_cls: type[Any],
    modes: tuple[Any, Any, Any],
    patterns: dict[str, Any],
    pattern_cls: type[Any],
    /,
) -> None: ...
def parse(text: str, /) -> Any | None: ...
