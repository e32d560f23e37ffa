"""The engine's exception hierarchy.

One root, :class:`StsError`. Every error a user can cause carries the context
needed to fix it: where the input came from (``source``: a file name, a DNS
name, a URL), the line, the field, the offending value, and the rule it breaks
(a requirement ID from ``docs/requirements.md`` such as ``POL-5``, or an RFC
section). Messages quote values with ``!r``.

Tree::

    StsError
    ├── ParseError              input text that breaks a grammar
    │   ├── TxtRecordError      _mta-sts / _smtp._tls TXT records (RFC 8461 §3.1, RFC 8460 §3)
    │   ├── PolicyError         policy bodies (RFC 8461 §3.2)
    │   ├── MxPatternError      mx patterns (RFC 8461 §3.2, §4.1)
    │   └── TlsaError           TLSA RDATA (RFC 6698 §2)
    ├── ConfigError             engine / scenario configuration (file, key, value)
    └── StateError              an event the state machine cannot take in its state
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MxPatternError",
    "ParseError",
    "PolicyError",
    "StateError",
    "StsError",
    "TlsaError",
    "TxtRecordError",
]


class StsError(Exception):
    """Root of every error the engine raises on purpose."""


class ParseError(StsError):
    """Text that does not follow its grammar.

    Attributes:
        reason: what is wrong, in one sentence.
        source: where the text came from (file name, DNS owner name, URL), or None.
        line: 1-based line number, or None when the input has no lines.
        field: the field (key) concerned, or None.
        value: the offending value, or None.
        rule: the requirement ID or RFC section broken (``"POL-5"``, ``"RFC 8461 §3.2"``).
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        value: str | None = None,
        rule: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.source is not None:
            where.append(self.source)
        if self.line is not None:
            where.append(f"line {self.line}")
        prefix = ":".join(where)
        parts = [f"{prefix}: " if prefix else ""]
        if self.field is not None:
            parts.append(f"field {self.field!r}: ")
        parts.append(self.reason)
        if self.value is not None:
            parts.append(f" (value {self.value!r})")
        if self.rule is not None:
            parts.append(f" [{self.rule}]")
        return "".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The error as a JSON-ready mapping (a stable interface for tools)."""
        return {
            "error": type(self).__name__,
            "reason": self.reason,
            "source": self.source,
            "line": self.line,
            "field": self.field,
            "value": self.value,
            "rule": self.rule,
        }


class TxtRecordError(ParseError):
    """A TXT record (``_mta-sts`` or ``_smtp._tls``) that breaks its ABNF."""


class PolicyError(ParseError):
    """An MTA-STS policy body that breaks RFC 8461 §3.2."""


class MxPatternError(ParseError):
    """An ``mx`` pattern that is not ``[*.]Domain`` in A-labels."""


class TlsaError(ParseError):
    """TLSA RDATA that cannot be parsed."""


class ConfigError(StsError):
    """Bad configuration: names the file, the key path and the value.

    Attributes:
        reason: what is wrong.
        file: the configuration file, or None.
        key: dotted key path (``destination_controls.example_com.tls``), or None.
        value: the offending value, or None.
        allowed: the accepted values or keys when they are a closed set (the reason
            already names them; this is for tools), else empty.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        key: str | None = None,
        value: object = None,
        allowed: tuple[str, ...] = (),
    ) -> None:
        self.reason = reason
        self.file = file
        self.key = key
        self.value = value
        self.allowed = allowed
        loc = ": ".join(p for p in (file, key) if p)
        text = f"{loc}: {reason}" if loc else reason
        if value is not None:
            text += f" (value {value!r})"
        super().__init__(text)


class StateError(StsError):
    """A state machine was handed an event it cannot take in its current state."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        self.machine = machine
        self.state = state
        self.event = event
        super().__init__(f"{machine}: cannot take {event!r} in state {state!r}")
