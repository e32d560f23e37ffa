"""How the web side of a world behaves: plain values a world spec holds and the servers act on.

:class:`PolicyResponse` (with its :class:`PolicyBehaviour`) is how one policy host answers
``GET /.well-known/mta-sts.txt``; :class:`ProxyFault` is a deliberate misbehaviour of
the CONNECT proxy. They live apart from the servers (:mod:`harness.world.web.policy_host`,
:mod:`harness.world.web.proxy`) so that the world spec can hold them without importing
a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PolicyBehaviour", "PolicyResponse", "ProxyFault"]


class PolicyBehaviour(StrEnum):
    """What a policy host does with a request for the policy path."""

    SERVE = "serve"  # status, headers and body as configured
    REDIRECT = "redirect"  # 3xx status with a Location header
    HANG = "hang"  # never send the status line; wait until the client or server leaves
    SLOW_BODY = "slow_body"  # headers now, then the body trickled out
    OVERSIZE = "oversize"  # `oversize_bytes` of body with Content-Length
    OVERSIZE_CHUNKED = "oversize_chunked"  # the same, chunked, no Content-Length
    ENDLESS = "endless"  # a chunked body that never ends
    RESET = "reset"  # abort the TCP connection (RST) once the request has arrived


@dataclass(frozen=True, slots=True)
class PolicyResponse:
    """How one policy host answers ``GET /.well-known/mta-sts.txt``.

    Attributes:
        behaviour: the :class:`PolicyBehaviour`.
        status: HTTP status (3xx for REDIRECT).
        body: the body, or the prefix of an oversize/endless body.
        content_type: Content-Type value, or None to send no Content-Type at all.
        headers: extra headers, e.g. ``(("Cache-Control", "max-age=31536000"),)``.
        location: the Location of a REDIRECT.
        trickle_interval: seconds between SLOW_BODY pieces (keep it short in tests).
        trickle_bytes: bytes per SLOW_BODY piece.
        oversize_bytes: total body size for OVERSIZE and OVERSIZE_CHUNKED.
    """

    behaviour: PolicyBehaviour = PolicyBehaviour.SERVE
    status: int = 200
    body: bytes = b""
    content_type: str | None = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    location: str | None = None
    trickle_interval: float = 0.05
    trickle_bytes: int = 1
    oversize_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"PolicyResponse.status: {self.status!r} is not an HTTP status")
        if self.behaviour is PolicyBehaviour.REDIRECT and (
            self.location is None or not 300 <= self.status <= 399
        ):
            raise ValueError(
                f"PolicyResponse: a redirect needs a 3xx status and a location "
                f"(status {self.status!r}, location {self.location!r})"
            )
        if self.trickle_interval <= 0 or self.trickle_bytes <= 0 or self.oversize_bytes <= 0:
            raise ValueError(
                f"PolicyResponse: trickle_interval {self.trickle_interval!r}, trickle_bytes "
                f"{self.trickle_bytes!r} and oversize_bytes {self.oversize_bytes!r} must be > 0"
            )

    @classmethod
    def redirect(cls, location: str, status: int = 301) -> PolicyResponse:
        """A redirect to ``location`` with ``status`` (FETCH-9)."""
        return cls(PolicyBehaviour.REDIRECT, status=status, location=location, content_type=None)


class ProxyFault(StrEnum):
    """A deliberate misbehaviour of the proxy."""

    NONE = "none"
    REFUSE = "refuse"  # 403 to every request, then close
    HANG = "hang"  # accept, read the request, never answer
