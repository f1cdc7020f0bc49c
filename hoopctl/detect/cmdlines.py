"""What ssh, socat and ncat command lines (and ssh_config texts) ask for: forwards and relays.

Pure parsing, no I/O. ssh's argv is read the way its own getopt reads it: combined flags
(`-NfL`), values attached or separate (`-L8080:db:5432`, `-L 8080:db:5432`), bracketed IPv6,
the old `port/host/hostport` syntax, `-o LocalForward=...`, and options after the destination.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# ssh(1) options: those taking a value, and plain flags. Anything else is skipped like ssh would
# refuse it; we only read, so being lenient costs nothing.
_SSH_VALUE_OPTS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")
_SSH_FLAG_OPTS = frozenset("46AaCfGgKkMNnqsTtVvXxYy")

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
        return hostport(self.listen_host or "localhost", self.listen_port)

    @property
    def target_text(self) -> str | None:
        if self.kind == "tun":
            return f"tun:{self.target_host or 'any'}"
        if self.target_path:
            return self.target_path
        if self.target_host is None:
            return None
        return hostport(self.target_host, self.target_port)


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


def hostport(host: str, port: int | None) -> str:
    """`host:port`, with an IPv6 address in brackets."""
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
        return hostport(self.target_host, self.target_port)


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
