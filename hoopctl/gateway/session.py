"""One caller's session after login: the hot path between a client and its database.

Both directions are asyncio Protocols (no streams, no tasks per message):

- client -> database: every message is decoded (they are small), checked by the
  session's policy, recorded, then its original bytes are forwarded. A refused
  message is replaced by one that fails harmlessly upstream (a syntax error, or a
  Describe of a statement that cannot exist), so the database itself puts the
  transaction and the extended-protocol pipeline into exactly the state
  PostgreSQL would have for a failed statement; its error is then swapped for
  ours (SQLSTATE 42501) on the way back.
- database -> client: messages are cut by their length headers only and
  forwarded in bulk; RowDescription is decoded to plan masking (cached on its
  bytes), DataRows only when a masking plan applies. CommandComplete,
  ErrorResponse and ReadyForQuery close the statement records.

`_pending` is the FIFO of what the client asked that the gateway must match to
the database's answers, in order. It mirrors the backend's own state machine:
after an error in an extended-protocol message the database discards every
message up to the next Sync (simple Queries included), and while it reads COPY
data it ignores Syncs. Parse and Close change what a statement name runs only
when the database answers them (a skipped Parse changes nothing). An answer that
does not fit the head of `_pending` ends the session: the gateway never guesses
which statement rows belong to.

Masking a portal's rows needs its RowDescription: each Execute points at the
Describe (the client's, or one injected) whose answer plans them, and anything
that may close or re-declare a portal (Bind, Close, a Query, another portal's
Execute) forgets what an earlier Describe said about it. Rows with no known plan
are withheld.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.metrics import Durations
from hoopctl.gateway.pipeline import (
    BIND,
    CLOSE_PORTAL,
    LOST,
    SYNC,
    UNSET,
    WITHHOLD,
    Definition,
    Kind,
    Pending,
    Portal,
    Refused,
    error_message,
    params_for_record,
    refusal,
    rows_of,
)
from hoopctl.gateway.policy.classify import copies_out

log = logging.getLogger(__name__)

# A text that fails in the database's raw parser (no catalog access, no side effect).
REFUSED_SQL = "hoopctl refused this statement"
# A statement name no client may use: a Describe of it fails with 26000.
RESERVED_NAME = "__hoopctl_refused__"
FAIL_QUERY = pw.Query(REFUSED_SQL).encode()
FAIL_EXTENDED = pw.Describe("S", RESERVED_NAME).encode()
WRITE_HIGH = 256 * 1024
# Under masking, COPY TO STDOUT is refused before it runs (see _unmasked_copy_out).
COPY_OUT_RULE = "masking-copy-out"
COPY_OUT_REFUSED = "COPY TO STDOUT cannot be masked, so it is not run"
COPY_OUT_HINT = "select the rows instead: query results are masked"
BINARY_RULE = "masking-binary"  # refused before it runs: a covered column asked for in binary
FLUSH = pw.Flush().encode()
# Portals whose Describe answer is kept at once; a client describing more without executing
# them only costs itself injected Describes later.
MAX_DESCRIBED = 256

_D, _T, _C, _E, _Z, _N, _A, _S, _I, _s, _n = (ord(c) for c in "DTCEZNASIsn")
_Q, _p, _B, _P = ord("Q"), ord("p"), ord("B"), ord("P")
_G, _1, _2, _3 = ord("G"), ord("1"), ord("2"), ord("3")
# Both directions: CopyData/CopyDone; from the client CopyFail, Flush, Terminate; from the
# database CopyOutResponse ('H', as Flush) and CopyBothResponse.
_d, _c, _f, _H, _X, _W = ord("d"), ord("c"), ord("f"), ord("H"), ord("X"), ord("W")
# Error and notice fields that carry free text (message, detail, hint, context, internal query).
_TEXT_FIELDS = frozenset("MDHWq")

# What the database does with the client's next message (see `Session._mode`).
_NORMAL, _SKIP, _COPY = 0, 1, 2


@dataclass(frozen=True)
class CatalogMiss:
    """A masking plan needs table names the catalog has not fetched yet."""

    oids: frozenset[int]


@dataclass(frozen=True)
class SessionContext:
    """What a session needs from the gateway; `policy()` and `masking()` follow reloads."""

    resource: str
    credential: Any
    recording: Any
    policy: Callable[[], Any]  # -> SessionPolicy for this session's role (new object after a reload)
    masking: Callable[[], Any]  # -> MaskingRules or None
    plan_masking: Callable[[bytes], Any]  # RowDescription bytes -> RowMasker | None | CatalogMiss
    catalog: Any  # Catalog or None
    max_message_size: int
    access: Any = None  # AccessBroker: revocations, just-in-time grants, holds (None: no shared state)


class _Hold(Exception):
    """A refused statement whose role may be approved now: wait for the decision, then retry."""

    def __init__(self, sql: str, role: str) -> None:
        super().__init__(sql)
        self.sql, self.role = sql, role


# PostgreSQL keeps the first NAMEDATALEN-1 bytes of a statement or portal name, so two longer
# names can be one to it and two to the gateway (which judges them apart): longer ones end the
# connection, as no client sends them.
MAX_NAME = 63
NAME_TOO_LONG = f"statement and portal names are limited to {MAX_NAME} bytes"


def _check_names(*names: str) -> None:
    for name in names:
        if len(name) > MAX_NAME // 4 and len(name.encode()) > MAX_NAME:
            raise pw.ProtocolError(NAME_TOO_LONG)


class _AwaitDescription(Exception):
    """An Execute whose rows `binary: refuse` may refuse: its portal's description comes first."""

    def __init__(self, source: Pending) -> None:
        super().__init__(source.portal)
        self.source = source


class _ClientSide(asyncio.Protocol):
    def __init__(self, session: Session) -> None:
        self.s = session

    def data_received(self, data: bytes) -> None:
        self.s.from_client(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.client_lost()

    def pause_writing(self) -> None:
        self.s.client_full = True
        self.s.up.pause_reading()

    def resume_writing(self) -> None:
        self.s.client_full = False
        if not self.s.stalled:
            self.s.up.resume_reading()


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, session: Session) -> None:
        self.s = session

    def data_received(self, data: bytes) -> None:
        self.s.from_upstream(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.upstream_lost()

    def pause_writing(self) -> None:
        self.s.up_full = True
        self.s.client.pause_reading()

    def resume_writing(self) -> None:
        self.s.up_full = False
        if not self.s.held:  # a held statement (or one awaiting a description) keeps input waiting
            self.s.client.resume_reading()


class Session:
    """Relays one logged-in client to its upstream connection."""

    def __init__(
        self,
        ctx: SessionContext,
        parser: pw.FrontendParser,
        client: asyncio.Transport,
        up: asyncio.Transport,
        on_close: Callable[[Session], None],
    ) -> None:
        self.ctx = ctx
        self.parser = parser
        self.client = client
        self.up = up
        self.on_close = on_close
        self.recording = ctx.recording
        self.credential = ctx.credential
        self.policy = ctx.policy()
        self._take_masking()
        self._copy_out = False  # COPY TO STDOUT data being withheld (masking)
        self._policy_getter = ctx.policy
        self._pending: deque[Any] = deque()  # Pending, Definition, Marker
        self._mode = _NORMAL  # _SKIP: the database discards up to the next Sync; _COPY: it reads COPY data
        # Prepared statement name -> SQL (protocol level): what the database has (answered) and
        # what it will have once the Parses and Closes on their way are answered.
        self._confirmed: dict[str, str] = {}
        self._statements: dict[str, str] = {}
        self._definitions = 0  # Parses and Closes of statements on their way
        self._defined_since_sync: set[str] = set()
        self._portals: dict[str, Portal] = {}
        # Bumped when grants are lost or the policy reloaded: a portal bound before is judged
        # again at its Execute (a grant must not outlive its end in portals bound under it).
        self._grant_epoch = 0
        self._forgotten_epoch: int | None = None  # the oldest epoch a portal the gateway forgot may have
        self._described: dict[str, Pending] = {}  # portal -> the latest Describe of it
        self._access_note: Any = UNSET  # _sync_access() within one batch of client messages
        self._ubuf = bytearray()
        self._cbuf = bytearray()  # client bytes not handled yet: an incomplete message, or held
        # Input paused by a hold or a wait: (bytes, their frames, the frame it stopped at, end of
        # the whole frames); what arrives meanwhile goes to _cbuf.
        self._paused: tuple[bytes, list[tuple[int, int, int]], int, int] | None = None
        self._cneed = 0  # how many bytes _cbuf must hold before its first message is complete
        self._ended: list[Pending] = []  # finished statements whose result is not recorded yet
        self.stalled = False
        self.held = False  # client input waits: a statement is held for approval, or awaiting
        self.awaiting: Pending | None = None  # the Describe an Execute waits for (binary: refuse)
        self.masked_values = 0  # for the metrics
        self.durations = Durations()
        # Back-pressure: a peer that cannot take more keeps the other side's reads paused.
        self.client_full = False
        self.up_full = False
        self._hold_outcomes: dict[str, tuple[str, str]] = {}
        self._grant_ids: tuple[str, ...] = ()
        self.closed = False
        self.status = "I"
        self.executed = 0
        self.streams: tuple = ()
        self.done = asyncio.get_running_loop().create_future()

    def start(self, pending_client: bytes, pending_upstream: bytes) -> None:
        self.client.set_protocol(_ClientSide(self))
        self.up.set_protocol(_UpstreamSide(self))
        if pending_upstream:
            self.from_upstream(pending_upstream)
        if pending_client:
            self.from_client(pending_client)

    def reload(self) -> None:
        """Called after SIGHUP: the next statement is judged by the new policy.

        Names prepared before (protocol Parse or SQL PREPARE) keep what they do, and
        run on if, and only if, the new grants allow that at Bind or EXECUTE."""
        policy = self._policy_getter()
        if not policy.has_role:
            # Removing a role from the configuration ends its sessions: refusing everything,
            # even ROLLBACK, would leave them open and useless.
            self.fatal("57P01", f"terminating connection: role {policy.role!r} was removed from the gateway")
            return
        policy.inherit(self.policy)
        self.policy = policy
        self._grant_epoch += 1
        self._take_masking()
        self._described.clear()  # planned under the old rules: ask again

    def _take_masking(self) -> None:
        self.masking = self.ctx.masking()  # MaskingRules if any rule applies to this resource, else None
        self._masks_text = self.masking is not None and self.masking.masks_text(self.ctx.resource)
        self._refuses_binary = self.masking is not None and self.masking.binary == "refuse"

    # ------------------------------------------------------------ client -> database

    def from_client(self, data: bytes) -> None:
        if self.closed:
            return
        if self.held:
            self._cbuf += data
            return
        if self._paused is not None:
            self._resume(data)
            return
        if self._cbuf:
            # A large message arrives in many reads: gather it, and cut frames only once it
            # is whole (re-reading it on every read would cost O(size^2)).
            self._cbuf += data
            if len(self._cbuf) < self._cneed:
                return
            buf = bytes(self._cbuf)
        else:
            buf = data
        self._access_note = UNSET
        try:
            frames, used = pw.split_frames(buf, self.ctx.max_message_size)
        except pw.ProtocolError as exc:
            self.fatal("08P01", f"protocol violation: {exc}")
            return
        if self._run_frames(buf, frames, 0, used):
            self._keep_incomplete(buf, used)

    def _run_frames(self, buf: bytes, frames: list[tuple[int, int, int]], index: int, used: int) -> bool:
        """Handles frames[index:] and forwards what they let through; False if it stopped
        (a statement paused the client's input, or the session ended)."""
        out: list[bytes] = []
        try:
            for i in range(index, len(frames)):  # by index: a resumed pipeline is not sliced again
                if self.closed:
                    return False
                tag, start, end = frames[i]
                try:
                    self._client_frame(tag, buf, start, end, out)
                except (_Hold, _AwaitDescription) as pause:
                    # Forward what came before; this message and the rest wait where they are
                    # (kept, not copied and cut again: a pipeline may pause at every Execute).
                    if out:
                        self.up.write(b"".join(out))
                    self._paused = (buf, frames, i, used)
                    if type(pause) is _Hold:
                        self._start_hold(pause)
                    else:
                        self._await_description(pause.source)
                    return False
        except pw.ProtocolError as exc:
            if out:
                self.up.write(b"".join(out))
            self.fatal("08P01", f"protocol violation: {exc}")
            return False
        if out and not self.closed:
            self.up.write(b"".join(out))
        return not self.closed

    def _resume(self, data: bytes) -> None:
        """Input paused by a hold or a wait goes on where it stopped, then what came meanwhile."""
        buf, frames, index, used = self._paused
        self._paused = None
        later = bytes(self._cbuf) + data if self._cbuf else data
        self._cbuf = bytearray()
        self._cneed = 0
        self._access_note = UNSET
        ran = self._run_frames(buf, frames, index, used)
        # The held statement ran first, and took its hold's outcome if it was refused again;
        # an outcome left over belongs to no later statement of the same text.
        self._hold_outcomes.clear()
        if ran:
            rest = buf[used:] + later if used < len(buf) else later
            if rest:
                self.from_client(rest)
        elif self._paused is not None:
            self._cbuf = bytearray(later)  # paused again: it waits behind the saved frames

    def _keep_incomplete(self, buf: bytes, used: int) -> None:
        rest = len(buf) - used
        self._cbuf = bytearray(buf[used:]) if rest else bytearray()
        # Once the header is in, the whole message's size is known (split_frames checked it).
        self._cneed = 1 + int.from_bytes(buf[used + 1 : used + 5], "big") if rest >= 5 else 5

    def _client_frame(self, tag: int, buf: bytes, start: int, end: int, out: list[bytes]) -> None:
        """One client message; the frequent ones are read in place, the rest decoded in full."""
        if self._mode and self._outside_normal_mode(tag, buf, start, end, out):
            return
        if tag == _Q:
            if buf[end - 1] != 0 or buf.find(b"\0", start + 5, end - 1) >= 0:
                raise pw.ProtocolError("Query: malformed string")
            try:
                sql = buf[start + 5 : end - 1].decode()
            except UnicodeDecodeError:
                raise pw.ProtocolError("Query: string is not valid UTF-8") from None
            self._query(sql, buf[start:end], out)
        elif tag == _E:
            nul = buf.find(b"\0", start + 5, end)
            if nul < 0 or end - nul != 5:
                raise pw.ProtocolError("Execute: malformed message")
            if nul - start - 5 > MAX_NAME:
                raise pw.ProtocolError(NAME_TOO_LONG)
            try:
                portal = buf[start + 5 : nul].decode()
            except UnicodeDecodeError:
                raise pw.ProtocolError("Execute: portal name is not valid UTF-8") from None
            self._execute(portal, buf[start:end], out)
        elif tag == _B:
            msg = pw.read_bind(buf, start + 5, end)
            if len(msg.portal) > MAX_NAME // 4 or len(msg.statement) > MAX_NAME // 4:
                _check_names(msg.portal, msg.statement)
            self._bind(msg, buf[start:end], out)
        elif tag == _S:
            if end - start != 5:
                raise pw.ProtocolError("Sync: trailing bytes")
            self._pending.append(SYNC)
            if self._defined_since_sync:
                self._defined_since_sync.clear()
            out.append(b"S\0\0\0\4")
        elif tag == _D:  # Describe (libpq sends one with every prepared execution)
            kind = buf[start + 5] if end - start > 6 else 0
            if kind != _P and kind != _S:
                raise pw.ProtocolError("Describe: kind must be S or P")
            if buf.find(b"\0", start + 6, end) != end - 1:
                raise pw.ProtocolError("Describe: malformed name")
            if end - start - 7 > MAX_NAME:
                raise pw.ProtocolError(NAME_TOO_LONG)
            try:
                name = buf[start + 6 : end - 1].decode()
            except UnicodeDecodeError:
                raise pw.ProtocolError("Describe: name is not valid UTF-8") from None
            self._describe(kind == _P, name, buf[start:end], out)
        else:
            raw = buf[start:end]
            msg = pw.decode_frontend(raw[:1], raw[5:])
            if tag == _p:
                raise pw.ProtocolError("unexpected authentication response in a running session")
            self._client_message(msg, raw, out)

    def _outside_normal_mode(self, tag: int, buf: bytes, start: int, end: int, out: list[bytes]) -> bool:
        """A message while the database skips to Sync or reads COPY data; True if handled here."""
        if tag == _X:
            return False
        if self._mode == _SKIP:
            if tag == _S:
                self._mode = _NORMAL
                return False
            return True  # the database would discard it: it never reaches it
        # COPY FROM STDIN: the database reads data and ignores Sync and Flush.
        if tag in (_d, _H):
            out.append(buf[start:end])
        elif tag in (_c, _f):
            self._mode = _NORMAL
            out.append(buf[start:end])
        elif tag != _S:  # a Sync is dropped: whether the database answers it would depend on the data
            raise pw.ProtocolError(f"message {chr(tag)!r} during COPY FROM STDIN")
        return True

    def _client_message(self, msg: Any, raw: bytes, out: list[bytes]) -> None:
        cls = type(msg)
        if cls is pw.Bind:
            _check_names(msg.portal, msg.statement)
            self._bind(msg, raw, out)
        elif cls is pw.Parse:
            _check_names(msg.name)
            self._parse(msg, raw, out)
        elif cls is pw.Close:
            _check_names(msg.name)
            self._close(msg, raw, out)
        elif cls is pw.Terminate:
            out.append(raw)
            self.up.write(b"".join(out))
            out.clear()
            self.close("client terminated")
        elif cls is pw.FunctionCall:
            self._forget_portals()
            self._refuse_simple(
                "the fast-path function call interface is not allowed through the gateway", out
            )
        elif cls is pw.Flush:
            out.append(raw)
        # CopyData, CopyDone, CopyFail outside COPY: the database ignores them; so do we.

    def _close(self, msg: pw.Close, raw: bytes, out: list[bytes]) -> None:
        if msg.kind == "S":
            self._pending.append(Definition(Kind.CLOSE, msg.name, None, frozenset()))
            self._definitions += 1
            self._defined_since_sync.add(msg.name)
            self._statements.pop(msg.name, None)
        else:
            self._drop_portal(msg.name)
            self._described.pop(msg.name, None)
            self._pending.append(CLOSE_PORTAL)
        out.append(raw)

    def _forget_portals(self) -> None:
        """A simple Query may close, declare or replace any portal (and drops the unnamed one)."""
        if self._described:
            self._described.clear()
        oldest = self._grant_epoch  # it may declare a cursor now
        if self._portals:
            oldest = min(oldest, *(portal.epoch for portal in self._portals.values()))
            self._portals.clear()
        self._forgotten(oldest)

    def _drop_portal(self, name: str) -> None:
        """The gateway stops knowing `name`, which the database may keep (a refused Bind never
        reaches it, a Close after an error is skipped): from now on it counts as forgotten."""
        portal = self._portals.pop(name, None)
        if portal is not None:
            self._forgotten(portal.epoch)

    def _forgotten(self, epoch: int) -> None:
        if self._forgotten_epoch is None or epoch < self._forgotten_epoch:
            self._forgotten_epoch = epoch

    def _describe(self, portal: bool, name: str, raw: bytes, out: list[bytes]) -> None:
        entry = Pending(Kind.DESCRIBE, portal=name if portal else None)
        if portal:
            described = self._described
            if len(described) >= MAX_DESCRIBED:
                described.clear()
            described[name] = entry
        self._pending.append(entry)
        out.append(raw)

    def _sync_access(self) -> str | None:
        """Applies revocations and live grants before a statement is judged; a refusal message or None.

        Nothing changes them within one batch of client messages (one event-loop callback), so a
        Bind and its Execute share one look-up."""
        note = self._access_note
        if note is UNSET:
            note = self._access_note = self._check_access()
        return note

    def _check_access(self) -> str | None:
        access = self.ctx.access
        if access is None:
            return None
        if access.is_revoked(self.credential):
            return "your gateway credential was revoked"
        classes, ids = access.grants(self.credential)
        if ids != self._grant_ids:
            lost = set(self._grant_ids) - set(ids)
            for request_id in sorted(lost):
                self._event("grant-expired", request_id=request_id)
            for request_id in sorted(set(ids) - set(self._grant_ids)):
                self._event("grant-applied", request_id=request_id)
            self._grant_ids = ids
            self.policy.set_extra_grants(classes)
            if lost:
                self._grant_epoch += 1
            if lost and access.on_expiry == "end_session":
                self.fatal("57P01", "terminating connection: a grant this session used has ended")
                return "the session ended"
        return None

    def _event(self, kind: str, **fields: Any) -> None:
        try:
            self.recording.event(kind, **fields)
        except Exception as exc:  # the next statement's record will fail closed
            log.error("session recording failed: %s", exc)

    def _maybe_hold(self, sql: str, verdict: Any) -> str | None:
        """Raises _Hold when an approval may resolve this refusal; a refusal message after a hold."""
        outcome = self._hold_outcomes.pop(sql, None)
        if outcome is not None:
            status, request_id = outcome
            return f"hoopctl: statement not run: access request {request_id or '(none)'} {status}"
        access = self.ctx.access
        if access is None or not verdict.rule.endswith("-not-granted"):
            return None
        role = access.hold_role(self.credential, verdict.classes)
        if role is not None:
            raise _Hold(sql, role)
        return None

    def _start_hold(self, hold: _Hold) -> None:
        self.held = True
        self.client.pause_reading()

        async def wait() -> None:
            try:
                outcome = await self.ctx.access.hold(
                    self.credential,
                    hold.role,
                    hold.sql,
                    session_id=getattr(self.recording, "sid", None),
                    record_event=self._event,
                )
            except Exception:
                log.exception("holding a statement failed")
                outcome = ("failed", "")
            if outcome[0] != "approved":
                self._hold_outcomes[hold.sql] = outcome
            self.held = False
            if not self.closed:
                if not self.up_full:
                    self.client.resume_reading()
                self.from_client(b"")

        asyncio.ensure_future(wait())

    def _gate(self, text: str, proto: str) -> str | None:
        """Checks the credential itself; returns a refusal message, or None."""
        cred = self.credential
        if time.time() >= cred.expires_at:
            return "your gateway credential has expired; request a new token"
        if cred.max_statements is not None and self.executed >= cred.max_statements:
            return f"your gateway credential allows {cred.max_statements} statements; request a new token"
        return None

    def _record(self, text: str, params: Any, allowed: bool, rule: str | None, proto: str) -> int | None:
        """Writes the statement record; None if it could not be written (then refuse).

        Content rules (emails, cards, credentials...) apply to literals in the recorded
        text as they do to bind parameters; the database gets the statement as sent."""
        try:
            if self._masks_text:
                text = self.masking.mask_text(self.ctx.resource, text)
            return self.recording.statement(text, params, allowed, rule, proto)
        except Exception as exc:  # RecordingError or worse: no record, no forwarding
            log.error("session recording failed: %s", exc)
            return None

    def _verdict(self, check: Callable[[str], Any], sql: str) -> Any:
        try:
            return check(sql)
        except Exception as exc:  # fail closed on a policy bug
            log.exception("policy check failed")
            return Refused(f"the gateway could not judge this statement ({type(exc).__name__})")

    def _query(self, sql: str, raw: bytes, out: list[bytes]) -> None:
        self._forget_portals()
        problem = self._sync_access() or self._gate(sql, "simple")
        verdict = None if problem else self._verdict(self.policy.check_query, sql)
        if verdict is not None and not verdict.allowed:
            problem = self._maybe_hold(sql, verdict)
        elif verdict is not None and "copy" in verdict.classes and self._unmasked_copy_out(sql):
            self._record(sql, None, False, COPY_OUT_RULE, "simple")
            self._refuse_simple(COPY_OUT_REFUSED, out, hint=COPY_OUT_HINT)
            return
        if problem or not verdict.allowed:
            self._record(sql, None, False, verdict.rule if verdict else "credential", "simple")
            self._refuse_simple(problem or verdict.message, out)
            return
        h = self._record(sql, None, True, verdict.rule, "simple")
        if h is None:
            self._refuse_simple("the gateway cannot record this statement, so it is not run", out, "58030")
            return
        self.executed += 1
        self._pending.append(Pending(Kind.QUERY, h))
        out.append(raw)

    def _unmasked_copy_out(self, sql: str) -> bool:
        """For a statement classified `copy`: is it COPY ... TO STDOUT while masking applies?
        Its data could not be matched to columns, so it is refused before it runs (a COPY of
        a DELETE ... RETURNING would still delete). A text that does not parse (one the
        gateway is unsure of, at Bind) counts as one."""
        return self.masking is not None and copies_out(sql) is not False

    def _refuse_simple(self, message: str, out: list[bytes], code: str = "42501", hint: str = "") -> None:
        err = pw.ErrorResponse.make(code, message, hint=hint).encode()
        self._pending.append(Pending(Kind.REFUSED_QUERY, message=err))
        out.append(FAIL_QUERY)

    def _refuse_extended(self, message: str, out: list[bytes], code: str = "42501", hint: str = "") -> None:
        err = pw.ErrorResponse.make(code, message, hint=hint).encode()
        self._pending.append(Pending(Kind.REFUSED, message=err))
        out.append(FAIL_EXTENDED)
        # The database will skip to the next Sync after that failure: so does the gateway
        # now, rather than judge and record the rest of the pipeline as if it would run.
        self._mode = _SKIP

    def _parse(self, msg: pw.Parse, raw: bytes, out: list[bytes]) -> None:
        # A refused Parse never reaches the database: what the name runs stays as it was.
        if msg.name == RESERVED_NAME:
            self._refuse_extended("this statement name is reserved by the gateway", out)
            return
        problem = self._sync_access()
        if problem:
            self._record(msg.sql, None, False, "credential", "extended")
            self._refuse_extended(problem, out)
            return
        verdict, classes = self._judge_parse(msg.sql)
        if not verdict.allowed:
            problem = self._maybe_hold(msg.sql, verdict) or verdict.message
            self._record(msg.sql, None, False, verdict.rule, "extended")
            self._refuse_extended(problem, out)
            return
        if "copy" in classes and self._unmasked_copy_out(msg.sql):
            self._record(msg.sql, None, False, COPY_OUT_RULE, "extended")
            self._refuse_extended(COPY_OUT_REFUSED, out, hint=COPY_OUT_HINT)
            return
        self.policy.stage_statement(msg.name, classes)
        self._pending.append(Definition(Kind.PARSE, msg.name, msg.sql, classes))
        self._definitions += 1
        self._defined_since_sync.add(msg.name)
        self._statements[msg.name] = msg.sql
        out.append(raw)

    def _judge_parse(self, sql: str) -> tuple[Any, frozenset[str]]:
        judged = self._verdict(self.policy.judge_parse, sql)
        return (judged, frozenset()) if type(judged) is Refused else judged

    def _bind(self, msg: pw.Bind, raw: bytes, out: list[bytes]) -> None:
        self._described.pop(msg.portal, None)
        problem = self._sync_access()
        if problem:
            self._drop_portal(msg.portal)
            self._record(self._statement_text(msg.statement), None, False, "credential", "extended")
            self._refuse_extended(problem, out)
            return
        verdict = self._verdict(self.policy.check_execute, msg.statement)
        if not verdict.allowed:
            self._drop_portal(msg.portal)
            self._record(f"-- bind {msg.statement!r}", None, False, verdict.rule, "extended")
            self._refuse_extended(verdict.message, out)
            return
        sql = self._statement_text(msg.statement)
        # A COPY parsed before a reload brought masking:
        if "copy" in verdict.classes and self._unmasked_copy_out(sql):
            self._drop_portal(msg.portal)
            self._record(sql, None, False, COPY_OUT_RULE, "extended")
            self._refuse_extended(COPY_OUT_REFUSED, out, hint=COPY_OUT_HINT)
            return
        self._portals[msg.portal] = Portal(sql, msg, self._grant_epoch, verdict.classes)
        if msg.portal:  # SQL FETCH can run a named portal: it must need what the portal runs
            self.policy.bind_portal(msg.portal, verdict.classes)
        self._pending.append(BIND)
        out.append(raw)

    def _statement_text(self, name: str) -> str:
        """The SQL a Bind of `name` runs, for the recording."""
        if self._definitions and name not in self._defined_since_sync:
            return self._uncertain_text(name)
        sql = self._statements.get(name)
        return f"-- prepared statement {name!r}" if sql is None else sql

    def _uncertain_text(self, name: str) -> str:
        """A Parse or Close of `name` sent before the last Sync is not answered yet: if its
        pipeline fails, the database keeps what it had, so the record names each possibility."""
        texts = [self._confirmed.get(name)]
        texts += [item.sql for item in self._pending if type(item) is Definition and item.name == name]
        if len(texts) == 1:
            sql = texts[0]
            return f"-- prepared statement {name!r}" if sql is None else sql
        options = dict.fromkeys(
            f"-- no statement {name!r}" if sql is None else sql for sql in reversed(texts)
        )
        return "\n-- or, if an earlier pipeline failed:\n".join(options)

    def _execute(self, name: str, raw: bytes, out: list[bytes]) -> None:
        portal = self._portals.get(name)
        if portal is not None:
            sql, bind, epoch = portal.sql, portal.bind, portal.epoch
        else:
            sql, bind, epoch = f"-- execute portal {name!r}", None, self._forgotten_epoch
        problem = self._sync_access() or self._gate(sql, "extended")
        if problem:
            self._record(sql, None, False, "credential", "extended")
            self._refuse_extended(problem, out)
            return
        if epoch is not None and epoch != self._grant_epoch:
            refused = self._judge_again(name, portal)
            if refused is not None:
                self._record(sql, None, False, refused.rule, "extended")
                self._refuse_extended(refused.message, out)
                return
        params = params_for_record(bind, self.masking, self.ctx.resource) if bind and bind.params else None
        # A portal whose Bind the gateway no longer holds (bound before a simple Query, in a
        # transaction) may be binary: its Describe answer tells.
        if self._refuses_binary and (bind is None or 1 in bind.result_formats):
            masker = self._described_masker(name, out)
            if masker is not None and masker.refuse:
                self._record(sql, params, False, BINARY_RULE, "extended")
                self._refuse_extended(
                    masker.reason or "a masked column is in binary format", out, hint=masker.hint
                )
                return
        h = self._record(sql, params, True, None, "extended")
        if h is None:
            self._refuse_extended("the gateway cannot record this statement, so it is not run", out, "58030")
            return
        self.executed += 1
        described = self._described
        source = described.get(name)
        if len(described) > (source is not None):
            # This statement may close or declare other portals (SQL CLOSE, DECLARE, a function
            # opening a cursor): what was described of them may no longer hold.
            described.clear()
            if source is not None:
                described[name] = source
        if source is None and self.masking is not None:
            # Without a RowDescription the DataRows could not be masked: ask for one.
            source = Pending(Kind.INJECTED_DESCRIBE, portal=name)
            out.append(pw.Describe("P", name).encode())
            self._pending.append(source)
            described[name] = source
        entry = Pending(Kind.EXECUTE, h, portal=name)
        entry.describe = source
        self._pending.append(entry)
        out.append(raw)

    def _judge_again(self, name: str, portal: Portal | None) -> Any:
        """A portal bound before grants were lost (or the policy reloaded): what its Bind was
        allowed to run is judged by today's grants, and one the gateway forgot cannot be.
        Returns the refusal, or None."""
        if portal is None:
            return Refused(
                "this portal was bound before your access changed; bind it again", rule="access-changed"
            )
        # An extended-protocol CLOSE and DECLARE may have given the name another query since
        # its Bind: judged by whatever ran under the name too.
        verdict = self._verdict(self.policy.check_classes, portal.classes | self.policy.cursor_classes(name))
        if not verdict.allowed:
            return verdict
        self._portals[name] = portal._replace(epoch=self._grant_epoch)
        return None

    def _described_masker(self, portal: str, out: list[bytes]) -> Any:
        """The masking plan of `portal`'s rows, known before its Execute is forwarded: with
        `binary: refuse`, a statement whose binary columns a rule covers must never run (a
        write with RETURNING would have written). Raises _AwaitDescription until the answer
        to a Describe of it is in (the client's own, or one asked for here)."""
        source = self._described.get(portal)
        if source is not None and source.masker is not UNSET:
            return source.masker
        if source is None:
            source = Pending(Kind.INJECTED_DESCRIBE, portal=portal)
            out.append(pw.Describe("P", portal).encode())
            self._pending.append(source)
            self._described[portal] = source
        out.append(FLUSH)  # the answer now, not at the client's Sync
        raise _AwaitDescription(source)

    def _await_description(self, source: Pending) -> None:
        self.awaiting = source
        self.held = True
        self.client.pause_reading()

    def _description_arrived(self) -> None:
        """The awaited Describe was answered, or dropped by an error: the Execute goes on."""
        self.held = False  # before `awaiting`: a scrape between the two must not see an approval hold
        self.awaiting = None
        if not self.closed:
            if not self.up_full:
                self.client.resume_reading()
            self.from_client(b"")

    # ------------------------------------------------------------ database -> client

    def from_upstream(self, data: bytes) -> None:
        if self.closed:
            return
        if self._ubuf:
            self._ubuf += data
            buf: bytes | bytearray = self._ubuf
        else:
            buf = data
        if self.stalled:
            if buf is data:
                self._ubuf += data
            return
        try:
            frames, used = pw.split_frames(buf, self.ctx.max_message_size)
        except pw.ProtocolError as exc:
            self.fatal("08P01", f"the database sent a malformed message: {exc}")
            return
        cut = self._relay(buf, frames, used)
        # Keep what was not forwarded (an incomplete message, or the rest after a stall).
        if cut < len(buf):
            rest = bytes(buf[cut:])
            self._ubuf = bytearray(rest)
        else:
            self._ubuf = bytearray()
        if self._ended:
            # Results are recorded after the answer went to the client: they need no
            # ordering against forwarding, and the client should not wait for them.
            self._record_results()
        if self.awaiting is not None and not self.stalled and self.awaiting not in self._pending:
            self._description_arrived()

    def _relay(self, buf: bytes | bytearray, frames: list[tuple[int, int, int]], used: int) -> int:
        """Forwards the frames (rewriting where needed); returns how far it got."""
        pieces: list[bytes | memoryview] = []
        mark = 0  # start of the run of frames forwarded untouched
        pending = self._pending
        view = memoryview(buf)
        masker: Any = UNSET
        for tag, start, end in frames:
            if tag == _D:
                if masker is UNSET:
                    masker = self._current_masker()
                    if masker is LOST:
                        self._lost("a data row")
                        return used
                if masker is None:
                    continue
                new = b"" if masker.refuse else self._mask_row(masker, view[start + 5 : end])
                if masker.refuse:
                    pending[0].withheld = masker.reason or "a masked column is in binary format"
                    pending[0].hint = masker.hint
                if new is not None:
                    pieces.append(view[mark:start])
                    pieces.append(new)
                    mark = end
                continue
            replace: bytes | None = None
            if tag == _2:  # BindComplete
                if not pending or pending[0] is not BIND:
                    self._lost("BindComplete")
                    return used
                pending.popleft()
                continue
            if tag in (_C, _I, _s):
                head = pending[0] if pending else None
                kind = head.kind if head is not None else None
                if kind is not Kind.EXECUTE and kind is not Kind.QUERY:
                    self._lost("a command's completion")
                    return used
                if tag == _C:
                    head.rows += rows_of(view[start + 5 : end - 1])
                if head.withheld:
                    head.error = head.withheld
                    replace = refusal(head.withheld, head.hint)
                    head.withheld = ""
                self._copy_out = False
                if kind is Kind.EXECUTE:
                    pending.popleft()
                    self._finish(head)
                masker = UNSET
            elif tag == _Z:
                self.status = chr(buf[start + 5])
                masker = UNSET
                if not self._ready():
                    return used
                if self.status == "I" and not pending:
                    # Out of a transaction with nothing sent after: its portals are gone.
                    self._forgotten_epoch = None
            elif tag in (_T, _n):
                head = pending[0] if pending else None
                kind = head.kind if head is not None else None
                if kind is Kind.DESCRIBE or kind is Kind.INJECTED_DESCRIBE:
                    if tag == _n:
                        head.masker = None
                    elif head.portal is not None and self._row_description(head, view[start:end]):
                        pieces.append(view[mark:start])
                        self._flush(pieces)
                        return start  # stalled: the catalog is asked first
                    pending.popleft()
                    if kind is Kind.INJECTED_DESCRIBE:
                        replace = b""
                elif kind is Kind.QUERY and tag == _T:
                    if self._row_description(head, view[start:end]):
                        pieces.append(view[mark:start])
                        self._flush(pieces)
                        return start
                else:
                    self._lost("a row description")
                    return used
                masker = UNSET
            elif tag == _E:
                self._copy_out = False
                replace = self._error(bytes(view[start:end]))
                if replace is None and self._masks_text:
                    replace = self._masked_text_message(tag, view[start:end])
                masker = UNSET
            elif tag in (_N, _A):  # NoticeResponse, NotificationResponse
                if self._masks_text:
                    replace = self._masked_text_message(tag, view[start:end])
            elif tag in (_H, _W):  # CopyOutResponse, CopyBothResponse
                if self.masking is not None:
                    if not self._withhold_copy_out():
                        return used
                    replace = b""
            elif tag in (_d, _c):  # CopyData, CopyDone (from the database)
                if self._copy_out:
                    replace = b""
            elif tag in (_1, _3):
                if not self._defined(tag):
                    return used
            elif tag == _G and not self._copy_in():
                return used
            if replace is not None:
                pieces.append(view[mark:start])
                if replace:
                    pieces.append(replace)
                mark = end
        if mark == 0 and not pieces:
            if used:
                self.client.write(buf if used == len(buf) and type(buf) is bytes else bytes(view[:used]))
            return used
        pieces.append(view[mark:used])
        self._flush(pieces)
        return used

    def _withhold_copy_out(self) -> bool:
        """COPY ... TO STDOUT under masking that got past _unmasked_copy_out (masking came
        with a reload between its Bind and its Execute): none of its data goes out, and it
        ends in an error."""
        pending = self._pending
        head = pending[0] if pending else None
        if head is None or (head.kind is not Kind.EXECUTE and head.kind is not Kind.QUERY):
            self._lost("a COPY response")
            return False
        head.withheld = "COPY TO STDOUT is not masked, so its rows are withheld"
        head.hint = COPY_OUT_HINT
        self._copy_out = True
        return True

    def _masked_text_message(self, tag: int, frame: memoryview) -> bytes | None:
        """An error, notice or notification with content rules applied to its texts (an error
        can quote a value: `invalid input syntax for type integer: "ann@example.com"`)."""
        try:
            msg = pw.decode_backend(bytes(frame[:1]), frame[5:])
        except pw.ProtocolError:
            return None  # forwarded as is: the client's parser will judge it
        mask = self.masking.mask_text
        resource = self.ctx.resource
        if tag == _A:
            payload = mask(resource, msg.payload)
            return (
                None
                if payload == msg.payload
                else pw.NotificationResponse(msg.pid, msg.channel, payload).encode()
            )
        fields = tuple(
            (code, mask(resource, value) if code in _TEXT_FIELDS else value) for code, value in msg.fields
        )
        return None if fields == msg.fields else type(msg)(fields).encode()

    def _flush(self, pieces: list) -> None:
        data = b"".join(pieces)
        if data:
            self.client.write(data)

    def _lost(self, what: str) -> None:
        """An answer that fits no request: which statement it belongs to is unknown, so nothing
        more of this session goes out (rows could escape masking, results be misattributed)."""
        self.fatal("08P01", f"the gateway lost track of the database's answers ({what})")

    def _current_masker(self) -> Any:
        """The masking plan for DataRows arriving now: None, a plan, WITHHOLD, or LOST."""
        pending = self._pending
        head = pending[0] if pending else None
        kind = head.kind if head is not None else None
        if kind is Kind.EXECUTE:
            source = head.describe
            masker = source.masker if source is not None else UNSET
        elif kind is Kind.QUERY:
            masker = head.masker
        else:
            return LOST
        if self.masking is None:
            return None
        return WITHHOLD if masker is UNSET else masker

    def _mask_row(self, masker: Any, payload: memoryview) -> bytes | None:
        values = pw.decode_data_row(payload)
        new, count = masker.mask(values)
        if not count:
            return None
        self._pending[0].masked += count
        return pw.encode_data_row(new)

    def _row_description(self, head: Pending, frame: memoryview) -> bool:
        """Plans masking for the coming rows; True if the catalog must be asked first (stall)."""
        if self.masking is None:
            return False
        masker = self.ctx.plan_masking(bytes(frame))
        if type(masker) is CatalogMiss:
            self._stall(self.ctx.catalog.resolve(masker.oids))
            return True
        head.masker = masker
        return False

    def _stall(self, coro: Any) -> None:
        self.stalled = True
        self.up.pause_reading()

        async def wait() -> None:
            try:
                await coro
            finally:
                self.stalled = False
                if not self.closed:
                    if not self.client_full:
                        self.up.resume_reading()
                    self.from_upstream(b"")

        asyncio.ensure_future(wait())

    def _defined(self, tag: int) -> bool:
        """ParseComplete or CloseComplete: the database applied it, so the gateway does too."""
        pending = self._pending
        head = pending[0] if pending else None
        kind = head.kind if head is not None else None
        if kind is Kind.CLOSE_PORTAL and tag == _3:
            pending.popleft()
            return True
        if kind is not (Kind.PARSE if tag == _1 else Kind.CLOSE):
            self._lost("ParseComplete" if tag == _1 else "CloseComplete")
            return False
        pending.popleft()
        self._definitions -= 1
        name = head.name
        later = self._later_classes(name)  # Parses of the same name still on their way
        if kind is Kind.PARSE:
            self._confirmed[name] = head.sql
            self.policy.confirm_statement(name, head.classes if later is None else head.classes | later)
        else:
            self._confirmed.pop(name, None)
            if later is None:
                self.policy.close_statement(name)
            else:
                self.policy.confirm_statement(name, later)
        return True

    def _later_classes(self, name: str) -> frozenset[str] | None:
        if not self._definitions:
            return None
        found: frozenset[str] | None = None
        for item in self._pending:
            if type(item) is Definition and item.kind is Kind.PARSE and item.name == name:
                found = item.classes if found is None else found | item.classes
        return found

    def _copy_in(self) -> bool:
        """CopyInResponse: the database reads COPY data until CopyDone or CopyFail."""
        pending = self._pending
        head = pending[0] if pending else None
        kind = head.kind if head is not None else None
        if kind is not Kind.QUERY and kind is not Kind.EXECUTE:
            self._lost("CopyInResponse")
            return False
        # Syncs sent after the COPY statement (libpq sends one with its Execute) reach the
        # database in COPY mode, which ignores them: no answer will come for them.
        while len(pending) > 1:
            if pending[1] is not SYNC:
                self.fatal(
                    "08P01", "protocol violation: a message other than COPY data during COPY FROM STDIN"
                )
                return False
            del pending[1]
        self._mode = _COPY
        return True

    def _error(self, raw: bytes) -> bytes | None:
        """An ErrorResponse: attribute it; returns replacement bytes, or None to forward as is."""
        if self._mode == _COPY:
            self._mode = _NORMAL  # an error ends COPY; later COPY data is ignored
        pending = self._pending
        if not pending:
            return None
        head = pending[0]
        kind = head.kind
        if kind is Kind.SYNC:  # the commit at Sync failed; ReadyForQuery follows
            return None
        message = error_message(raw)
        if kind is Kind.QUERY or kind is Kind.REFUSED_QUERY:
            head.error = message
            return head.message if kind is Kind.REFUSED_QUERY else None
        # Extended protocol: the database now discards every message up to the next Sync,
        # simple Queries included.
        replacement = head.message if kind is Kind.REFUSED else None
        redefined: set[str] = set()
        while pending and pending[0] is not SYNC:
            item = pending.popleft()
            kind = item.kind
            if kind is Kind.EXECUTE or kind is Kind.QUERY:
                item.error = message if item is head else "not run: an earlier message in the pipeline failed"
                self._finish(item)
            elif kind is Kind.PARSE or kind is Kind.CLOSE:
                self._definitions -= 1
                redefined.add(item.name)
            elif kind is Kind.DESCRIBE or kind is Kind.INJECTED_DESCRIBE:
                self._forget_describe(item)
        if not pending:
            self._mode = _SKIP  # until the client's next Sync
        for name in redefined:
            self._undo_definitions(name)
        return replacement

    def _forget_describe(self, item: Pending) -> None:
        """A failed or skipped Describe tells nothing: the next Execute of its portal asks again."""
        if item.portal is not None and self._described.get(item.portal) is item:
            del self._described[item.portal]

    def _undo_definitions(self, name: str) -> None:
        """Parses and Closes of `name` were skipped: it runs what the database has, or what the
        ones still on their way will make it."""
        sql = self._confirmed.get(name)
        for item in self._pending:
            if type(item) is Definition and item.name == name:
                sql = item.sql
        if sql is None:
            self._statements.pop(name, None)
        else:
            self._statements[name] = sql
        # The policy keeps judging `name` by everything it may run until a Parse is answered.

    def _ready(self) -> bool:
        """ReadyForQuery ends a Sync or a simple Query; False if it fits neither (session ended)."""
        if self._mode == _SKIP:
            self._mode = _NORMAL  # the database answered a Sync: it skips no more
        pending = self._pending
        if not pending:
            return True
        head = pending[0]
        kind = head.kind
        if kind is Kind.SYNC or kind is Kind.REFUSED_QUERY:
            pending.popleft()
        elif kind is Kind.QUERY:
            pending.popleft()
            self._finish(head)
        else:
            self._lost("ReadyForQuery")
            return False
        return True

    def _finish(self, item: Pending) -> None:
        self.masked_values += item.masked
        if item.handle is not None:
            item.t0 = (time.monotonic() - item.t0) * 1000.0  # now the duration in ms
            self.durations.add(item.t0)
            self._ended.append(item)

    def _record_results(self) -> None:
        ended, self._ended = self._ended, []
        try:
            for item in ended:
                self.recording.result(item.handle, item.t0, item.rows, item.error, item.masked)
        except Exception as exc:
            log.error("session recording failed: %s", exc)
            self.fatal("58030", "the gateway cannot record this session any more")

    # ------------------------------------------------------------ ending

    def fatal(self, code: str, message: str) -> None:
        """Ends this one session with an error to the client."""
        if self.closed:
            return
        log.warning("ending session: %s", message)
        try:
            self.client.write(pw.ErrorResponse.make(code, message, severity="FATAL").encode())
        except Exception:  # noqa: S110 - the client may already be gone
            pass
        self.close(message)

    def client_lost(self) -> None:
        if not self.closed:
            try:
                self.up.write(pw.Terminate().encode())
            except Exception:  # noqa: S110
                pass
        self.close("client disconnected")

    def upstream_lost(self) -> None:
        self.close("database connection closed")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        for tr in (self.client, self.up):
            tr.close()
        for item in self._ended:
            try:
                self.recording.result(item.handle, item.t0, item.rows, item.error, item.masked)
            except Exception:  # noqa: S110 - recording closes below
                pass
        self._ended = []
        for item in self._pending:
            if item.kind in (Kind.EXECUTE, Kind.QUERY) and item.handle is not None:
                item.error = item.error or f"session ended: {reason}"
                self.masked_values += item.masked  # rows the client got before the end
                try:
                    self.recording.result(
                        item.handle, (time.monotonic() - item.t0) * 1000.0, item.rows, item.error, item.masked
                    )
                except Exception:  # noqa: S110 - recording closes below
                    pass
        self._pending.clear()
        try:
            self.recording.close(reason)
        except Exception as exc:
            log.error("closing the session recording failed: %s", exc)
        self.on_close(self)
        if not self.done.done():
            self.done.set_result(None)
