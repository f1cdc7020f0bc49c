"""Stray tunnels from a process snapshot: ssh forwards, ControlMaster muxes, autossh, socat/ncat relays.

Pure classification: a `Snapshot` in, `TunnelFinding`s out. What is recognised:

- ssh clients with -L/-R/-D/-w or the same as `-o LocalForward=...` (argv parsed like ssh's own
  getopt: combined flags, attached or separate values, bracketed IPv6, options after the
  destination);
- forwards that never appear in argv (ssh_config, `ssh -O forward`): LISTEN sockets of an ssh
  process that no argv forward explains;
- ControlMaster muxes (`ssh: PATH [mux]`, kept alive by ControlPersist);
- autossh, and any wrapper whose own command line runs ssh, when its child ssh forwards;
- socat and ncat relays (a listening address plus a target);
- sshd session processes that carry forwards: ESTABLISHED sockets to something other than the
  client (-L/-D), LISTEN sockets (-R).

When the client and the sshd of one tunnel are both on this host, each side's finding borrows
what only the other side knows (the target of a config-file forward, the target behind an -R).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hoopctl.detect.procsnap import Endpoint, Proc, Snapshot, Sock, is_ip, reparented

KINDS = ("local", "remote", "dynamic", "tun", "mux", "autossh", "socat", "ncat", "sshd-forward")

# ssh(1) options: those taking a value, and plain flags. Anything else is skipped like ssh would
# refuse it; we only read, so being lenient costs nothing.
_SSH_VALUE_OPTS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_SSH_FLAG_OPTS = frozenset("46AaCfGgKkMNnqsTtVvXxYy")
_MUX_TITLE = re.compile(r"^ssh: (?P<path>.+) \[mux\]$")
_SSHD_SESSION = re.compile(r"^sshd(?:-session)?: (?P<who>\S+?)(?:@(?P<tty>\S+))?(?: \[(?P<tag>\w+)\])?$")
_SSH_WORD = re.compile(r"(?:^|[\s/;&|(`'\"])(?:auto)?ssh(?:\s|$)")
_SHELLISH = frozenset({"sh", "bash", "dash", "zsh", "ksh", "python", "python3", "perl", "timeout", "nohup"})


# --------------------------------------------------------------------------- protected resources


@dataclass(frozen=True)
class Protected:
    """A protected resource: a host name, an address or a CIDR, with a port (None = any port)."""

    spec: str
    host: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def matches(self, host: str | None, port: int | None) -> bool:
        if host is None or (self.port is not None and port != self.port):
            return False
        host = host.strip("[]").lower()
        candidates = {host}
        if host == "localhost":
            candidates |= {"127.0.0.1", "::1"}
        for cand in candidates:
            if self.network is not None and is_ip(cand):
                if ipaddress.ip_address(cand) in self.network:
                    return True
            elif self.host is not None and cand == self.host:
                return True
        return False


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_protected(spec: str) -> Protected:
    """Parse `HOST:PORT`, `[V6]:PORT`, `CIDR:PORT` (PORT may be `*`). Raises ValueError on bad input."""
    text = spec.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"protected resource {spec!r}: expected [ADDRESS]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"protected resource {spec!r}: expected HOST:PORT (or CIDR:PORT)")
    if port_text == "*":
        port = None
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"protected resource {spec!r}: port must be 1-65535 or *")
    if host.lower() == "localhost":
        # loopback either way: a name on the sshd side that means "this host"
        return Protected(spec, "localhost", ipaddress.ip_network("127.0.0.0/8"), port)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(
                f"protected resource {spec!r}: {host!r} is not a host, address or CIDR"
            ) from None
        return Protected(spec, host.lower(), None, port)
    return Protected(spec, None, network, port)


def _any_protected(protected: Sequence[Protected], host: str | None, port: int | None) -> bool:
    return any(p.matches(host, port) for p in protected)


# --------------------------------------------------------------------------- ssh argv


@dataclass(frozen=True)
class Forward:
    """One forward as ssh was asked for it. `listen_host` None means ssh's default (loopback)."""

    kind: str  # local | remote | dynamic | tun
    spec: str
    listen_host: str | None = None
    listen_port: int | None = None
    listen_path: str | None = None
    target_host: str | None = None
    target_port: int | None = None
    target_path: str | None = None

    @property
    def listen_text(self) -> str:
        if self.kind == "tun":
            return f"tun:{self.listen_host or 'any'}"
        if self.listen_path:
            return self.listen_path
        return _hostport(self.listen_host or "localhost", self.listen_port)

    @property
    def target_text(self) -> str | None:
        if self.kind == "tun":
            return f"tun:{self.target_host or 'any'}"
        if self.target_path:
            return self.target_path
        if self.target_host is None:
            return None
        return _hostport(self.target_host, self.target_port)


@dataclass(frozen=True)
class SshArgs:
    """What an ssh command line asks for."""

    destination: str | None
    forwards: tuple[Forward, ...]
    options: Mapping[str, tuple[str, ...]]  # lower-case keyword -> values, in order
    flags: frozenset[str]
    control_command: str | None = None
    control_path: str | None = None
    config_file: str | None = None
    port: int | None = None

    @property
    def master(self) -> bool:
        if "M" in self.flags:
            return True
        values = self.options.get("controlmaster", ())
        return bool(values) and values[0].lower() in {"yes", "auto", "ask", "autoask"}


def _hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port is not None else shown


def _fields(spec: str) -> list[tuple[str, bool]]:
    """Split a forward spec on ':' (or '/' in the old IPv6 syntax); [..] is literal. (field, bracketed)."""
    slashed = spec.split("/")
    if (
        "[" not in spec
        and not spec.startswith("/")
        and len(slashed) in (3, 4)
        and slashed[-1].isdigit()
        and slashed[-3].isdigit()
    ):
        return [(f, False) for f in slashed]
    out: list[tuple[str, bool]] = []
    cur, bracketed, i = "", False, 0
    while i < len(spec):
        ch = spec[i]
        if ch == "[" and cur == "" and not bracketed:
            end = spec.find("]", i)
            if end < 0:
                raise ValueError("unclosed [")
            cur, bracketed, i = spec[i + 1 : end], True, end + 1
            continue
        if ch == ":":
            out.append((cur, bracketed))
            cur, bracketed = "", False
        else:
            cur += ch
        i += 1
    out.append((cur, bracketed))
    return out


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) < 65536 else None


def _bind(text: str) -> str:
    return "*" if text in ("", "*") else text


def parse_forward(kind: str, spec: str) -> Forward | None:
    """Parse one -L/-R/-D spec (or a LocalForward/RemoteForward/DynamicForward value).

    Returns None when ssh itself would refuse the spec.
    """
    spec = spec.strip()
    if not spec:
        return None
    if kind in ("local", "remote") and " " in spec.strip():
        # config syntax: "LISTEN TARGET"
        spec = ":".join(spec.split())
    try:
        fields = _fields(spec)
    except ValueError:
        return None

    def path(i: int) -> bool:
        return not fields[i][1] and fields[i][0].startswith("/")

    f = [x for x, _ in fields]
    n = len(f)
    if kind == "dynamic":
        if n == 1 and _port(f[0]) is not None:
            return Forward(kind, spec, listen_port=_port(f[0]))
        if n == 2 and _port(f[1]) is not None:
            return Forward(kind, spec, listen_host=_bind(f[0]), listen_port=_port(f[1]))
        return None
    if n == 4:
        return Forward(kind, spec, _bind(f[0]), _port(f[1]), None, f[2], _port(f[3]))
    if n == 3:
        if path(2):
            return Forward(kind, spec, _bind(f[0]), _port(f[1]), target_path=f[2])
        if path(0):
            return Forward(kind, spec, listen_path=f[0], target_host=f[1], target_port=_port(f[2]))
        return Forward(kind, spec, None, _port(f[0]), None, f[1], _port(f[2]))
    if n == 2:
        if path(1):
            if path(0):
                return Forward(kind, spec, listen_path=f[0], target_path=f[1])
            return Forward(kind, spec, listen_port=_port(f[0]), target_path=f[1])
        if kind == "remote" and _port(f[1]) is not None:  # -R [bind:]port: reverse SOCKS
            return Forward(kind, spec, listen_host=_bind(f[0]), listen_port=_port(f[1]))
        return None
    if n == 1 and kind == "remote" and _port(f[0]) is not None:
        return Forward(kind, spec, listen_port=_port(f[0]))
    return None


def _split_option(text: str) -> tuple[str, str] | None:
    m = re.match(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)$", text)
    if not m:
        return None
    value = m.group(2).strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return m.group(1).lower(), value


def _tun_forward(spec: str) -> Forward:
    local, _, remote = spec.partition(":")
    return Forward("tun", spec, listen_host=local or "any", target_host=remote or "any")


def parse_ssh_argv(argv: Sequence[str]) -> SshArgs:
    """Read an ssh command line the way ssh's getopt does (options may follow the destination)."""
    forwards: list[Forward] = []
    options: dict[str, list[str]] = {}
    flags: set[str] = set()
    values: dict[str, str] = {}
    destination: str | None = None
    no_more_options = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not no_more_options and arg == "--":
            no_more_options = True
            continue
        if no_more_options or not arg.startswith("-") or arg == "-":
            if destination is None:
                destination = arg
                continue
            break  # the remote command starts here
        j = 1
        while j < len(arg):
            ch = arg[j]
            if ch in _SSH_VALUE_OPTS:
                value = arg[j + 1 :]
                if not value:
                    if i >= len(argv):
                        break
                    value = argv[i]
                    i += 1
                _ssh_option(ch, value, forwards, options, values)
                break
            if ch in _SSH_FLAG_OPTS:
                flags.add(ch)
            j += 1
    for key, kind in (("localforward", "local"), ("remoteforward", "remote"), ("dynamicforward", "dynamic")):
        for value in options.get(key, ()):
            fwd = parse_forward(kind, value)
            if fwd is not None:
                forwards.append(fwd)
    tunnel = options.get("tunnel", ())
    if tunnel and tunnel[0].lower() in {"yes", "point-to-point", "ethernet"} and "w" not in values:
        device = options.get("tunneldevice", ("any:any",))[0]
        forwards.append(_tun_forward(device))
    control_path = values.get("S") or (options.get("controlpath") or (None,))[0]
    port_text = values.get("p") or (options.get("port") or ("",))[0]
    return SshArgs(
        destination=destination,
        forwards=tuple(forwards),
        options={k: tuple(v) for k, v in options.items()},
        flags=frozenset(flags),
        control_command=values.get("O"),
        control_path=control_path,
        config_file=values.get("F"),
        port=_port(port_text),
    )


def _ssh_option(
    ch: str, value: str, forwards: list[Forward], options: dict[str, list[str]], values: dict[str, str]
) -> None:
    values[ch] = value
    kind = {"L": "local", "R": "remote", "D": "dynamic"}.get(ch)
    if kind:
        fwd = parse_forward(kind, value)
        if fwd is not None:
            forwards.append(fwd)
    elif ch == "w":
        forwards.append(_tun_forward(value))
    elif ch == "o":
        parsed = _split_option(value)
        if parsed:
            options.setdefault(parsed[0], []).append(parsed[1])


def destination_host(destination: str | None) -> str | None:
    """The host alias of an ssh destination (`user@host`, `ssh://user@host:port`), as Host matches it."""
    if not destination:
        return None
    text = destination
    uri = text.startswith("ssh://")
    if uri:
        text = text[len("ssh://") :]
    text = text.rpartition("@")[2]
    if uri:
        if text.startswith("["):
            text = text[1 : text.find("]")] if "]" in text else text[1:]
        else:
            text = text.partition(":")[0]
    return text or None


def _host_block_matches(patterns: Sequence[str], host: str) -> bool:
    host = host.lower()
    matched = False
    for pattern in patterns:
        for p in pattern.split(","):
            negated = p.startswith("!")
            p = p[1:] if negated else p
            if fnmatch.fnmatchcase(host, p.lower()):
                if negated:
                    return False
                matched = True
    return matched


def forwards_from_ssh_config(text: str, host: str | None) -> list[Forward]:
    """The forwards an ssh_config text gives `host` (its alias as typed): LocalForward,
    RemoteForward and DynamicForward lines before any Host/Match, or in Host blocks matching it.

    Match blocks are skipped (their conditions need the live environment) and so are Include
    lines (the caller reads included files and passes them as more texts). A ClearAllForwardings
    yes that applies ends the list empty, as ssh does.
    """
    out: list[Forward] = []
    active = True
    cleared = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z]+)\s*(?:=\s*|\s+)(.*)$", line)
        if not m:
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if key == "host":
            active = host is not None and _host_block_matches(value.split(), host)
            continue
        if key == "match":
            active = value.strip().lower() == "all"
            continue
        if not active:
            continue
        if key == "clearallforwardings" and value.lower() == "yes":
            cleared = True
        kind = {"localforward": "local", "remoteforward": "remote", "dynamicforward": "dynamic"}.get(key)
        if kind:
            value = value.split("#", 1)[0].strip().strip('"')
            fwd = parse_forward(kind, value)
            if fwd is not None:
                out.append(fwd)
    return [] if cleared else out


# --------------------------------------------------------------------------- socat / ncat argv

_SOCAT_LISTEN = re.compile(r"^(?:TCP[46]?|UDP[46]?|SCTP[46]?|OPENSSL|SSL)-(?:LISTEN|L)(?::|$)", re.I)
_SOCAT_TARGET = re.compile(
    r"^(?:TCP[46]?|TCP[46]?-CONNECT|UDP[46]?|UDP[46]?-CONNECT|OPENSSL|SSL|OPENSSL-CONNECT)"
    r":(?P<host>\[[^\]]+\]|[^:,]+):(?P<port>[^,]+)",
    re.I,
)
_SOCAT_PROXY = re.compile(
    r"^(?:SOCKS4A?|PROXY|PROXY-CONNECT):[^:,]+:(?P<host>\[[^\]]+\]|[^:,]+):(?P<port>[^,]+)", re.I
)
_SOCAT_UNIX = re.compile(r"^(?:UNIX-CONNECT|UNIX-CLIENT|UNIX|LOCAL):(?P<path>[^,]+)", re.I)
_SOCAT_VALUE_OPTS = frozenset({"-b", "-T", "-t", "-lf", "-lp", "-L", "-W"})


@dataclass(frozen=True)
class Relay:
    """A socat/ncat relay: where it listens, where it sends."""

    listen_host: str | None
    listen_port: int | None
    target_host: str | None
    target_port: int | None
    target_path: str | None = None

    @property
    def target_text(self) -> str | None:
        if self.target_path:
            return self.target_path
        if self.target_host is None:
            return None
        return _hostport(self.target_host, self.target_port)


def _socat_target(address: str) -> tuple[str | None, int | None, str | None]:
    for pattern in (_SOCAT_TARGET, _SOCAT_PROXY):
        m = pattern.match(address)
        if m:
            return m.group("host").strip("[]"), _port(m.group("port")), None
    m = _SOCAT_UNIX.match(address)
    if m:
        return None, None, m.group("path")
    if re.match(r"^(?:EXEC|SYSTEM):", address, re.I):
        host, port = _target_in_command(address.split(":", 1)[1].split(",", 1)[0])
        return host, port, None
    return None, None, None


def parse_socat_argv(argv: Sequence[str]) -> Relay | None:
    """A socat with one listening address and one connecting address, else None."""
    addresses: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("-") and len(arg) > 1 and not addresses:
            if arg in _SOCAT_VALUE_OPTS:
                i += 1
            continue
        addresses.append(arg)
    if len(addresses) != 2:
        return None
    listen = [a for a in addresses if _SOCAT_LISTEN.match(a)]
    if len(listen) != 1:
        return None
    other = addresses[1] if addresses[0] is listen[0] else addresses[0]
    head, *opts = listen[0].split(",")
    _, _, port_text = head.partition(":")
    bind = None
    for opt in opts:
        key, _, val = opt.partition("=")
        if key.lower() == "bind":
            bind = val.strip("[]")
    host, port, path = _socat_target(other)
    if host is None and path is None:
        return None
    return Relay(bind, _port(port_text), host, port, path)


def _target_in_command(command: str) -> tuple[str | None, int | None]:
    """`nc HOST PORT`, `ncat HOST PORT`, `socat - TCP:HOST:PORT` inside an exec string."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None, None
    if not words:
        return None, None
    prog = os.path.basename(words[0])
    if prog == "socat":
        for w in words[1:]:
            host, port, _ = _socat_target(w)
            if host:
                return host, port
        return None, None
    if prog in {"nc", "ncat", "netcat", "nc.openbsd", "nc.traditional", "telnet"}:
        positional = [w for w in words[1:] if not w.startswith("-")]
        if len(positional) >= 2 and _port(positional[-1]) is not None:
            return positional[-2], _port(positional[-1])
    return None, None


_NCAT_VALUE_OPTS = frozenset(
    [
        "-p",
        "-s",
        "-c",
        "-e",
        "-i",
        "-w",
        "-x",
        "-o",
        "-d",
        "-m",
        "-g",
        "-G",
        "-q",
        "--sh-exec",
        "--exec",
        "--lua-exec",
        "--source-port",
        "--source",
        "--idle-timeout",
        "--wait",
        "--proxy",
        "--proxy-type",
        "--proxy-auth",
        "--output",
        "--hex-dump",
        "--delay",
        "--max-conns",
        "--allow",
        "--allowfile",
        "--deny",
        "--denyfile",
        "--ssl-cert",
        "--ssl-key",
        "--ssl-trustfile",
        "--ssl-ciphers",
    ]
)


def parse_ncat_argv(argv: Sequence[str]) -> Relay | None:
    """An ncat/nc in listen mode that execs a connection somewhere, else None."""
    listen = False
    values: dict[str, str] = {}
    positional: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("--"):
            name, eq, val = arg.partition("=")
            if name == "--listen":
                listen = True
            elif name in _NCAT_VALUE_OPTS:
                if not eq and i < len(argv):
                    val = argv[i]
                    i += 1
                values[name] = val
            continue
        if arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                opt = "-" + arg[j]
                if opt == "-l":
                    listen = True
                elif opt in _NCAT_VALUE_OPTS:
                    val = arg[j + 1 :]
                    if not val and i < len(argv):
                        val = argv[i]
                        i += 1
                    values[opt] = val
                    break
                j += 1
            continue
        positional.append(arg)
    if not listen:
        return None
    command = values.get("--sh-exec") or values.get("-c") or values.get("--exec") or values.get("-e")
    if not command:
        return None
    host, port = _target_in_command(command)
    if host is None:
        return None
    listen_port = _port(values.get("-p", "") or values.get("--source-port", ""))
    bind = None
    if positional and _port(positional[-1]) is not None and listen_port is None:
        listen_port = _port(positional[-1])
        positional = positional[:-1]
    if positional:
        bind = positional[0]
    return Relay(bind, listen_port, host, port)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class TunnelFinding:
    """One tunnel or relay. `listen` are addresses as seen in sockets when known, else as asked.

    `peer` is the other end of the ssh connection (destination for a client, client address for
    sshd); `via` a related process (autossh's ssh child, the other side's pid); `source` tells
    where the forward was read from (argv, option, sockets, mux, wrapper, sshd).
    """

    pid: int
    user: str
    kind: str
    listen: tuple[str, ...]
    listen_port: int | None
    target: str | None
    age: int
    ppid: int
    reparented: bool
    protected: bool
    source: str
    command: str
    peer: str | None = None
    via: int | None = None


def _basename(proc: Proc) -> str:
    return os.path.basename(proc.cmdline[0]) if proc.cmdline else proc.name


def _title(proc: Proc) -> str:
    # a rewritten process title (ssh mux, sshd sessions) comes back padded or split on spaces
    return " ".join(a for a in proc.cmdline if a)


def _is_ssh_client(proc: Proc) -> bool:
    return proc.name == "ssh" or (_basename(proc) == "ssh" and proc.name not in ("sshd", "sshd-session"))


def _sshd_session(proc: Proc) -> re.Match[str] | None:
    if proc.name not in ("sshd", "sshd-session"):
        return None
    m = _SSHD_SESSION.match(_title(proc))
    if m is None or m.group("tag") is not None:  # [priv], [listener], [preauth], [net], [accepted]
        return None
    return m


def _listens_on(proc: Proc, port: int | None) -> tuple[str, ...]:
    return tuple(sorted({str(s.laddr) for s in proc.listens() if s.laddr.port == port}))


@dataclass
class _Pairs:
    """ssh client <-> sshd session pairs on this host, found by matching their TCP connection."""

    client_to_sshd: dict[int, int]
    sshd_to_client: dict[int, int]
    session_sock: dict[int, Sock]  # sshd pid -> its client connection


def _pair_sessions(snapshot: Snapshot, sessions: Sequence[Proc], clients: Sequence[Proc]) -> _Pairs:
    daemon_ports = {
        s.laddr.port
        for p in snapshot.procs.values()
        if p.name in ("sshd", "sshd-session") and _sshd_session(p) is None
        for s in p.listens()
    }
    session_sock: dict[int, Sock] = {}
    for proc in sessions:
        est = proc.established()
        own = {s.laddr.port for s in proc.listens()}
        pick = [s for s in est if s.laddr.port in daemon_ports and s.laddr.port not in own]
        if not pick:
            pick = sorted((s for s in est if s.laddr.port not in own), key=lambda s: s.fd)
        if pick:
            session_sock[proc.pid] = pick[0]
    by_conn = {(s.raddr, s.laddr): pid for pid, s in session_sock.items()}
    c2s: dict[int, int] = {}
    for proc in clients:
        for s in proc.established():
            pid = by_conn.get((s.laddr, s.raddr))
            if pid is not None:
                c2s[proc.pid] = pid
    return _Pairs(c2s, {v: k for k, v in c2s.items()}, session_sock)


def _sshd_targets(proc: Proc, session: Sock | None) -> list[Endpoint]:
    """Outbound connections of an sshd session: not its client, not accepted on its own -R listeners."""
    own = {s.laddr.port for s in proc.listens()}
    out: list[Endpoint] = []
    for s in proc.established():
        if session is not None and s.laddr == session.laddr and s.raddr == session.raddr:
            continue
        if s.laddr.port in own or s.raddr is None:
            continue
        if s.raddr not in out:
            out.append(s.raddr)
    return out


class _Builder:
    def __init__(self, snapshot: Snapshot, protected: Sequence[Protected], subreapers: frozenset[str]):
        self.snap = snapshot
        self.protected = protected
        self.subreapers = subreapers
        self.out: list[TunnelFinding] = []

    def add(
        self,
        proc: Proc,
        kind: str,
        listen: Iterable[str],
        listen_port: int | None,
        target_host: str | None,
        target_port: int | None,
        target_text: str | None,
        source: str,
        *,
        peer: str | None = None,
        via: int | None = None,
        extra_targets: Sequence[Endpoint] = (),
    ) -> None:
        protected = _any_protected(self.protected, target_host, target_port) or any(
            _any_protected(self.protected, e.ip, e.port) for e in extra_targets
        )
        self.out.append(
            TunnelFinding(
                pid=proc.pid,
                user=proc.user,
                kind=kind,
                listen=tuple(listen),
                listen_port=listen_port,
                target=target_text,
                age=self.snap.age(proc),
                ppid=proc.ppid,
                reparented=reparented(self.snap, proc, self.subreapers),
                protected=protected,
                source=source,
                command=proc.name,
                peer=peer,
                via=via,
            )
        )


def classify_tunnels(
    snapshot: Snapshot,
    protected: Sequence[Protected] = (),
    *,
    subreapers: frozenset[str] = frozenset(),
    ssh_configs: Mapping[int, Sequence[str]] | None = None,
) -> list[TunnelFinding]:
    """Every tunnel and relay in `snapshot`, sorted by pid then kind.

    `ssh_configs` maps an ssh client's pid to the ssh_config texts it read (see
    `hoopctl.host.procs.read_ssh_configs`): a config forward then gets its target, once a LISTEN
    socket of that client confirms it (local, dynamic) or as configured (remote).
    """
    b = _Builder(snapshot, protected, subreapers)
    procs = list(snapshot.procs.values())
    clients = [p for p in procs if _is_ssh_client(p)]
    sessions = [p for p in procs if _sshd_session(p) is not None]
    pairs = _pair_sessions(snapshot, sessions, clients)
    parsed: dict[int, SshArgs] = {}
    for proc in clients:
        if not _MUX_TITLE.match(_title(proc)):
            parsed[proc.pid] = parse_ssh_argv(proc.cmdline)
    from_config = {
        pid: _config_forwards(parsed[pid], texts)
        for pid, texts in (ssh_configs or {}).items()
        if pid in parsed
    }
    every: dict[int, tuple[Forward, ...]] = {}
    for proc in clients:
        every[proc.pid] = _ssh_client_findings(
            b, proc, parsed.get(proc.pid), pairs, from_config.get(proc.pid, ())
        )
    for proc in sessions:
        _sshd_findings(b, proc, pairs, every)
    for proc in procs:
        _wrapper_findings(b, proc, parsed)
        _relay_findings(b, proc)
    return sorted(b.out, key=lambda f: (f.pid, f.kind, f.listen, f.target or ""))


def _peer_of(args: SshArgs | None) -> str | None:
    if args is None or args.destination is None:
        return None
    return args.destination


def _config_forwards(args: SshArgs, texts: Sequence[str]) -> list[Forward]:
    cleared = args.options.get("clearallforwardings", ("no",))[0].lower() == "yes"
    if cleared:
        return []
    host = destination_host(args.destination)
    return [f for text in texts for f in forwards_from_ssh_config(text, host)]


def _ssh_client_findings(
    b: _Builder, proc: Proc, args: SshArgs | None, pairs: _Pairs, config: Sequence[Forward] = ()
) -> tuple[Forward, ...]:
    """Findings of one ssh client; returns the forwards it is known to carry (argv + confirmed config)."""
    sshd_pid = pairs.client_to_sshd.get(proc.pid)
    seen_targets: list[Endpoint] = []
    if sshd_pid is not None:
        sshd = b.snap.procs[sshd_pid]
        seen_targets = _sshd_targets(sshd, pairs.session_sock.get(sshd_pid))
    mux = _MUX_TITLE.match(_title(proc))
    if mux is not None:
        listens = sorted({str(s.laddr) for s in proc.listens()})
        ports = sorted({s.laddr.port for s in proc.listens()})
        target = str(seen_targets[0]) if len(seen_targets) == 1 else None
        b.add(
            proc,
            "mux",
            [mux.group("path"), *listens],
            ports[0] if ports else None,
            seen_targets[0].ip if len(seen_targets) == 1 else None,
            seen_targets[0].port if len(seen_targets) == 1 else None,
            target,
            "mux",
            via=sshd_pid,
            extra_targets=seen_targets,
        )
        return ()
    if args is None or args.control_command is not None:
        return ()  # `ssh -O ...` talks to a master and exits: the master is what to report
    peer = _peer_of(args)
    explained: set[int] = set()
    listening = {s.laddr.port for s in proc.listens()}
    carried = list(args.forwards)
    taken = {f.listen_port for f in args.forwards if f.kind in ("local", "dynamic")}
    for fwd in config:
        if fwd.kind == "remote":
            carried.append(fwd)
        elif fwd.listen_port in listening and fwd.listen_port not in taken:
            # a config forward counts once its socket shows (ssh may have failed to bind it)
            carried.append(fwd)
            taken.add(fwd.listen_port)
    for n, fwd in enumerate(carried):
        if fwd.kind in ("local", "dynamic"):
            seen = _listens_on(proc, fwd.listen_port) if fwd.listen_port is not None else ()
            listen = seen or (fwd.listen_text,)
            if fwd.listen_port is not None:
                explained.add(fwd.listen_port)
        elif fwd.kind == "remote":
            listen = (f"remote:{fwd.listen_text}",)
        else:
            listen = (fwd.listen_text,)
        source = "argv" if n < len(args.forwards) else "config"
        extra = seen_targets if fwd.kind == "dynamic" else ()
        b.add(
            proc,
            fwd.kind,
            listen,
            fwd.listen_port,
            fwd.target_host,
            fwd.target_port,
            fwd.target_text,
            source,
            peer=peer,
            via=sshd_pid,
            extra_targets=extra,
        )
    if args.master and ("controlpersist" in args.options or "f" in args.flags):
        b.add(
            proc, "mux", [args.control_path or "?"], None, None, None, None, "argv", peer=peer, via=sshd_pid
        )
    # Forwards from ssh_config or added through the mux: only their LISTEN sockets show.
    unexplained: dict[int, list[str]] = {}
    for s in proc.listens():
        if s.laddr.port not in explained:
            unexplained.setdefault(s.laddr.port, []).append(str(s.laddr))
    for port, addrs in sorted(unexplained.items()):
        one = seen_targets[0] if len(seen_targets) == 1 and len(unexplained) == 1 else None
        b.add(
            proc,
            "local",
            sorted(set(addrs)),
            port,
            one.ip if one else None,
            one.port if one else None,
            str(one) if one else None,
            "sockets",
            peer=peer,
            via=sshd_pid,
            extra_targets=seen_targets if len(unexplained) == 1 else (),
        )
    return tuple(carried)


def _sshd_findings(
    b: _Builder,
    proc: Proc,
    pairs: _Pairs,
    carried: Mapping[int, tuple[Forward, ...]],
) -> None:
    session = pairs.session_sock.get(proc.pid)
    peer = str(session.raddr) if session is not None and session.raddr is not None else None
    client_pid = pairs.sshd_to_client.get(proc.pid)
    client_forwards = carried.get(client_pid, ()) if client_pid is not None else ()
    client = b.snap.procs.get(client_pid) if client_pid is not None else None
    # -R: sshd listens for the client; the target is only known on the client's side.
    by_port: dict[int, list[str]] = {}
    for s in proc.listens():
        by_port.setdefault(s.laddr.port, []).append(str(s.laddr))
    for port, addrs in sorted(by_port.items()):
        fwd = next((f for f in client_forwards if f.kind == "remote" and f.listen_port == port), None)
        b.add(
            proc,
            "sshd-forward",
            sorted(set(addrs)),
            port,
            fwd.target_host if fwd else None,
            fwd.target_port if fwd else None,
            fwd.target_text if fwd else None,
            "sshd",
            peer=peer,
            via=client_pid,
        )
    # -L/-D: sshd connects out to the target.
    for target in _sshd_targets(proc, session):
        listen: tuple[str, ...] = ()
        listen_port = None
        if client is not None:
            fwd = next(
                (
                    f
                    for f in client_forwards
                    if f.kind == "local"
                    and f.target_port == target.port
                    and _same_host(f.target_host, target.ip)
                ),
                None,
            )
            if fwd is not None:
                listen_port = fwd.listen_port
                listen = _listens_on(client, fwd.listen_port) or (fwd.listen_text,)
        b.add(
            proc,
            "sshd-forward",
            listen,
            listen_port,
            target.ip,
            target.port,
            str(target),
            "sshd",
            peer=peer,
            via=client_pid,
        )


def _same_host(name: str | None, ip: str) -> bool:
    if name is None:
        return False
    name = name.lower()
    if name == ip:
        return True
    return name == "localhost" and ip in ("127.0.0.1", "::1")


def _wrapper_findings(b: _Builder, proc: Proc, parsed: Mapping[int, SshArgs]) -> None:
    """autossh (by name), or a wrapper whose own command line runs ssh and whose child ssh forwards."""
    is_autossh = proc.name == "autossh" or _basename(proc) == "autossh"
    if not is_autossh:
        if _is_ssh_client(proc) or proc.name in ("sshd", "sshd-session") or proc.pid <= 1:
            return
        if proc.name not in _SHELLISH or not _SSH_WORD.search(_title(proc)):
            return
    children = [c for c in b.snap.children_of(proc.pid) if c.pid in parsed and parsed[c.pid].forwards]
    found = False
    for child in children:
        for fwd in parsed[child.pid].forwards:
            seen = _listens_on(child, fwd.listen_port) if fwd.kind in ("local", "dynamic") else ()
            listen = seen or ((f"remote:{fwd.listen_text}",) if fwd.kind == "remote" else (fwd.listen_text,))
            b.add(
                proc,
                "autossh",
                listen,
                fwd.listen_port,
                fwd.target_host,
                fwd.target_port,
                fwd.target_text,
                "argv" if is_autossh else "wrapper",
                peer=parsed[child.pid].destination,
                via=child.pid,
            )
            found = True
    if is_autossh and not found:
        # between restarts autossh has no ssh child: read its own argv (minus autossh's -M PORT)
        argv = list(proc.cmdline)
        cleaned = [argv[0]] if argv else ["autossh"]
        skip = False
        for arg in argv[1:]:
            if skip:
                skip = False
                continue
            if arg == "-M":
                skip = True
                continue
            if arg.startswith("-M") and arg[2:].replace(":", "").isdigit():
                continue
            cleaned.append(arg)
        args = parse_ssh_argv(cleaned)
        for fwd in args.forwards:
            prefix = "remote:" if fwd.kind == "remote" else ""
            b.add(
                proc,
                "autossh",
                (prefix + fwd.listen_text,),
                fwd.listen_port,
                fwd.target_host,
                fwd.target_port,
                fwd.target_text,
                "argv",
                peer=args.destination,
            )


_NCAT_NAMES = frozenset({"ncat", "nc", "netcat", "nc.openbsd", "nc.traditional"})


def _relay_findings(b: _Builder, proc: Proc) -> None:
    if proc.name == "socat":
        parent = b.snap.procs.get(proc.ppid)
        if parent is not None and parent.name == "socat" and parent.cmdline == proc.cmdline:
            return  # a per-connection child of a `fork` listener: the listener is the finding
        relay = parse_socat_argv(proc.cmdline)
        kind = "socat"
    elif proc.name in _NCAT_NAMES:
        relay = parse_ncat_argv(proc.cmdline)
        kind = "ncat"
    else:
        return
    if relay is None:
        return
    seen = _listens_on(proc, relay.listen_port) if relay.listen_port is not None else ()
    listen = seen or (_hostport(relay.listen_host or "*", relay.listen_port),)
    b.add(
        proc,
        kind,
        listen,
        relay.listen_port,
        relay.target_host,
        relay.target_port,
        relay.target_text,
        "argv",
    )
