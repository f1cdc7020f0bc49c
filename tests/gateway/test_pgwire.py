"""The sans-IO codec: round trips, order checks, limits, and fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopctl.gateway import pgwire as pw

FRONTEND_MESSAGES = [
    pw.Query("SELECT 1; SELECT 'é'"),
    pw.Parse("s1", "SELECT $1::int", (23,)),
    pw.Parse("", "SELECT 1"),
    pw.Bind("p", "s1", (b"42", None, b""), (0,), (1, 0)),
    pw.Bind("", "", ()),
    pw.Describe("S", "s1"),
    pw.Describe("P", ""),
    pw.Execute("", 0),
    pw.Execute("p", 10),
    pw.Close("S", "s1"),
    pw.Sync(),
    pw.Flush(),
    pw.CopyData(b"1\tx\n"),
    pw.CopyDone(),
    pw.CopyFail("no"),
    pw.FunctionCall(b"\0\0\0\1"),
    pw.Terminate(),
]

BACKEND_MESSAGES = [
    pw.ParameterStatus("server_version", "15.4"),
    pw.BackendKeyData(1234, -5),
    pw.ReadyForQuery("T"),
    pw.RowDescription((pw.Field("a", 16384, 1, 23, 4, -1, 0), pw.Field("b", 0, 0, 25, -1, -1, 1))),
    pw.DataRow((b"1", None, b"")),
    pw.CommandComplete("SELECT 3"),
    pw.ErrorResponse.make("42501", "permission denied", hint="ask"),
    pw.NoticeResponse((("S", "NOTICE"), ("M", "hi"))),
    pw.NotificationResponse(7, "chan", "payload"),
    pw.ParameterDescription((23, 25)),
    pw.NoData(),
    pw.EmptyQueryResponse(),
    pw.PortalSuspended(),
    pw.ParseComplete(),
    pw.BindComplete(),
    pw.CloseComplete(),
    pw.CopyResponse("G", 0, (0, 0)),
    pw.CopyResponse("H", 1, ()),
    pw.CopyResponse("W", 0, ()),
    pw.CopyData(b"x"),
    pw.CopyDone(),
    pw.FunctionCallResponse(b"\0\0\0\0"),
]


def _ready_frontend() -> pw.FrontendParser:
    p = pw.FrontendParser()
    p.feed(pw.StartupMessage({"user": "u", "database": "d"}).encode())
    assert isinstance(p.next_message(), pw.StartupMessage)
    p.feed(pw.PasswordMessage.for_password("secret").encode())
    assert p.next_message().password() == "secret"
    p.authenticated()
    return p


def _ready_backend() -> pw.BackendParser:
    p = pw.BackendParser()
    p.feed(pw.Authentication.ok().encode() + pw.ReadyForQuery("I").encode())
    assert list(p) == [pw.Authentication(0), pw.ReadyForQuery("I")]
    return p


def test_frontend_messages_round_trip_byte_by_byte():
    p = _ready_frontend()
    stream = b"".join(m.encode() for m in FRONTEND_MESSAGES)
    got = []
    for i in range(len(stream)):
        p.feed(stream[i : i + 1])
        got.extend(p)
    assert got == FRONTEND_MESSAGES
    assert p.phase is pw.Phase.CLOSED


def test_backend_messages_round_trip():
    p = _ready_backend()
    p.feed(b"".join(m.encode() for m in BACKEND_MESSAGES))
    assert list(p) == BACKEND_MESSAGES


def test_frontend_keeps_raw_bytes_for_forwarding():
    p = _ready_frontend()
    q = pw.Query("SELECT 1")
    p.feed(q.encode())
    assert p.next_message() == q
    assert p.last_raw == q.encode()


def test_startup_packets():
    p = pw.FrontendParser()
    p.feed(pw.SSLRequest().encode())
    assert p.next_message() == pw.SSLRequest()
    p.feed(pw.GSSENCRequest().encode())
    assert p.next_message() == pw.GSSENCRequest()
    p.feed(pw.StartupMessage({"user": "alice", "database": "app", "application_name": "x"}).encode())
    msg = p.next_message()
    assert msg.params == {"user": "alice", "database": "app", "application_name": "x"}
    assert p.phase is pw.Phase.AUTH

    c = pw.FrontendParser()
    c.feed(pw.CancelRequest(99, -7).encode())
    assert c.next_message() == pw.CancelRequest(99, -7)
    assert c.phase is pw.Phase.CLOSED


def test_sasl_initial_response_round_trip():
    msg = pw.PasswordMessage.for_sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert msg.sasl_initial() == ("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert pw.Authentication.sasl(["SCRAM-SHA-256"]).mechanisms() == ["SCRAM-SHA-256"]


def test_refuses_plaintext_bytes_queued_behind_ssl_request():
    p = pw.FrontendParser()
    p.feed(pw.SSLRequest().encode() + pw.StartupMessage({"user": "u"}).encode())
    with pytest.raises(pw.ProtocolError, match="unencrypted data"):
        p.next_message()


@pytest.mark.parametrize(
    "setup, data, match",
    [
        ("startup", pw.Query("SELECT 1").encode(), "start-up packet length"),
        ("startup", struct.pack("!ii", 8, 1234 << 16), "unsupported frontend protocol"),
        ("startup", pw.StartupMessage({"database": "d"}).encode(), "no PostgreSQL user"),
        ("auth", pw.Query("SELECT 1").encode(), "expected an authentication response"),
        ("ready", pw.PasswordMessage.for_password("x").encode(), "unexpected authentication"),
        ("ready", b"Z\0\0\0\5I", "unknown frontend message"),
        ("ready", b"Q\0\0\0\5x", "unterminated string"),
        ("ready", b"Q\0\0\0\7x\0y", "trailing bytes"),
        ("ready", b"Q\0\0\0\6\xff\0", "UTF-8"),
        ("ready", b"Q\0\0\0\3", "out of bounds"),
        ("ready", b"D\0\0\0\6X\0", "kind must be S or P"),
        ("ready", b"B\0\0\0\x14\0\0\0\2\0\0\0\0\0\1\xff\xff\xff\xff\0\0", "format count"),
    ],
)
def test_frontend_refuses_malformed_or_out_of_order(setup, data, match):
    if setup == "startup":
        p = pw.FrontendParser()
    elif setup == "auth":
        p = pw.FrontendParser()
        p.feed(pw.StartupMessage({"user": "u"}).encode())
        p.next_message()
    else:
        p = _ready_frontend()
    p.feed(data)
    with pytest.raises(pw.ProtocolError, match=match):
        p.next_message()


def test_oversized_message_refused_from_its_header_alone():
    p = pw.FrontendParser(max_message_size=1024)
    p.feed(pw.StartupMessage({"user": "u"}).encode())
    p.next_message()
    p.authenticated()
    p.feed(b"Q" + struct.pack("!i", 1 << 30))  # no body sent: refused before buffering 1 GiB
    with pytest.raises(pw.ProtocolError, match="out of bounds"):
        p.next_message()
    with pytest.raises(pw.ProtocolError):
        pw.split_frames(b"D" + struct.pack("!i", 2048) + b"x", 1024)


def test_data_after_terminate_is_refused():
    p = _ready_frontend()
    p.feed(pw.Terminate().encode() + pw.Sync().encode())
    assert p.next_message() == pw.Terminate()
    with pytest.raises(pw.ProtocolError):
        p.next_message()


def test_backend_refuses_out_of_order_startup():
    p = pw.BackendParser()
    p.feed(pw.ReadyForQuery("I").encode())
    with pytest.raises(pw.ProtocolError, match="during authentication"):
        p.next_message()
    p = pw.BackendParser()
    p.feed(pw.Authentication.ok().encode() + pw.DataRow((b"1",)).encode())
    p.next_message()
    with pytest.raises(pw.ProtocolError, match="during start-up"):
        p.next_message()
    p = pw.BackendParser()
    p.feed(pw.Authentication(5, b"abc").encode())
    with pytest.raises(pw.ProtocolError, match="salt"):
        p.next_message()


def test_split_frames_cuts_by_headers_and_keeps_the_tail():
    msgs = [pw.DataRow((b"1",)), pw.CommandComplete("SELECT 1"), pw.ReadyForQuery("I")]
    stream = b"".join(m.encode() for m in msgs)
    frames, used = pw.split_frames(stream + b"D\0\0", 1 << 20)
    assert [chr(t) for t, _, _ in frames] == ["D", "C", "Z"]
    assert used == len(stream)
    assert b"".join(stream[s:e] for _, s, e in frames) == stream
    assert pw.decode_data_row(memoryview(stream)[5 : frames[0][2]]) == [b"1"]


def test_command_complete_row_counts():
    assert pw.CommandComplete("SELECT 5").rows() == 5
    assert pw.CommandComplete("INSERT 0 2").rows() == 2
    assert pw.CommandComplete("BEGIN").rows() is None


def _valid_stream() -> bytes:
    return b"".join(m.encode() for m in FRONTEND_MESSAGES[:-1])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(["startup", "auth", "ready"]))
def test_fuzz_frontend_random_bytes_only_raise_protocol_error(data, phase):
    p = pw.FrontendParser(max_message_size=4096)
    if phase != "startup":
        p.feed(pw.StartupMessage({"user": "u"}).encode())
        p.next_message()
    if phase == "ready":
        p.authenticated()
    p.feed(data)
    try:
        for _ in p:
            pass
    except pw.ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_streams_only_raise_protocol_error(data):
    stream = bytearray(_valid_stream())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    p = _ready_frontend()
    p.feed(bytes(stream[:cut]))
    try:
        for _ in p:
            pass
    except pw.ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_backend_and_framing_only_raise_protocol_error(data):
    p = _ready_backend()
    p.feed(data)
    try:
        for _ in p:
            pass
    except pw.ProtocolError:
        pass
    try:
        frames, _ = pw.split_frames(data, 4096)
        for tag, start, end in frames:
            pw.decode_backend(bytes([tag]), data[start + 5 : end])
    except pw.ProtocolError:
        pass


def _bind_either(payload: bytes):
    try:
        return pw.decode_frontend(b"B", payload)
    except pw.ProtocolError:
        return "error"


def _read_bind_either(payload: bytes):
    buf = b"junk" + payload + b"more"
    try:
        return pw.read_bind(buf, 4, 4 + len(payload))
    except pw.ProtocolError:
        return "error"


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fast_bind_reader_agrees_with_the_decoder(data):
    msg = pw.Bind(
        data.draw(st.text(max_size=5).filter(lambda t: "\0" not in t)),
        data.draw(st.text(max_size=5).filter(lambda t: "\0" not in t)),
        tuple(data.draw(st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=4))),
        (),
        tuple(data.draw(st.lists(st.sampled_from([0, 1]), max_size=3))),
    )
    payload = bytearray(msg.encode()[5:])
    assert _read_bind_either(bytes(payload)) == msg
    for _ in range(data.draw(st.integers(0, 3))):
        if payload:
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    mutated = bytes(payload[:cut])
    assert _read_bind_either(mutated) == _bind_either(mutated)
