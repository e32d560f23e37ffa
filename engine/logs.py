"""Render engine events as the appliance's ``mail_logs`` lines, and as JSON lines.

Theory of operation
-------------------
The engine emits :class:`~engine.core.events.LogEvent` values; nothing else
in the engine formats text. :data:`TEMPLATES` maps an event code to the line
the Cisco gateway writes for it (``docs/gateway-behaviour.md`` §5). The lines
the seed document prints come out exactly as printed there, odd spacing and
punctuation included (``domain(x)`` beside ``domain (x)``, ``., for``).
Lines the seed does not show are marked [INF] in ``docs/gateway-behaviour.md``; their
templates follow the same shape.

A line is ``<ctime> <Level>: <text>``, where ``ctime`` is
``Www Mmm dd HH:MM:SS YYYY`` with the day padded by a space. At ``info``
level Debug lines are left out. The JSON form carries the event code, level,
time and every field, and is what tools should parse.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO

from engine.core.events import LogEvent

__all__ = ["INTERNAL", "TEMPLATES", "JsonLogWriter", "MailLogWriter", "format_ctime", "render_text"]


def _rids(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return f"[{value}]"


def _tls_success(f: Mapping[str, object]) -> str:
    text = f"DCID {f['dcid']} TLS success protocol {f['protocol']} cipher {f['cipher']}"
    san = f.get("san")
    if san:
        text += f" subjectAltName:dNSName={san}"
    return text


def _encache(f: Mapping[str, object]) -> str:
    # Shape of the seed's debug line; the first number is the appliance's internal
    # cache stamp, rendered here from the engine clock [INF].
    stamp = int(float(str(f.get("at", 0))) * 1e8)
    records = f.get("records") or []
    status = "secure" if f.get("secure") else "insecure"
    assert isinstance(records, list)
    # Each RR is a tuple: a TXT RR's character-strings, or the one presentation text.
    entries = ", ".join(
        f"({stamp}L, 0, '{status}', {tuple(r) if isinstance(r, list | tuple) else (r,)!r})"
        for r in records
    )
    return f"DNS encache ({f['name']}, {f['type']}, [{entries}])"


def _delayed_or_bounced(word: str) -> Callable[[Mapping[str, object]], str]:
    def render(f: Mapping[str, object]) -> str:
        reply = f.get("reply_lines") or []
        assert isinstance(reply, list)
        quoted = ", ".join(repr(x) for x in reply)
        return (
            f"{word}: DCID {f.get('dcid', 0)} MID {f['mid']} From: <{f['mail_from']}> "
            f"To: <{f['rcpt']}> RID {f['rid']} - {f['enhanced']} - {f['reason']} "
            f"('{f.get('code', '000')}', [{quoted}])"
        )

    return render


def _received(f: Mapping[str, object]) -> str:
    rcpts = f.get("rcpts") or []
    assert isinstance(rcpts, list)
    to = " ".join(f"RID {i} To: <{r}>" for i, r in enumerate(rcpts))
    return (
        f"Start MID {f['mid']} ICID {f['icid']} From: <{f['mail_from']}> {to} "
        f"ready {f['size']} bytes"
    )


Template = str | Callable[[Mapping[str, object]], str]

#: Event code -> line text. ``str`` templates use ``str.format`` over the fields.
TEMPLATES: dict[str, Template] = {
    # Queue (docs/gateway-behaviour.md §5.1)
    "message.queued": "MID {mid} queued for delivery",
    "message.finished": "Message finished MID {mid} done",
    "message.pending": "Message {mid} to RID {rid} pending till {until}",
    # DNS debug lines (seed, Sep 26 debug sequence)
    "dns.query": "DNS query: Q({name}, '{type}')",
    "dns.query.server": "DNS query: QIP ({name},'{type}','{server}',{timeout:g})",
    "dns.answer": _encache,
    # MTA-STS (seed, verbatim)
    "sts.txt.found": "Successfully fetched MTA-STS TXT record for domain({domain})",
    "sts.cache.valid": "Valid cache entry found for the domain ({domain}).",
    "sts.fetch.start": "Fetch MTA-STS policy for the domain ({domain})",
    "sts.fetch.proxy": "MTA-STS policy fetch request via the proxy",
    "sts.fetch.timeout": (
        "STS policy fetch request failed due to connection timeout., for the domain {domain}"
    ),
    "sts.fetch.failed": (
        "Failure encountered while fetching MTA-STS policy for the domain ({domain})"
    ),
    "sts.apply": "Applying MTA-STS policy for the domain ({domain})",
    # Discovery outcomes the seed does not show [INF]: same shape as its lines.
    "sts.policy.fetched": (
        "MTA-STS policy fetched for the domain ({domain}): mode {mode} max_age {max_age}"
    ),
    "sts.policy.none": "No MTA-STS policy applies to the domain ({domain}): {reason}",
    "sts.txt.absent": "No MTA-STS TXT record for domain({domain}) ({detail})",
    "sts.txt.invalid": "Invalid MTA-STS TXT record for domain({domain}): {detail}",
    "sts.txt.temperror": "MTA-STS TXT lookup failed for domain({domain}): {detail}",
    "sts.success": "MTA-STS policy for the domain ({domain}) Successful.",
    "sts.refresh.failed": ("MTA-STS policy refresh failed for the domain ({domain}): {detail}"),
    # Connections and delivery (docs/gateway-behaviour.md §5.1)
    "smtp.connect": "New SMTP DCID {dcid} interface {interface} address {address} port {port}",
    # The appliance's catch-all is "network error"; a fault that is no network error (a
    # bug the delivery boundary contained, engine/delivery/attempt.py) says "internal error".
    "smtp.connect.error": lambda f: (
        f"Connection Error: DCID {f['dcid']} domain: {f['domain']} IP: {f['address']} "
        f"port: {f['port']} details: {f['detail']} interface: {f['interface']} "
        f"reason: {f.get('category') or 'network error'}"
    ),
    "smtp.close": "DCID {dcid} close",
    "smtp.close.error": "DCID {dcid} close failed: {detail}",
    "delivery.start": lambda f: (
        f"Delivery start DCID {f['dcid']} MID {f['mid']} to RID {_rids(f['rids'])}"
    ),
    "delivery.done": lambda f: (
        f"Message done DCID {f['dcid']} MID {f['mid']} to RID {_rids(f['rids'])}"
    ),
    "delivery.response": lambda f: (
        f"MID {f['mid']} RID {_rids(f['rids'])} Response '{f['response']}'"
    ),
    # A 4yz on one host: the recipients go on to the next MX (engine/delivery/session.py).
    "delivery.refused.transient": lambda f: (
        f"MID {f['mid']} RID {_rids(f['rids'])} Response '{f['response']}' to "
        f"{f['stage']} on DCID {f['dcid']}: temporary, the next MX is tried if there is one"
    ),
    # Not sent to this host: it lacks an extension the message needs (RFC 6152, RFC 6531).
    "delivery.unsendable": lambda f: (
        f"MID {f['mid']} RID {_rids(f['rids'])} not sent on DCID {f['dcid']}: {f['detail']}"
    ),
    "delivery.delayed": _delayed_or_bounced("Delayed"),
    "delivery.bounced": _delayed_or_bounced("Bounced"),
    # TLS (docs/gateway-behaviour.md §5.2)
    "tls.success": _tls_success,
    "tls.failed": "DCID {dcid} TLS failed: {detail}",
    "tls.verify.deferring": "DCID {dcid} TLS deferring: verify error: {detail}",
    "tls.required.failed": "DCID {dcid} TLS was required but could not be successfully negotiated",
    # DANE (docs/gateway-behaviour.md §5.3, templates [INF])
    "dane.success": "DCID {dcid} DANE Success for MX host {mx}",
    "dane.failed": "DCID {dcid} DANE Failed for MX host {mx}",
    "dane.not.applicable": (
        "DANE: No secure TLSA record found for MX host {mx}, falling back to TLS setting"
    ),
    "config.warning": "{detail}",
    # sts-engine send's first lines [INF]: what applies to a destination, and from where.
    "send.settings": lambda f: (
        f"Destination Controls for the domain ({f['domain']}): TLS {f['tls']}, "
        f"DANE {f['dane']}, MTA-STS {f['mta_sts']}"
        + (f", SMTP route {f['route']}" if f.get("route") else "")
        + f" (from {f['source']})"
    ),
    "tls.root.skipped": "{detail}",
    # Gateway: injection listener (shapes of the appliance's ICID lines [INF])
    "listener.ready": "sts-engine listening on {host} port {port}",
    "listener.connect": (
        "New SMTP ICID {icid} interface {interface} address {address} "
        "reverse dns host unknown verified no"
    ),
    "listener.close": "ICID {icid} close",
    "listener.rejected": "ICID {icid} Rejected: To: <{rcpt}> {reason}",
    "listener.queue.error": "ICID {icid} queue error: {detail}",
    "listener.refused": "SMTP connection from {address} refused: {reason}",
    "listener.timeout": "ICID {icid} {limit} time limit reached, closed with 421",
    "listener.tls.failed": "ICID {icid} TLS handshake failed: {detail}",
    "listener.data.refused": "ICID {icid} message refused: {reply}",
    "listener.error": "ICID {icid} internal error: {detail}",
    "listener.auth": "ICID {icid} AUTH {mechanism} user {user!r} {result}",
    "listener.auth.refused": "ICID {icid} AUTH refused: {reason}",
    "listener.auth.blocked": (
        "AUTH from {address} refused for now: {failures} failed attempts within {window:g} s"
    ),
    "message.received": lambda f: _received(f),
    # Gateway: queue, DSNs, reload, reporting [INF]
    "queue.recovered": "Queue recovered {count} recipients left in flight",
    "delivery.error": "MID {mid} delivery error: {detail}",
    "delivery.commit.failed": "MID {mid} RID {rid} not committed at its reply: {detail}",
    "delivery.retry.failed": "MID {mid} retry not recorded (the lease returns it): {detail}",
    "queue.outcome.dropped": "MID {mid} RID {rid} outcome not recorded: {detail}",
    "gateway.step.failed": "Gateway {step} failed, retrying: {detail}",
    "gateway.step.recovered": "Gateway {step} works again",
    "gateway.stopped": "Gateway stopped accepting mail, exiting: {detail}",
    "dsn.sent": "MID {dsn_mid} DSN ({action}) generated for MID {mid} to <{to}>",
    "dsn.failed": "MID {mid} DSN not generated: {detail}",
    "dsn.mark.skipped": "MID {mid} bounce not marked after its DSN: {detail}",
    "config.reloaded": "Configuration reloaded from {source}",
    "config.reload.failed": "Configuration reload failed, keeping the running one: {detail}",
    "config.reload.partial": "Configuration reload incomplete: {detail}",
    "tlsrpt.sent": "TLS report for the domain ({domain}) day {day} sent via {via} to {to}",
    "tlsrpt.retry": "TLS report for the domain ({domain}) to {to} failed ({detail}), retrying",
    "tlsrpt.failed": "TLS report for the domain ({domain}) to {to} abandoned: {detail}",
    "tlsrpt.rua.skipped": "TLS report rua {uri!r} for the domain ({domain}) skipped: {reason}",
    "tlsrpt.none": "No TLSRPT record for the domain ({domain}); report for {day} dropped",
    "delivery.host.skipped": "MX host {mx} for the domain ({domain}) not used: {detail}",
    # Gateways sharing state through Redis (docs/cluster.md) [INF]
    "cluster.redis.down": (
        "Cluster Redis {redis} unreachable ({detail}): going on with the local cache only"
    ),
    "cluster.redis.up": "Cluster Redis {redis} reachable again: sharing resumed",
    "cluster.fetch.wait": (
        "MTA-STS policy for the domain ({domain}) id {txt_id} is being fetched by another "
        "gateway: waiting for it"
    ),
    "cluster.policy.shared": (
        "MTA-STS policy for the domain ({domain}) id {txt_id} taken from the cluster cache"
    ),
}

#: Codes that are data for other parts of the engine (TLS-RPT), not ``mail_logs`` lines.
#: They still appear in the JSON form.
INTERNAL: frozenset[str] = frozenset(
    {"tls.session", "delivery.error.trace", "gateway.step.trace"}  # tracebacks: JSON only
)


def format_ctime(at: float) -> str:
    """``Thu Sep 26 15:23:39 2024`` (day padded by a space) for POSIX seconds, UTC."""
    dt = datetime.fromtimestamp(at, UTC)
    return f"{dt:%a %b} {dt.day:2d} {dt:%H:%M:%S %Y}"


def render_text(event: LogEvent) -> str:
    """The ``mail_logs`` text of one event, without time and level.

    Codes without a template render as ``<code> key=value ...`` so nothing is lost.
    """
    template = TEMPLATES.get(event.code)
    fields = dict(event.fields)
    fields.setdefault("at", event.at)
    if template is None:
        pairs = " ".join(f"{k}={v}" for k, v in event.fields.items())
        return f"{event.code} {pairs}".rstrip()
    if callable(template):
        return template(fields)
    try:
        return template.format(**fields)
    except (KeyError, ValueError, IndexError) as exc:
        return f"{event.code} (unrenderable: {exc!r}) {dict(event.fields)}"


_LEVELS = {"debug": 10, "info": 20, "warning": 30}


class MailLogWriter:
    """An EventSink writing ``mail_logs`` lines to a text stream.

    Args:
        stream: where lines go.
        level: ``"info"`` (Debug lines left out) or ``"debug"``.
    """

    def __init__(self, stream: IO[str], *, level: str = "info") -> None:
        if level not in _LEVELS:
            raise ValueError(f"log level must be one of {sorted(_LEVELS)}, not {level!r}")
        self._stream = stream
        self._threshold = _LEVELS[level]
        self.debug_enabled = self._threshold <= _LEVELS["debug"]
        self.lines: list[str] = []

    def line(self, event: LogEvent) -> str | None:
        """The full line for ``event``, or None when its level is filtered out."""
        if event.code in INTERNAL or _LEVELS.get(event.level, 20) < self._threshold:
            return None
        return f"{format_ctime(event.at)} {event.level.capitalize()}: {render_text(event)}"

    def emit(self, event: LogEvent) -> None:
        """Write the event's line (if its level passes)."""
        text = self.line(event)
        if text is not None:
            self.lines.append(text)
            self._stream.write(text + "\n")


class JsonLogWriter:
    """An EventSink writing one JSON object per event: code, level, time, fields, text."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def emit(self, event: LogEvent) -> None:
        """Write ``event`` as one JSON line."""
        record = {
            "code": event.code,
            "level": event.level,
            "at": event.at,
            "fields": dict(event.fields),
            "text": render_text(event),
        }
        self._stream.write(json.dumps(record, default=str, sort_keys=False) + "\n")
