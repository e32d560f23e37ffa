"""Judging expectations against observations, with messages that show what was seen.

Theory of operation
-------------------
:func:`check` takes one :class:`~harness.scenario.model.Expect` and the observations
it is about (one step's, or every step's for the final ``[expect]``) and returns a
list of :class:`Mismatch`; empty means it holds. Each expectation key is one small
function over plain records, so adding a key is adding a function to ``_CHECKS``.

Two matching rules are shared:

* a field matcher is compared by equality, or, when it is a string starting with
  ``~``, searched as a regular expression in the value's text; dotted names walk into
  nested tables and lists (:func:`field_matches`);
* ``events`` and ``logs`` are *ordered subsequences*: each item must match a later
  entry than the previous one did, with anything in between.

When an event is missing, the mismatch lists the closest events actually seen: the
same code with differing fields first (the differing fields named), else events with
similar codes, so the reader sees "sts.fetch.failed kind='timeout' (expected
'status')" rather than only "not found".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.scenario.model import DsnPattern, EventPattern, Expect, ReportPattern
from harness.scenario.observation import (
    DsnRecord,
    EventRecord,
    ReportRecord,
    SessionRecord,
    StepObservation,
)

__all__ = ["Mismatch", "check", "closest_events", "field_matches", "lookup"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One expectation that did not hold.

    Attributes:
        key: the expectation key (``"events[1]"``, ``"outcome"``).
        expected: what was expected, as written.
        seen: what was observed instead.
        closest: the nearest observations, one per line.
    """

    key: str
    expected: str
    seen: str
    closest: tuple[str, ...] = ()

    def render(self) -> str:
        """Several indented lines for a failure message."""
        out = [f"{self.key}", f"  expected: {self.expected}", f"  seen:     {self.seen}"]
        if self.closest:
            out.append("  closest:")
            out += [f"    {c}" for c in self.closest]
        return "\n".join(out)


def lookup(fields: Mapping[str, Any], name: str) -> Any:
    """A field by name; ``a.b.0`` walks tables and lists. A sentinel when absent."""
    if name in fields:
        return fields[name]
    value: Any = fields
    for part in name.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def field_matches(matcher: Any, value: Any) -> bool:
    """Whether ``value`` satisfies ``matcher`` (equality, or ``~regex`` search)."""
    if value is _MISSING:
        return False
    if isinstance(matcher, str) and matcher.startswith("~"):
        return re.search(matcher[1:], "" if value is None else str(value)) is not None
    return bool(_plain(matcher) == _plain(value))


def _matches(p: EventPattern, e: EventRecord) -> bool:
    return field_matches(p.code, e.code) and all(
        field_matches(m, lookup(e.fields, k)) for k, m in p.fields.items()
    )


def _show(e: EventRecord, index: int, p: EventPattern | None = None) -> str:
    if p is None or not field_matches(p.code, e.code):
        shown = ", ".join(f"{k}={v!r}" for k, v in e.fields.items())
        return f"#{index} {e.code} {{{shown}}}"
    diffs = []
    for k, m in p.fields.items():
        got = lookup(e.fields, k)
        if not field_matches(m, got):
            diffs.append(f"{k}={'<absent>' if got is _MISSING else repr(got)} (expected {m!r})")
    return f"#{index} {e.code}: " + (", ".join(diffs) or "matches, but out of order")


def closest_events(
    pattern: EventPattern, events: Sequence[EventRecord], limit: int = 5
) -> list[str]:
    """The events nearest ``pattern``: same code (differing fields named), else similar codes."""
    same = [(i, e) for i, e in enumerate(events) if field_matches(pattern.code, e.code)]
    if same:
        return [_show(e, i, pattern) for i, e in same[:limit]]
    codes = list(dict.fromkeys(e.code for e in events))
    target = pattern.code.lstrip("~")
    near = difflib.get_close_matches(target, codes, n=limit, cutoff=0.5)
    prefix = target.rsplit(".", 1)[0]
    near += [c for c in codes if c.startswith(prefix + ".") and c not in near]
    picked = []
    for code in near[:limit]:
        i = next(i for i, e in enumerate(events) if e.code == code)
        picked.append(_show(events[i], i))
    return picked or [f"(no similar codes; codes seen: {', '.join(codes) or 'none'})"]


# -- one function per expectation key ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    obs: Sequence[StepObservation]

    @property
    def events(self) -> list[EventRecord]:
        return [e for o in self.obs for e in o.events]

    @property
    def sessions(self) -> list[SessionRecord]:
        return [s for o in self.obs for s in o.world.sessions]

    @property
    def reports(self) -> list[ReportRecord]:
        return [r for o in self.obs for r in o.world.reports]

    @property
    def dsns(self) -> list[DsnRecord]:
        return [d for o in self.obs for d in o.world.dsns]

    def delivering(self, via: str | None = None) -> list[SessionRecord]:
        return [s for s in self.sessions if s.delivered and (via is None or s.mx == via)]


def _sessions_text(sessions: Iterable[SessionRecord]) -> tuple[str, ...]:
    return tuple(
        f"{s.mx}: {s.tls_version or 'clear'}, SNI={s.sni}, {s.delivered} delivered, "
        f"{' '.join(s.commands)} -> {s.ended}"
        for s in sessions
    )


def _outcome(x: Expect, sc: _Scope) -> list[Mismatch]:
    last = {d.rcpt.lower(): d for o in sc.obs for d in o.deliveries}
    if not last:
        return [Mismatch("outcome", str(x.outcome), "no message was sent")]
    wanted = x.outcome if isinstance(x.outcome, Mapping) else dict.fromkeys(last, x.outcome)
    out = []
    for rcpt, want in wanted.items():
        d = last.get(rcpt)
        if d is None:
            out.append(Mismatch(f"outcome.{rcpt}", str(want), f"no recipient {rcpt!r}"))
        elif d.status != want:
            why = f" ({d.reason}; {d.result_type})" if d.reason else ""
            out.append(Mismatch(f"outcome.{rcpt}", str(want), f"{d.status} via {d.mx}{why}"))
    return out


def _via(x: Expect, sc: _Scope) -> list[Mismatch]:
    hosts = sorted({s.mx for s in sc.delivering()})
    if hosts == [x.via]:
        return []
    seen = f"delivered at {', '.join(hosts)}" if hosts else "no MX accepted a message"
    return [Mismatch("via", str(x.via), seen, _sessions_text(sc.sessions))]


def _tls(x: Expect, sc: _Scope) -> list[Mismatch]:
    got = sorted({s.tls_version or "none" for s in sc.delivering(x.via)})
    if got == [x.tls]:
        return []
    seen = ", ".join(got) if got else "no delivering session"
    return [Mismatch("tls", str(x.tls), seen, _sessions_text(sc.sessions))]


def _verified(x: Expect, sc: _Scope) -> list[Mismatch]:
    got = sorted({d.verified for o in sc.obs for d in o.deliveries if d.status == "delivered"})
    if got == [x.verified]:
        return []
    return [Mismatch("verified", str(x.verified), ", ".join(got) or "nothing was delivered")]


def _no_transaction(x: Expect, sc: _Scope) -> list[Mismatch]:
    bad = [s for s in sc.sessions if s.mx in x.no_transaction and s.transactions]
    return [
        Mismatch(
            f"no_transaction.{s.mx}", "no MAIL FROM", "a mail transaction", _sessions_text([s])
        )
        for s in bad
    ]


def _faults(x: Expect, sc: _Scope) -> list[Mismatch]:
    out = []
    for host, patterns in x.faults.items():
        seen = [f for s in sc.sessions if s.mx == host for f in s.faults]
        for pattern in patterns:
            if not any(_text_matches(pattern, f) for f in seen):
                shown = "; ".join(seen) if seen else "no fault recorded there"
                out.append(Mismatch(f"faults.{host}", pattern, shown))
    return out


def _text_matches(pattern: str, text: str) -> bool:
    if pattern.startswith("~"):
        return re.search(pattern[1:], text) is not None
    return pattern == text


def _in_clear(x: Expect, sc: _Scope) -> list[Mismatch]:
    clear = [s for s in sc.sessions if s.in_clear]
    if bool(clear) == x.in_clear:
        return []
    seen = "mail commands in clear" if clear else "no mail command in clear"
    return [Mismatch("in_clear", str(x.in_clear).lower(), seen, _sessions_text(sc.sessions))]


def _fetches(x: Expect, sc: _Scope) -> list[Mismatch]:
    fetches = [f for o in sc.obs for f in o.world.fetches]
    shown = tuple(f"{f.method} https://{f.host}{f.path} SNI={f.sni} -> {f.answer}" for f in fetches)
    if isinstance(x.fetches, int):
        if len(fetches) == x.fetches:
            return []
        return [Mismatch("fetches", str(x.fetches), f"{len(fetches)} requests", shown)]
    out = []
    for host, n in (x.fetches or {}).items():
        got = sum(f.host == host for f in fetches)
        if got != n:
            out.append(Mismatch(f"fetches.{host}", str(n), f"{got} requests", shown))
    return out


def _queries(x: Expect, sc: _Scope) -> list[Mismatch]:
    dns = [q for o in sc.obs for q in o.world.dns]
    out = []
    for key, n in x.queries.items():
        name, _, qtype = key.partition(" ")
        got = [q for q in dns if q.name == name and (not qtype or q.type == qtype)]
        if len(got) != n:
            near = tuple(f"{q.name} {q.type} -> {q.rcode}" for q in dns if q.name == name)
            out.append(Mismatch(f"queries.{key!r}", str(n), f"{len(got)} queries", near))
    return out


def _events(x: Expect, sc: _Scope) -> list[Mismatch]:
    events, pos = sc.events, 0
    for n, p in enumerate(x.events):
        hit = next((i for i in range(pos, len(events)) if _matches(p, events[i])), None)
        if hit is not None:
            pos = hit + 1
            continue
        earlier = next((i for i in range(pos) if _matches(p, events[i])), None)
        after = f"after #{pos - 1} {events[pos - 1].code}" if pos else "in this scope"
        seen = f"no matching event {after}"
        if earlier is not None:
            seen += f" (one matched earlier, out of order: #{earlier})"
        return [Mismatch(f"events[{n}]", p.describe(), seen, tuple(closest_events(p, events)))]
    return []


def _no_events(x: Expect, sc: _Scope) -> list[Mismatch]:
    events = sc.events
    out = []
    for n, p in enumerate(x.no_events):
        hits = [i for i, e in enumerate(events) if _matches(p, e)]
        if hits:
            shown = tuple(_show(events[i], i) for i in hits[:5])
            out.append(Mismatch(f"no_events[{n}]", f"no {p.describe()}", "it happened", shown))
    return out


def _logs(x: Expect, sc: _Scope) -> list[Mismatch]:
    lines, pos = [ln for o in sc.obs for ln in o.lines], 0
    for n, rx in enumerate(x.logs):
        hit = next((i for i in range(pos, len(lines)) if re.search(rx, lines[i])), None)
        if hit is not None:
            pos = hit + 1
            continue
        plain = re.sub(r"\\(.)", r"\1", rx)
        scored = sorted(
            range(len(lines)),
            key=lambda i: -difflib.SequenceMatcher(None, plain, lines[i]).ratio(),
        )
        near = tuple(f"#{i} {lines[i]}" for i in sorted(scored[:3]))
        after = f"after line #{pos - 1}" if pos else "in this scope"
        return [Mismatch(f"logs[{n}]", repr(rx), f"no matching line {after}", near)]
    return []


def _sni(x: Expect, sc: _Scope) -> list[Mismatch]:
    if isinstance(x.sni, str):
        got = sorted({str(s.sni) for s in sc.delivering()})
        if got == [x.sni]:
            return []
        seen = ", ".join(got) or "no delivering session"
        return [Mismatch("sni", x.sni, seen, _sessions_text(sc.sessions))]
    out = []
    for host, want in (x.sni or {}).items():
        got = sorted({str(s.sni) for s in sc.sessions if s.mx == host and s.starttls_attempted})
        if got != [want]:
            seen = ", ".join(got) or f"no STARTTLS at {host}"
            out.append(Mismatch(f"sni.{host}", want, seen, _sessions_text(sc.sessions)))
    return out


# -- TLS reports and DSNs ----------------------------------------------------------------


def _policy_entries(r: ReportRecord) -> list[Mapping[str, Any]]:
    policies = (r.report or {}).get("policies")
    return [p for p in policies if isinstance(p, Mapping)] if isinstance(policies, list) else []


def _entry_misses(p: ReportPattern, r: ReportRecord, entry: Mapping[str, Any]) -> list[str]:
    """The pattern's attributes one (report, policies entry) pair does not satisfy."""
    pol = entry.get("policy") or {}
    summary = entry.get("summary") or {}
    details = [d for d in entry.get("failure-details") or [] if isinstance(d, Mapping)]
    checks: list[tuple[str, Any, Any]] = [
        ("via", p.via, r.via),
        ("to", p.to, r.to),
        ("content_type", p.content_type, r.content_type),
        ("policy_domain", p.policy_domain, pol.get("policy-domain")),
        ("policy_type", p.policy_type, pol.get("policy-type")),
        ("success", p.success, summary.get("total-successful-session-count")),
        ("failure", p.failure, summary.get("total-failure-session-count")),
        ("policy_string", p.policy_string, pol.get("policy-string", [])),
        ("mx_host", p.mx_host, pol.get("mx-host", [])),
        ("policies", p.policies, len(_policy_entries(r))),
    ]
    if p.result_types is not None:
        types = sorted({str(d.get("result-type")) for d in details})
        checks.append(("result_types", list(p.result_types), types))
    out = [
        f"{name}={got!r}"
        for name, want, got in checks
        if want is not None and not field_matches(want, got)
    ]
    if p.failure_reason_code is not None:
        codes = [d.get("failure-reason-code") for d in details]
        if not any(field_matches(p.failure_reason_code, c) for c in codes):
            out.append(f"failure_reason_code in {codes!r}")
    for name, want in p.fields.items():
        got = lookup(r.report or {}, name)
        if not field_matches(want, got):
            out.append(f"fields.{name}={'<absent>' if got is _MISSING else repr(got)}")
    for name, want in p.mail.items():
        got = lookup(r.mail, name) if r.via == "mailto" else _MISSING
        if not field_matches(want, got):
            out.append(f"mail.{name}={'<absent>' if got is _MISSING else repr(got)}")
    return out


def _report_text(r: ReportRecord) -> str:
    what = f"{r.via} to {r.to}" + (f" (HTTP {r.status})" if r.status is not None else "")
    if r.report is None:
        return f"{what}: undecodable: {r.error}"
    rows = []
    for e in _policy_entries(r):
        pol, summ = e.get("policy") or {}, e.get("summary") or {}
        types = sorted({str(d.get("result-type")) for d in e.get("failure-details") or []})
        rows.append(
            f"{pol.get('policy-type')} {pol.get('policy-domain')} "
            f"{summ.get('total-successful-session-count')}/"
            f"{summ.get('total-failure-session-count')} {types}"
        )
    return f"{what}: " + ("; ".join(rows) or "no policies")


def _reports(x: Expect, sc: _Scope) -> list[Mismatch]:
    reports, out = sc.reports, []
    for n, p in enumerate(x.reports):
        best: tuple[int, str] | None = None
        for r in reports:
            for entry in _policy_entries(r):
                misses = _entry_misses(p, r, entry)
                if not misses:
                    break
                if best is None or len(misses) < best[0]:
                    best = (len(misses), ", ".join(misses))
            else:
                continue
            break
        else:
            seen = f"no matching policies entry in {len(reports)} report(s)"
            if best is not None:
                seen += f"; nearest differs in {best[1]}"
            shown = tuple(_report_text(r) for r in reports[:8])
            out.append(Mismatch(f"reports[{n}]", p.describe(), seen, shown))
    return out


def _no_reports(x: Expect, sc: _Scope) -> list[Mismatch]:
    reports = sc.reports
    if bool(reports) != bool(x.no_reports):
        return []
    if x.no_reports:
        shown = tuple(_report_text(r) for r in reports[:8])
        return [Mismatch("no_reports", "no TLS report", f"{len(reports)} report(s)", shown)]
    return [Mismatch("no_reports", "some TLS report", "no report arrived")]


def _dsn_matches(p: DsnPattern, d: DsnRecord) -> bool:
    if p.to not in d.to:
        return False
    return any(
        b.get("action", "").lower() == p.action
        and (p.status is None or field_matches(p.status, b.get("status", "")))
        and (p.rcpt is None or b.get("final-recipient") == p.rcpt)
        for b in d.blocks
    )


def _dsn(x: Expect, sc: _Scope) -> list[Mismatch]:
    assert x.dsn is not None
    dsns = sc.dsns
    if any(_dsn_matches(x.dsn, d) for d in dsns):
        return []
    shown = tuple(
        f"{d.mx}: <{d.mail_from}> -> {', '.join(d.to)}: "
        + "; ".join(
            f"{b.get('action')} {b.get('status')} {b.get('final-recipient')}" for b in d.blocks
        )
        for d in dsns
    )
    return [Mismatch("dsn", x.dsn.describe(), f"{len(dsns)} DSN(s), none matching", shown)]


_CHECKS: tuple[tuple[str, Callable[[Expect, _Scope], list[Mismatch]]], ...] = (
    ("outcome", _outcome),
    ("via", _via),
    ("tls", _tls),
    ("verified", _verified),
    ("no_transaction", _no_transaction),
    ("in_clear", _in_clear),
    ("fetches", _fetches),
    ("queries", _queries),
    ("events", _events),
    ("no_events", _no_events),
    ("logs", _logs),
    ("sni", _sni),
    ("reports", _reports),
    ("no_reports", _no_reports),
    ("dsn", _dsn),
    ("faults", _faults),
)
_EMPTY: tuple[Any, ...] = ((), {})


def check(expect: Expect, observations: Sequence[StepObservation]) -> list[Mismatch]:
    """Every way ``expect`` fails over ``observations`` (empty: it holds).

    Args:
        expect: the expectation.
        observations: the steps it is about, in order.
    """
    scope = _Scope(observations)
    out: list[Mismatch] = []
    for key, fn in _CHECKS:
        value = getattr(expect, key)
        if value is not None and value not in _EMPTY:
            out += fn(expect, scope)
    return out
