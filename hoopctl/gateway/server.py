"""The gateway's asyncio server: accept, TLS, authenticate, connect upstream, relay.

Per connection: encryption negotiation (SSLRequest -> TLS with the configured
certificate; GSSENCRequest -> 'N'), then the caller's token: SCRAM-SHA-256 with
user = token body and password = token signature (scramp, server side), or the
whole token as a cleartext password, only over TLS. The startup `database` names
the resource. The gateway then logs in upstream with its own credentials,
hands the caller the server's ParameterStatus values and a BackendKeyData of its
own (a cancel is mapped back to the upstream backend), and hands the two
connections to a `Session` (hoopctl.gateway.session), the hot path.

`Gateway.start()` listens; `reload(config)` applies a new policy and masking to
new statements without dropping a connection; `drain(timeout)` stops accepting
and lets sessions finish. `serve(config)` runs all that with SIGTERM/SIGHUP.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import secrets
import signal
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scramp

from hoopctl.access.oidc import looks_like_jwt
from hoopctl.access.tokens import AuthError, TokenAuthority, load_key
from hoopctl.gateway import pgwire as pw
from hoopctl.gateway.catalog import Catalog
from hoopctl.gateway.config import GatewayConfig, Resource
from hoopctl.gateway.masking import RowMasker
from hoopctl.gateway.metrics import Stats, serve_metrics
from hoopctl.gateway.session import CatalogMiss, Session, SessionContext
from hoopctl.gateway.tls import server_context
from hoopctl.gateway.upstream import UpstreamError, open_upstream, send_cancel

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 30.0
# Startup parameters a caller may pass on to the database. Anything else (options,
# replication, search_path, ...) could change what a statement means or who runs it.
FORWARDED_PARAMS = ("application_name", "DateStyle", "TimeZone", "extra_float_digits", "IntervalStyle")
SCRAM_ITERATIONS = 4096
_MISS = object()


class _Fatal(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class StartError(RuntimeError):
    """The gateway cannot start (an address in use...): one line for the operator."""


def _reason(exc: OSError) -> str:
    # asyncio words a bind error its own way; the errno's text is the same everywhere.
    return os.strerror(exc.errno) if exc.errno else str(exc)


class Gateway:
    """The running gateway: a listening socket, live sessions, the current config."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        authority: TokenAuthority | None = None,
        recorder: Any = None,
        sock: socket.socket | None = None,
        worker_index: int = 0,
    ) -> None:
        self.config = config
        self.worker_index = worker_index  # with limits.workers > 1: which one (metrics port offset)
        self.authority = authority or TokenAuthority(load_key(config.token_key_file))
        self._own_recorder = recorder is None
        self.recorder = recorder
        self._sock = sock
        self.server: asyncio.Server | None = None
        self.sessions: set[Session] = set()
        self._cancel_keys: dict[int, tuple[int, Resource, int, int]] = {}
        self._catalogs: dict[str, Catalog] = {}
        self._plans: dict[str, dict[bytes, Any]] = {}  # resource -> RowDescription -> plan
        self._scram_cache: OrderedDict[str, tuple] = OrderedDict()
        self._ssl = server_context(config.tls) if config.tls else None
        self._handshakes: set[asyncio.Task] = set()
        self.generation = 0
        self.broker: Any = None  # AccessBroker when the config has shared access state
        self.oidc: Any = None
        if config.oidc:
            from hoopctl.access.oidc import OIDCAuthority

            self.oidc = OIDCAuthority(config.oidc)
        self._admin: asyncio.AbstractServer | None = None
        self.adopted: dict[tuple[str, int], asyncio.Server] = {}
        self.stats = Stats()
        self._metrics: Any = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.recorder is None:
            from hoopctl.audit.recorder import Recorder

            cfg = self.config
            self.recorder = Recorder(
                cfg.recordings_dir, cfg.fsync, cfg.fsync_interval_ms, key=cfg.recordings_key
            )
        try:
            await self._listen()
        except StartError:
            if self._own_recorder and self.recorder is not None:
                self.recorder.close()  # nothing recorded yet: no journal or lock file left
                self.recorder = None
            raise
        if self.config.access is not None:
            await self._start_access()

    async def _listen(self) -> None:
        host, port = self.config.listen_host, self.config.listen_port
        try:
            if self._sock is not None:
                self.server = await asyncio.start_server(self._accept, sock=self._sock)
            else:
                self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
        log.info("gateway listening on %s", ", ".join(str(s.getsockname()) for s in self.server.sockets))
        if self.config.metrics_listen is not None:
            host, port = self.config.metrics_listen
            port += self.worker_index
            try:
                self._metrics = serve_metrics(self, host, port)
            except OSError as exc:
                self.server.close()
                raise StartError(f"cannot serve metrics on {host}:{port}: {_reason(exc)}") from None

    async def _start_access(self) -> None:
        from hoopctl.access.admin import AdminAPI, serve_admin
        from hoopctl.access.broker import AccessBroker

        access = self.config.access
        self.broker = await asyncio.to_thread(lambda: AccessBroker.open(access, self.role_grants).start())
        api = AdminAPI(
            self.broker.service,
            approver_group=access.approver_group,
            roles=access.roles,
            identify_token=self._identify,
            adopt=self._adopt_from_thread,
            on_change=self.broker.state.refresh,
        )
        self._admin = await serve_admin(api, Path(access.admin_socket))
        log.info("admin API on %s", access.admin_socket)

    def role_grants(self, role: str) -> frozenset[str]:
        found = self.config.policy.roles.get(role)
        return found.grants if found is not None else frozenset()

    def _check_chain(self, credential: Any) -> None:
        """Each role along a token chain must grant no more than the one before it."""
        roles = credential.roles
        for parent, child in zip(roles, roles[1:], strict=False):
            if not self.role_grants(child) <= self.role_grants(parent):
                raise _Fatal(
                    "28P01", f"authentication failed: credential widens role {parent!r} to {child!r}"
                )
        if self.broker is not None and self.broker.is_revoked(credential):
            raise _Fatal("28P01", "authentication failed: credential revoked")

    def _identify(self, token: str, resource: str) -> str:
        """Who a token's holder is, for access requests on the admin API: its principal (the
        identity chain), not a name a nested agent gave itself."""
        cred = self.authority.authenticate("", token, resource=resource, client_ip="127.0.0.1")
        try:
            self._check_chain(cred)  # revoked, or widening its role: no requests either
        except _Fatal as exc:
            raise AuthError(str(exc).removeprefix("authentication failed: ")) from None
        if cred.narrowed_in_place:
            raise AuthError(
                "a token narrowed without a name of its own gets no grants; ask with the token it came from"
            )
        return cred.principal

    # ------------------------------------------------------------ adopting tunnels

    async def adopt(self, listen_host: str, listen_port: int, target_host: str, target_port: int) -> str:
        """Serves a torn-down tunnel's address with the resource behind its target."""
        resource = next(
            (r for r in self.config.resources.values() if (r.host, r.port) == (target_host, target_port)),
            None,
        )
        if resource is None:
            raise ValueError(f"no resource at {target_host}:{target_port} on this gateway")
        key = (listen_host, listen_port)
        if key not in self.adopted:
            self.adopted[key] = await asyncio.start_server(
                functools.partial(self._accept, forced_resource=resource.name),
                listen_host,
                listen_port,
                reuse_address=True,
            )
            log.info("adopted %s:%d for resource %s", listen_host, listen_port, resource.name)
        return resource.name

    def _adopt_from_thread(self, req: dict[str, Any]) -> dict[str, Any]:
        loop = self._loop
        try:
            name = asyncio.run_coroutine_threadsafe(
                self.adopt(
                    str(req["listen_host"]),
                    int(req["listen_port"]),
                    str(req["target_host"]),
                    int(req["target_port"]),
                ),
                loop,
            ).result(15)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            return {"ok": False, "error": f"cannot adopt: {exc}"}
        return {"ok": True, "resource": name}

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def reload(self, config: GatewayConfig) -> None:
        """New policy and masking for every next statement; no connection dropped."""
        self.config = config
        self._plans.clear()
        if config.tls:
            self._ssl = server_context(config.tls)
        self.generation += 1
        for s in list(self.sessions):
            s.reload()
        log.info("configuration reloaded (generation %d)", self.generation)

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop accepting; wait for sessions to end, then end the rest."""
        if self.server is not None:
            self.server.close()
        for server in self.adopted.values():
            server.close()
        if self._admin is not None:
            self._admin.close()
        waiting = [s.done for s in self.sessions]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        for s in list(self.sessions):
            s.fatal("57P01", "terminating connection: the gateway is shutting down")
        for t in list(self._handshakes):
            t.cancel()
        for c in self._catalogs.values():
            c.close()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        try:
            if self.recorder is not None and self._own_recorder:
                self.recorder.close()
                self.recorder = None
        finally:
            if self._metrics is not None:
                self._metrics.shutdown()
                self._metrics.server_close()
                self._metrics = None

    # ------------------------------------------------------------ policy/masking plumbing

    def _masking_for(self, resource: str) -> Callable[[], Any]:
        def masking() -> Any:
            rules = getattr(self.config, "masking", None)
            if rules is None or not rules.active(resource):
                return None
            return rules

        return masking

    def _plan(self, resource: str) -> Callable[[bytes], Any]:
        """Masking plans per RowDescription, cached on its exact bytes (decoded only on a miss)
        until a reload, or until the catalog they took table names from expires."""

        def plan(raw: bytes) -> Any:
            catalog = self._catalogs.get(resource)
            if catalog is not None and catalog.stale():
                catalog.forget()
                self._plans.pop(resource, None)
            plans = self._plans.get(resource)
            if plans is None:
                plans = self._plans[resource] = {}
            masker = plans.get(raw, _MISS)
            if masker is not _MISS:
                return masker
            try:
                desc = pw.decode_backend(b"T", raw[5:])
            except pw.ProtocolError:
                desc = pw.RowDescription(())
            oids = frozenset(f.table_oid for f in desc.fields)
            if catalog is not None and not catalog.known(oids):
                if catalog.available():
                    return CatalogMiss(oids)
                # Without table and column names, field rules and aliased columns cannot be
                # checked: withhold the rows (fail closed); not cached, so it heals by itself.
                return RowMasker(
                    (),
                    True,
                    f"masking cannot be checked now: the catalog of {resource!r} is unreachable",
                    (),
                    hint="try again in a moment",
                )
            masking = self.config.masking
            masker = None
            if masking is not None:
                if catalog is not None:
                    masker = masking.plan(resource, _masking_fields(desc), catalog.name, catalog.column_name)
                else:
                    masker = masking.plan(resource, _masking_fields(desc), lambda oid: None)
            if len(plans) > 10000:
                plans.clear()
            plans[raw] = masker
            return masker

        return plan

    # ------------------------------------------------------------ per connection

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forced_resource: str | None = None
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handshakes.add(task)
        try:
            await asyncio.wait_for(self._handshake(reader, writer, forced_resource), HANDSHAKE_TIMEOUT_S)
        except _Fatal as exc:
            self.stats.refused_logins[exc.sqlstate] += 1
            self._send_fatal(writer, exc.sqlstate, str(exc))
        except pw.ProtocolError as exc:
            self.stats.refused_logins["08P01"] += 1
            self._send_fatal(writer, "08P01", f"protocol violation: {exc}")
        except TimeoutError:
            self.stats.refused_logins["08006"] += 1
            self._send_fatal(writer, "08006", "login timed out")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            log.info("client gone during login: %s", exc)
            writer.close()
        except asyncio.CancelledError:
            writer.close()
        except Exception:
            log.exception("login failed")
            self._send_fatal(writer, "XX000", "internal gateway error")
        finally:
            if task is not None:
                self._handshakes.discard(task)

    def _send_fatal(self, writer: asyncio.StreamWriter, sqlstate: str, message: str) -> None:
        log.info("connection refused: %s", message)
        try:
            writer.write(pw.ErrorResponse.make(sqlstate, message, severity="FATAL").encode())
        except Exception:  # noqa: S110 - already closed
            pass
        writer.close()

    async def _read(self, reader: asyncio.StreamReader, parser: pw.FrontendParser) -> Any:
        while True:
            msg = parser.next_message()
            if msg is not None:
                return msg
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("client closed the connection")
            parser.feed(data)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forced_resource: str | None = None
    ) -> None:
        cfg = self.config
        parser = pw.FrontendParser(cfg.max_message_size)
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "local"
        encrypted = False
        msg = await self._read(reader, parser)
        while isinstance(msg, pw.SSLRequest | pw.GSSENCRequest):
            if isinstance(msg, pw.SSLRequest) and self._ssl is not None and not encrypted:
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self._ssl)
                encrypted = True
            else:
                writer.write(b"N")
            msg = await self._read(reader, parser)
        if isinstance(msg, pw.CancelRequest):
            await self._cancel(msg)
            writer.close()
            return
        assert isinstance(msg, pw.StartupMessage)
        params = msg.params
        if cfg.tls is not None and cfg.tls.require and not encrypted:
            raise _Fatal("28000", "the gateway requires TLS (use sslmode=require)")
        if params.get("replication", "false").lower() not in ("false", "0", "no", "off"):
            raise _Fatal("28000", "replication connections are not allowed through the gateway")
        if params.get("options", "").strip():
            raise _Fatal("28000", "startup options are not allowed through the gateway (set them with SET)")
        encoding = params.get("client_encoding", "UTF8").upper().replace("-", "").replace("_", "")
        if encoding not in ("UTF8", "UNICODE"):
            raise _Fatal("22021", "the gateway only speaks UTF8 (client_encoding)")
        user = params["user"]
        # An adopted tunnel's address serves one resource, whatever database the client names.
        resource_name = forced_resource or params.get("database") or user
        resource = cfg.resources.get(resource_name)
        if resource is None:
            raise _Fatal("3D000", f"no resource named {resource_name!r} on this gateway")

        password = await self._authenticate_client(reader, writer, parser, user, encrypted)
        try:
            if self.oidc is not None and looks_like_jwt(password):
                credential = self.oidc.authenticate(password, resource=resource_name)
            else:
                credential = self.authority.authenticate(
                    user, password, resource=resource_name, client_ip=client_ip
                )
        except AuthError as exc:
            raise _Fatal("28P01", f"authentication failed: {exc}") from None
        self._check_chain(credential)

        forwarded = {k: params[k] for k in FORWARDED_PARAMS if k in params}
        forwarded["client_encoding"] = "UTF8"
        try:
            upstream = await open_upstream(resource, forwarded, cfg.max_message_size)
        except UpstreamError as exc:
            raise _Fatal(exc.sqlstate if exc.sqlstate.startswith("08") else "08001", str(exc)) from None

        try:
            recording = self.recorder.open_session(
                credential.identity, credential.chain, f"{client_ip}", resource_name, credential.role
            )
        except Exception as exc:  # no recording, no session (fail closed)
            upstream.writer.close()
            log.error("cannot open a session recording: %s", exc)
            raise _Fatal("58030", "the gateway cannot record this session, so it is refused") from None
        # Our own key: a cancel must come to us, and we decide which backend it reaches.
        pid = secrets.randbelow(2**31 - 1) + 1
        key = secrets.randbits(32) - 2**31
        out = [pw.Authentication.ok().encode()]
        out += [p.encode() for p in upstream.parameters]
        out += upstream.notices
        out.append(pw.BackendKeyData(pid, key).encode())
        out.append(pw.ReadyForQuery(upstream.status).encode())
        writer.write(b"".join(out))
        parser.authenticated()

        if resource.name not in self._catalogs:
            self._catalogs[resource.name] = Catalog(resource)
        ctx = SessionContext(
            resource=resource_name,
            credential=credential,
            recording=recording,
            policy=lambda: self.config.policy.session(
                credential.role, resource=resource_name, within=self._chain_grants(credential)
            ),
            masking=self._masking_for(resource_name),
            plan_masking=self._plan(resource_name),
            catalog=self._catalogs[resource.name],
            max_message_size=cfg.max_message_size,
            access=self.broker,
        )

        def closed(s: Session) -> None:
            with self.stats.lock:
                if s in self.sessions:
                    self.sessions.discard(s)
                    self.stats.session_ended(s)
            self._cancel_keys.pop(pid, None)

        session = Session(ctx, parser, writer.transport, upstream.writer.transport, closed)
        # The stream objects close their transport when collected: keep them with the session.
        session.streams = (reader, writer, upstream.reader, upstream.writer)
        self.sessions.add(session)
        self.stats.sessions[resource_name] += 1
        if upstream.key is not None:
            self._cancel_keys[pid] = (key, resource, upstream.key.pid, upstream.key.key)
        log.info(
            "session for %s on %s (role %s) from %s",
            credential.identity,
            resource_name,
            credential.role,
            client_ip,
        )
        # Bytes the stream readers already hold would be lost once the protocols switch.
        session.start(parser.take_buffer() + _drain(reader), upstream.leftover + _drain(upstream.reader))

    def _chain_grants(self, credential: Any) -> frozenset[str]:
        """What every role along the token chain grants (the child never exceeds its parents)."""
        grants = [self.role_grants(r) for r in credential.roles]
        return frozenset.intersection(*grants) if grants else frozenset()

    async def _authenticate_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: pw.FrontendParser,
        user: str,
        encrypted: bool,
    ) -> str:
        """Runs SCRAM (token body as user) or cleartext (TLS only); returns the proven password."""
        scram_password = self.authority.scram_password(user)
        if scram_password is None:
            if not encrypted:
                raise _Fatal(
                    "28000",
                    "without TLS the gateway only accepts SCRAM: user = token body, password = token signature",
                )
            writer.write(pw.Authentication(pw.AuthCode.CLEARTEXT).encode())
            msg = await self._read(reader, parser)
            return msg.password()
        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        auth_info = self._scram_info(mechanism, user, scram_password)
        server = mechanism.make_server(lambda _username: auth_info)
        writer.write(pw.Authentication.sasl(["SCRAM-SHA-256"]).encode())
        try:
            mech, first = (await self._read(reader, parser)).sasl_initial()
            if mech != "SCRAM-SHA-256":
                raise _Fatal("28000", f"unsupported SASL mechanism {mech!r}")
            _set_client_first(server, first.decode())
            writer.write(
                pw.Authentication(pw.AuthCode.SASL_CONTINUE, server.get_server_first().encode()).encode()
            )
            final = await self._read(reader, parser)
            server.set_client_final(final.data.decode())
            writer.write(
                pw.Authentication(pw.AuthCode.SASL_FINAL, server.get_server_final().encode()).encode()
            )
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise _Fatal("28P01", f"authentication failed: {exc}") from None
        return scram_password

    def _scram_info(self, mechanism: scramp.ScramMechanism, user: str, password: str) -> tuple:
        # PBKDF2 costs milliseconds: derive once per token, like a stored verifier.
        info = self._scram_cache.get(user)
        if info is None:
            info = mechanism.make_auth_info(password, iteration_count=SCRAM_ITERATIONS)
            self._scram_cache[user] = info
            if len(self._scram_cache) > 1024:
                self._scram_cache.popitem(last=False)
        return info

    async def _cancel(self, msg: pw.CancelRequest) -> None:
        entry = self._cancel_keys.get(msg.pid)
        if entry is None:
            return
        key, resource, up_pid, up_key = entry
        if not hmac.compare_digest(
            key.to_bytes(4, "big", signed=True), msg.key.to_bytes(4, "big", signed=True)
        ):
            return
        await send_cancel(resource, up_pid, up_key)


def _drain(reader: asyncio.StreamReader) -> bytes:
    buffered = getattr(reader, "_buffer", None)
    if not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data


def _set_client_first(server: scramp.ScramServer, client_first: str) -> None:
    """Feeds the client-first message; libpq sends an empty user name (n=), which scramp refuses.

    PostgreSQL ignores the SCRAM user name (the startup packet names the user), so a
    placeholder is parsed and the client's exact message is put back for the proof.
    """
    head, sep, bare = client_first.partition(",,")
    if sep and bare.startswith("n=,"):
        server.set_client_first(f"{head},,n=*,{bare[3:]}")
        server.client_first_bare = bare
        return
    server.set_client_first(client_first)


def _masking_fields(desc: pw.RowDescription) -> list[Any]:
    try:
        from hoopctl.gateway.masking import Field
    except ImportError:  # masking not installed: plain objects with the same attributes
        return list(desc.fields)
    return [Field(f.name, f.table_oid, f.column, f.type_oid, f.format) for f in desc.fields]


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run(
    config: GatewayConfig,
    reload_config: Callable[[], GatewayConfig],
    drain_timeout: float,
    sock: socket.socket | None = None,
    worker_index: int = 0,
) -> None:
    gw = Gateway(config, sock=sock, worker_index=worker_index)
    await gw.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_hup() -> None:
        try:
            gw.reload(reload_config())
        except Exception as exc:  # a bad new config keeps the old one running
            log.error("reload refused, keeping the running configuration: %s", exc)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("draining %d sessions", len(gw.sessions))
    await gw.drain(drain_timeout)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that sibling worker processes can bind too (SO_REUSEPORT)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def serve(config: GatewayConfig | str | Path, *, drain_timeout: float = 30.0) -> None:
    """Runs the gateway until SIGTERM (drains); SIGHUP reloads the config file.

    With `limits.workers` > 1, that many processes share the port (SO_REUSEPORT);
    the parent passes SIGTERM and SIGHUP on. A cancel request reaches the right
    backend only when the kernel hands it to the worker holding that session.
    """
    from hoopctl.gateway.config import load_config

    if not isinstance(config, GatewayConfig):
        config = load_config(config)
    source = config.source

    def reload_config() -> GatewayConfig:
        if source is None:
            raise RuntimeError("no config file to reload from")
        return load_config(source)

    workers = max(1, int(getattr(config, "workers", 1) or 1))
    if workers == 1:
        _install_uvloop()
        asyncio.run(_run(config, reload_config, drain_timeout))
        return
    _check_addresses(config, workers)
    children = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                _install_uvloop()
                sock = reuse_port_socket(config.listen_host, config.listen_port)
                asyncio.run(_run(config, reload_config, drain_timeout, sock, index))
            except StartError as exc:
                log.error("worker %d cannot start: %s", index, exc)
                code = 1
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    failed = []
    running = set(children)
    while running:
        try:
            pid, status = os.wait()
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        running.discard(pid)
        if os.waitstatus_to_exitcode(status) != 0 and not failed:
            failed.append(pid)
            forward(signal.SIGTERM, None)  # one worker down: stop the others, say so
    if failed:
        raise StartError(f"a worker (pid {failed[0]}) failed; the others were stopped (see the log)")


def _check_addresses(config: GatewayConfig, workers: int) -> None:
    """Bind what the workers will bind, once, before forking: an address in use is one
    line from the parent, not a traceback from each worker."""
    try:
        reuse_port_socket(config.listen_host, config.listen_port).close()
    except OSError as exc:
        raise StartError(
            f"cannot listen on {config.listen_host}:{config.listen_port}: {_reason(exc)}"
        ) from None
    if config.metrics_listen is not None:
        host, port = config.metrics_listen
        for index in range(workers):
            with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port + index))
                except OSError as exc:
                    raise StartError(
                        f"cannot serve metrics on {host}:{port + index}: {_reason(exc)}"
                    ) from None
