"""Every fault on one MX ends that MX only: the one boundary of ``engine/delivery/attempt.py``.

Issue 12 (part 3). The defect that started it: after a failed STARTTLS handshake on
uvloop, ``quit()`` wrote to the transport ``start_tls`` had closed, uvloop raised
``RuntimeError`` (the standard loop does not), nothing expected it, and the whole
delivery was deferred without trying the next MX. So every test here runs on both
loops, through :func:`engine.eventloop.run`, the way the engine's commands run.

Real sockets to the simulated world's MTAs carry every session. The "any exception
class at any stage" matrix injects the exception at the stream port the SMTP client
writes to and reads from (:class:`FaultyDialer`), so the real client, session and
boundary run around it; the DNS side injects at the resolver (:class:`FaultyResolver`).
For each fault the tests check what the issue asks: one line names the reason, the
next permitted MX gets the message in the same attempt (never in clear under
``enforce``), every recipient has an outcome, and no traceback reaches the log.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from engine import eventloop
from engine.delivery.agent import DeliveryReport, Outgoing
from engine.io.dialer import Dialer
from engine.io.smtp import SmtpClient, SmtpError, SmtpTimeouts, no_verify_context
from engine.logs import render_text
from harness.run.single import run_scenario_async
from harness.scenario.loader import load_scenario
from harness.world import SessionEnd
from tests.integration.sim import (
    MESSAGE,
    SENDER,
    Simulation,
    assert_no_mail_anywhere,
    simulation,
    sts_world,
)

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
MX1, MX2 = "mx1.example.com", "mx2.example.com"
RCPTS = ["a@example.com", "b@example.com"]


class Boom(Exception):
    """An exception class no code in the engine has heard of."""


EXCEPTIONS: dict[str, Callable[[str], BaseException]] = {
    "Boom": Boom,
    "RuntimeError": RuntimeError,
    "OSError": OSError,
    "SSLError": ssl.SSLError,
    "ValueError": ValueError,
}

#: Stages before the message is through: the next MX must get it in the same attempt.
BEFORE_DELIVERY = (
    "connect",
    "greeting",
    "ehlo",
    "starttls",
    "tls handshake",
    "ehlo after starttls",
    "mail",
    "rcpt",
    "data",
    "end of data",
)
#: Stages after mx1 took the message: it stays delivered there, the fault at most Debug.
AFTER_DELIVERY = ("quit", "close", "wait_closed")


def run(loop: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """``main()`` on a fresh event loop of kind ``loop`` (as the engine's commands run)."""
    return eventloop.run(main(), loop=loop)  # type: ignore[arg-type]


# --- fault injection at the SMTP client's stream port --------------------------------------


class Fault:
    """Raise exceptions at stages of the first SMTP connection, each once.

    ``plan`` maps a stage (``"rcpt"``), or its n-th occurrence (``"rcpt#2"``), to the
    exception to raise there.
    """

    def __init__(self, plan: dict[str, BaseException]) -> None:
        self.plan = dict(plan)
        self.fired: list[str] = []
        self.seen: dict[str, int] = {}
        self.tls_done = False

    def hit(self, stage: str) -> None:
        self.seen[stage] = self.seen.get(stage, 0) + 1
        for key in (f"{stage}#{self.seen[stage]}", stage if self.seen[stage] == 1 else ""):
            if key in self.plan:
                self.fired.append(key)
                raise self.plan.pop(key)

    def on_write(self, data: bytes) -> None:
        head = data[:16].upper()
        if head.startswith(b"EHLO"):
            self.hit("ehlo after starttls" if self.tls_done else "ehlo")
        elif head.startswith(b"STARTTLS"):
            self.hit("starttls")
        elif head.startswith(b"MAIL FROM"):
            self.hit("mail")
        elif head.startswith(b"RCPT TO"):
            self.hit("rcpt")
        elif head == b"DATA\r\n":
            self.hit("data")
        elif head.startswith(b"QUIT"):
            self.hit("quit")
        elif data.endswith(b"\r\n.\r\n"):
            self.hit("end of data")


class _Reader:
    def __init__(self, inner: asyncio.StreamReader, fault: Fault) -> None:
        self._inner, self._fault = inner, fault

    async def readline(self) -> bytes:
        self._fault.hit("greeting")
        return await self._inner.readline()


class _Writer:
    def __init__(self, inner: asyncio.StreamWriter, fault: Fault) -> None:
        self._inner, self._fault = inner, fault

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self._inner.transport

    def write(self, data: bytes) -> None:
        self._fault.on_write(data)
        self._inner.write(data)

    async def drain(self) -> None:
        await self._inner.drain()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    async def start_tls(self, *args: Any, **kwargs: Any) -> None:
        self._fault.hit("tls handshake")
        await self._inner.start_tls(*args, **kwargs)
        self._fault.tls_done = True

    def close(self) -> None:
        self._fault.hit("close")
        self._inner.close()

    async def wait_closed(self) -> None:
        self._fault.hit("wait_closed")
        await self._inner.wait_closed()


@dataclass(slots=True)
class FaultyDialer(Dialer):
    """The world's dialer; the first SMTP connection carries :attr:`fault`."""

    fault: Fault | None = None
    smtp_connections: int = 0

    async def open_connection(  # type: ignore[override]
        self, host: str, port: int, *, timeout: float, **kwargs: Any
    ) -> tuple[Any, Any]:
        first = port == 25 and self.smtp_connections == 0
        if port == 25:
            self.smtp_connections += 1
        if first and self.fault is not None:
            self.fault.hit("connect")
        reader, writer = await Dialer.open_connection(self, host, port, timeout=timeout, **kwargs)
        if not first or self.fault is None:
            return reader, writer
        return _Reader(reader, self.fault), _Writer(writer, self.fault)


def inject(sim: Simulation, plan: dict[str, BaseException]) -> Fault:
    """Fault the first SMTP connection of ``sim`` (``plan``: stage -> exception)."""
    fault = Fault(plan)
    old = sim.engine.services.dialer
    sim.engine.services.dialer = FaultyDialer(
        endpoint_map=old.endpoint_map, loopback_only=True, fault=fault
    )
    return fault


# --- fault injection at the resolver --------------------------------------------------------


class FaultyResolver:
    """The world's resolver, except that one (name, type) query raises ``exc``."""

    def __init__(self, inner: Any, name: str, rdtype: str, exc: BaseException) -> None:
        self._inner, self._key, self._exc = inner, (name, rdtype), exc

    async def query(self, name: str, rdtype: str, *args: Any, **kwargs: Any) -> Any:
        if (name.rstrip(".").lower(), rdtype) == self._key:
            raise self._exc
        return await self._inner.query(name, rdtype, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


# --- what the tests check ----------------------------------------------------------------------


def two_mx(**mx1: Any) -> dict[str, Any]:
    """W-STS under ``enforce``: mx1 (changed by ``mx1``) and a healthy mx2."""
    return sts_world(hosts={MX1: mx1} if mx1 else None)


async def send(sim: Simulation) -> DeliveryReport:
    report = await sim.engine.deliver(SENDER, list(RCPTS), MESSAGE)
    await sim.world.settle(6.0)
    sim.reports.append(report)
    return report


def lines_with(sim: Simulation, marker: str, level: str = "info") -> list[str]:
    return [line for line in sim.lines(level) if marker in line]


def assert_no_traceback(sim: Simulation) -> None:
    for line in sim.lines("debug"):
        assert "Traceback" not in line and 'File "' not in line, line


def assert_next_mx_took_it(sim: Simulation, report: DeliveryReport, marker: str) -> None:
    """One line for mx1's fault; mx2 has the message, over TLS; every recipient is done."""
    debug = "\n".join(sim.lines("debug"))
    assert [r.status for r in report.recipients] == ["delivered"] * len(RCPTS), debug
    assert {r.mx for r in report.recipients} == {MX2}, report
    got = sim.world.messages()
    assert [(m.mx_host, m.in_clear) for m in got] == [(MX2, False)], got
    assert not [s for s in sim.world.sessions(MX1) if s.transactions and s.in_clear]
    found = lines_with(sim, marker)
    assert len(found) == 1, f"lines naming the fault: {found}\n{debug}"
    (mx2_connect,) = [e for e in sim.codes("smtp.connect") if e.fields["mx"] == MX2]
    (event,) = [e for e in sim.events if e.level != "debug" and marker in render_text(e)]
    assert event.fields.get("dcid") != mx2_connect.fields["dcid"], event
    assert event.fields.get("mx", MX1) == MX1, event
    assert_no_traceback(sim)


# --- the defect itself: a failed handshake on uvloop, then QUIT -------------------------------

#: The catalog scenarios that failed against the process on uvloop (issue 12).
UVLOOP_FIVE = (
    "scenarios/cert/starttls-broken-close.toml",
    "scenarios/cert/starttls-broken-garbage.toml",
    "scenarios/cert/tls-1.0-only.toml",
    "scenarios/cert/tls-1.1-only.toml",
    "scenarios/seed/seed-sts-tls-1.2.toml",
)


@LOOPS
@pytest.mark.parametrize("path", UVLOOP_FIVE, ids=lambda p: p.rsplit("/", 1)[1][:-5])
def test_broken_handshake_scenarios_pass_on_either_loop(loop: str, path: str) -> None:
    result = eventloop.run(run_scenario_async(load_scenario(path)), loop=loop)
    assert result.verdict == "passed", result.reason


@LOOPS
@pytest.mark.parametrize(
    "mx1",
    [{"starttls": "broken-close"}, {"starttls": "broken-garbage"}, {"tls_max": "1.0"}],
    ids=["broken-close", "broken-garbage", "tls-1.0"],
)
def test_a_failed_handshake_goes_on_to_the_next_mx(loop: str, mx1: dict[str, Any]) -> None:
    async def main() -> None:
        async with simulation(two_mx(**mx1), mta_sts=True) as sim:
            report = await send(sim)
            assert report.status == "delivered", "\n".join(sim.lines("debug"))
            assert {r.mx for r in report.recipients} == {MX2}
            assert [m.mx_host for m in sim.world.messages()] == [MX2]
            (failed,) = sim.codes("tls.failed")
            assert failed.fields["mx"] == MX1
            assert not sim.codes("smtp.connect.error", "smtp.close.error")
            assert_no_traceback(sim)

    run(loop, main)


# --- any exception class, at any stage --------------------------------------------------------


@LOOPS
@pytest.mark.parametrize("exc_name", list(EXCEPTIONS))
@pytest.mark.parametrize("stage", BEFORE_DELIVERY)
def test_a_fault_at_any_stage_ends_that_mx_only(loop: str, stage: str, exc_name: str) -> None:
    marker = f"injected-{exc_name}-at-{stage.replace(' ', '-')}"

    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            fault = inject(sim, {stage: EXCEPTIONS[exc_name](marker)})
            report = await send(sim)
            assert fault.fired == [stage], f"the {stage} fault never fired"
            assert_next_mx_took_it(sim, report, marker)
            if stage != "connect":
                # After a fault the session state is unknown: closed without QUIT.
                (session,) = sim.world.sessions(MX1)
                assert session.ended is not SessionEnd.QUIT, session

    run(loop, main)


@LOOPS
@pytest.mark.parametrize("exc_name", list(EXCEPTIONS))
@pytest.mark.parametrize("stage", AFTER_DELIVERY)
def test_a_fault_while_closing_never_fails_the_delivery(
    loop: str, stage: str, exc_name: str
) -> None:
    marker = f"injected-{exc_name}-at-{stage}"

    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            fault = inject(sim, {stage: EXCEPTIONS[exc_name](marker)})
            report = await send(sim)
            assert fault.fired == [stage], f"the {stage} fault never fired"
            assert [r.status for r in report.recipients] == ["delivered"] * len(RCPTS)
            assert {r.mx for r in report.recipients} == {MX1}
            assert [m.mx_host for m in sim.world.messages()] == [MX1]
            assert lines_with(sim, marker) == []  # not an Info line: Debug at most
            assert len(lines_with(sim, marker, "debug")) <= 1
            assert len(sim.codes("smtp.close")) == 1
            assert_no_traceback(sim)

    run(loop, main)


#: Contexts where mx1's STARTTLS breaks: (world, simulation keywords, how mx2 verifies).
STRICT_CONTEXTS = {
    "enforce": (two_mx(), {"mta_sts": True}, "pkix"),
    "required": (sts_world(policy=None, txt=None), {"tls": "required"}, "none"),
    "dane-mandatory": (
        sts_world(
            policy=None,
            txt=None,
            dnssec="secure",
            hosts={h: {"cert": "self-signed", "tlsa": [[3, 1, 1]]} for h in (MX1, MX2)},
        ),
        {"dane": "mandatory"},
        "dane",
    ),
    "preferred": (sts_world(policy=None, txt=None), {}, "none"),
}


@LOOPS
@pytest.mark.parametrize("context", list(STRICT_CONTEXTS))
@pytest.mark.parametrize("stage", ["starttls", "tls handshake"])
def test_a_starttls_fault_never_leads_to_clear_text(loop: str, context: str, stage: str) -> None:
    # A fault is no refusal: even Preferred, which would go on in clear after a 4yz/5yz
    # to STARTTLS, does not reconnect in clear on a fault; mx2 gets it over TLS.
    world, keywords, verified = STRICT_CONTEXTS[context]

    async def main() -> None:
        async with simulation(world, **keywords) as sim:
            inject(sim, {stage: RuntimeError("tls-fault")})
            report = await send(sim)
            assert {(r.status, r.mx, r.verified) for r in report.recipients} == {
                ("delivered", MX2, verified)
            }
            assert [s.in_clear for s in sim.world.sessions()] == [False, False]
            assert [(m.mx_host, m.in_clear) for m in sim.world.messages()] == [(MX2, False)]

    run(loop, main)


@LOOPS
@pytest.mark.parametrize("close_stage", AFTER_DELIVERY)
def test_a_close_fault_after_a_fault_keeps_the_first_reason(loop: str, close_stage: str) -> None:
    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            plan = {"rcpt": Boom("first-fault"), close_stage: RuntimeError("second-fault")}
            fault = inject(sim, plan)
            report = await send(sim)
            assert_next_mx_took_it(sim, report, "first-fault")
            # No QUIT follows a fault, so a QUIT fault cannot fire; a close fault is Debug.
            assert fault.fired == ["rcpt"] + ([] if close_stage == "quit" else [close_stage])
            assert lines_with(sim, "second-fault") == []
            assert len(lines_with(sim, "second-fault", "debug")) == len(fault.fired) - 1

    run(loop, main)


# --- the reason a deferral carries --------------------------------------------------------


@LOOPS
@pytest.mark.parametrize(
    ("stage", "result_type"),
    [("starttls", "validation-failure"), ("tls handshake", "validation-failure"), ("rcpt", None)],
)
def test_the_only_mx_fails_the_reason_and_result_type_reach_the_delayed_line(
    loop: str, stage: str, result_type: str | None
) -> None:
    marker = f"lone-mx-{stage.replace(' ', '-')}"

    async def main() -> None:
        world = sts_world(mx=[(10, MX1)])
        async with simulation(world, mta_sts=True) as sim:
            inject(sim, {stage: Boom(marker)})
            report = await send(sim)
            assert [r.status for r in report.recipients] == ["deferred"] * len(RCPTS)
            assert {r.result_type for r in report.recipients} == {result_type}
            assert all(marker in r.reason and "Boom" in r.reason for r in report.recipients)
            delayed = sim.codes("delivery.delayed")
            assert len(delayed) == len(RCPTS)
            assert {e.fields["result_type"] for e in delayed} == {result_type}
            (error,) = sim.codes("smtp.connect.error")
            assert error.fields["category"] == "internal error"
            # RFC 8460 §4.3.1: a fault while TLS is negotiated is a failed session for
            # TLS-RPT; one in the mail transaction is no TLS failure.
            failed = [
                e
                for e in sim.codes("tls.session")
                if not e.fields["success"] and e.fields["outcome"] == "defer"
            ]
            if result_type is None:
                assert failed == []
            else:
                (session,) = failed
                assert session.fields["failures"][0]["result_type"] == result_type
            assert not sim.world.messages()
            assert_no_traceback(sim)

    run(loop, main)


@LOOPS
def test_a_fault_mid_batch_keeps_what_the_connection_delivered(loop: str) -> None:
    # Two messages on one connection: the first is delivered at mx1, the second's RCPT
    # breaks. The first stays delivered (never sent twice); the second goes to mx2.
    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            inject(sim, {"rcpt#2": Boom("second-message")})
            first, second = (
                Outgoing(mid, SENDER, (rcpt,), MESSAGE, (0,))
                for mid, rcpt in ((1, "a@example.com"), (2, "b@example.com"))
            )
            reports = await sim.engine.deliver_many([first, second])
            await sim.world.settle(6.0)
            assert [(r.mid, r.status, r.recipients[0].mx) for r in reports] == [
                (1, "delivered", MX1),
                (2, "delivered", MX2),
            ]
            got = sorted((m.mx_host, m.rcpt_to) for m in sim.world.messages())
            assert got == [(MX1, ("a@example.com",)), (MX2, ("b@example.com",))]
            assert len(lines_with(sim, "second-message")) == 1

    run(loop, main)


@LOOPS
def test_a_fault_while_judging_tls_is_one_failed_session_for_tls_rpt(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No socket matters here: the core's judge raises on the first connection only.
    import engine.delivery.session

    real, calls = engine.delivery.session.judge, []

    def judge_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["mx_host"])
        if len(calls) == 1:
            raise Boom("judge-broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.delivery.session, "judge", judge_once)

    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            report = await send(sim)
            assert_next_mx_took_it(sim, report, "judge-broke")
            mx1 = [e for e in sim.codes("tls.session") if e.fields["mx"] == MX1]
            assert [(e.fields["success"], e.fields["failures"][0]["result_type"]) for e in mx1] == [
                (False, "validation-failure")
            ]
            assert "verdict: Boom: judge-broke" in mx1[0].fields["failures"][0]["reason_code"]

    run(loop, main)


# --- a transient refusal is no outcome while another MX is left ---------------------------


@LOOPS
@pytest.mark.parametrize("stage", ["mail", "rcpt", "data_start", "data"])
def test_a_transient_refusal_sends_the_message_to_the_next_mx(loop: str, stage: str) -> None:
    # RFC 5321 §5.1: try each relevant address "until a delivery attempt succeeds".
    async def main() -> None:
        async with simulation(two_mx(replies={stage: "451 4.3.0 try later"}), mta_sts=True) as sim:
            report = await send(sim)
            assert {(r.status, r.mx) for r in report.recipients} == {("delivered", MX2)}
            got = sim.world.messages()
            assert [(m.mx_host, m.in_clear, m.rcpt_to) for m in got] == [(MX2, False, tuple(RCPTS))]
            assert not sim.codes("delivery.delayed", "delivery.bounced")

    run(loop, main)


@LOOPS
def test_a_transient_refusal_by_the_last_mx_is_the_deferral_reason(loop: str) -> None:
    async def main() -> None:
        world = sts_world(mx=[(10, MX1)], hosts={MX1: {"replies": {"rcpt": "450 4.2.1 busy"}}})
        async with simulation(world, mta_sts=True) as sim:
            report = await send(sim)
            assert {(r.status, r.reply) for r in report.recipients} == {
                ("deferred", "450 4.2.1 busy")
            }
            delayed = sim.codes("delivery.delayed")
            assert [(e.fields["code"], e.fields["enhanced"]) for e in delayed] == [
                ("450", "4.2.1")
            ] * len(RCPTS)

    run(loop, main)


@LOOPS
def test_a_permanent_refusal_bounces_without_trying_the_next_mx(loop: str) -> None:
    async def main() -> None:
        async with simulation(
            two_mx(replies={"rcpt": "550 5.1.1 no such user"}), mta_sts=True
        ) as sim:
            report = await send(sim)
            assert {(r.status, r.mx) for r in report.recipients} == {("bounced", MX1)}
            assert sim.world.sessions(MX2) == []

    run(loop, main)


# --- the adapter never writes to a closed transport ---------------------------------------


@LOOPS
def test_no_command_is_written_after_a_failed_handshake(loop: str) -> None:
    # The root cause on uvloop: start_tls closes the transport when the handshake fails,
    # and uvloop raises RuntimeError for a write to a closed transport.
    async def main() -> None:
        world = sts_world(mx=[(10, MX1)], hosts={MX1: {"starttls": "broken-close"}})
        async with simulation(world) as sim:
            (address,) = [a for (a, port) in sim.world.endpoint_map if port == 25]
            client = await SmtpClient.open(
                sim.engine.services.dialer,
                address,
                25,
                timeouts=SmtpTimeouts.uniform(2.0),
                local_hostname="test.invalid",
            )
            await client.ehlo()
            tls = await client.starttls(no_verify_context(), MX1)
            assert (tls.reached_220, tls.ok) == (True, False)
            with pytest.raises(SmtpError, match="connection already closed"):
                await client.command("NOOP", "noop")
            await client.quit()  # no write, no exception

    run(loop, main)


# --- what must not be contained -------------------------------------------------------------


@LOOPS
@pytest.mark.parametrize("exc", [asyncio.CancelledError, KeyboardInterrupt, SystemExit])
def test_cancellation_and_exit_go_through_the_boundary(loop: str, exc: type) -> None:
    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            inject(sim, {"rcpt": exc()})
            with pytest.raises(exc):
                await sim.engine.deliver(SENDER, list(RCPTS), MESSAGE)
            assert not sim.codes("smtp.connect.error", "delivery.delayed")
            assert [e.fields["mx"] for e in sim.codes("smtp.connect")] == [MX1]
            await sim.world.settle(6.0)
            assert not sim.world.messages()
            (session,) = sim.world.sessions(MX1)
            assert session.ended is SessionEnd.CLIENT_DROP  # dropped, not left open

    run(loop, main)


@LOOPS
def test_a_cancelled_delivery_drops_the_connection_and_stops(loop: str) -> None:
    # mx1 stalls after RCPT; the delivery task is cancelled while it waits for the reply.
    async def main() -> None:
        async with simulation(two_mx(replies={"rcpt": "stall"}), mta_sts=True) as sim:
            rcpt_sent = asyncio.Event()
            fault = inject(sim, {})
            original = fault.on_write

            def note_rcpt(data: bytes) -> None:
                original(data)
                if data.upper().startswith(b"RCPT TO"):
                    rcpt_sent.set()

            fault.on_write = note_rcpt  # type: ignore[method-assign]
            task = asyncio.create_task(sim.engine.deliver(SENDER, list(RCPTS), MESSAGE))
            await rcpt_sent.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sim.world.settle(6.0)
            (session,) = sim.world.sessions(MX1)
            assert session.ended is SessionEnd.CLIENT_DROP
            assert sim.world.sessions(MX2) == []
            assert not sim.codes("smtp.connect.error", "delivery.delayed")

    run(loop, main)


# --- the DNS side: one MX's address or TLSA lookup, the domain's own lookups ---------------


@LOOPS
@pytest.mark.parametrize("exc_name", ["Boom", "RuntimeError", "OSError"])
def test_an_address_lookup_fault_ends_that_mx_only(loop: str, exc_name: str) -> None:
    marker = f"address-lookup-{exc_name}"

    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            inner = sim.engine.services.resolver
            sim.engine.services.resolver = FaultyResolver(  # type: ignore[assignment]
                inner, MX1, "A", EXCEPTIONS[exc_name](marker)
            )
            report = await send(sim)
            assert {(r.status, r.mx) for r in report.recipients} == {("delivered", MX2)}
            (skipped,) = [e for e in sim.codes("delivery.host.skipped") if marker in str(e.fields)]
            assert skipped.fields["mx"] == MX1
            assert skipped.fields["detail"].startswith(f"address lookup: {exc_name}: ")
            assert len(lines_with(sim, marker)) == 1
            assert [m.mx_host for m in sim.world.messages()] == [MX2]
            assert sim.world.sessions(MX1) == []
            assert_no_traceback(sim)

    run(loop, main)


def dane_two_mx() -> dict[str, Any]:
    """W-DANE with two MX hosts: both self-signed with a matching TLSA 3 1 1."""
    host = {"cert": "self-signed", "tlsa": [[3, 1, 1]]}
    return sts_world(policy=None, txt=None, hosts={MX1: host, MX2: host}, dnssec="secure")


@LOOPS
@pytest.mark.parametrize("dane", ["opportunistic", "mandatory"])
def test_a_tlsa_lookup_fault_never_leads_to_that_mx(loop: str, dane: str) -> None:
    # RFC 7672 §2.2 / DANE-5: a TLSA lookup that fails, in whatever way, leaves the host
    # unusable: no connection to it at all, so certainly nothing in clear.
    async def main() -> None:
        async with simulation(dane_two_mx(), dane=dane) as sim:
            inner = sim.engine.services.resolver
            sim.engine.services.resolver = FaultyResolver(  # type: ignore[assignment]
                inner, f"_25._tcp.{MX1}", "TLSA", Boom("tlsa-fault")
            )
            report = await send(sim)
            assert {(r.status, r.mx, r.verified) for r in report.recipients} == {
                ("delivered", MX2, "dane")
            }
            (skipped,) = [e for e in sim.codes("delivery.host.skipped") if e.fields["mx"] == MX1]
            assert skipped.fields["result_type"] == "dnssec-invalid"
            assert "tlsa lookup: Boom: tlsa-fault" in skipped.fields["detail"]
            assert sim.world.sessions(MX1) == []
            assert len(lines_with(sim, "tlsa-fault")) == 1

    run(loop, main)


@LOOPS
def test_a_tlsa_lookup_fault_on_the_only_mx_defers_without_sending(loop: str) -> None:
    async def main() -> None:
        world = sts_world(
            policy=None,
            txt=None,
            mx=[(10, MX1)],
            hosts={MX1: {"cert": "self-signed", "tlsa": [[3, 1, 1]]}},
            dnssec="secure",
        )
        async with simulation(world, tls="preferred", dane="opportunistic") as sim:
            inner = sim.engine.services.resolver
            sim.engine.services.resolver = FaultyResolver(  # type: ignore[assignment]
                inner, f"_25._tcp.{MX1}", "TLSA", RuntimeError("tlsa-broke")
            )
            report = await send(sim)
            assert {(r.status, r.result_type) for r in report.recipients} == {
                ("deferred", "dnssec-invalid")
            }
            assert all("tlsa-broke" in r.reason for r in report.recipients)
            assert sim.world.sessions() == []
            assert_no_mail_anywhere(sim.world)

    run(loop, main)


@LOOPS
@pytest.mark.parametrize(
    ("name", "rdtype", "stage"),
    [("_mta-sts.example.com", "TXT", "policy discovery"), ("example.com", "MX", "mx lookup")],
)
def test_a_fault_in_the_domains_own_lookups_defers_every_recipient(
    loop: str, name: str, rdtype: str, stage: str
) -> None:
    async def main() -> None:
        async with simulation(two_mx(), mta_sts=True) as sim:
            inner = sim.engine.services.resolver
            sim.engine.services.resolver = FaultyResolver(  # type: ignore[assignment]
                inner, name, rdtype, Boom("domain-fault")
            )
            report = await send(sim)
            assert [r.status for r in report.recipients] == ["deferred"] * len(RCPTS)
            assert {r.reason for r in report.recipients} == {f"{stage}: Boom: domain-fault"}
            assert len(sim.codes("delivery.delayed")) == len(RCPTS)
            assert sim.world.sessions() == []
            assert_no_traceback(sim)

    run(loop, main)
