"""Environment-shaped files: .env, /etc/environment, shell history, systemd `Environment=` lines."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hoopctl.detect.parsers._util import Found, is_secret_name, lines, value_span

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\s*=")


def dotenv(text: str) -> Iterator[Found]:
    """`NAME=value` lines (optionally `export`ed) whose name says it holds a secret."""
    for off, line in lines(text):
        m = _ENV_LINE.match(line)
        if m and is_secret_name(m.group("name")):
            s, e = value_span(line, m.end())
            if e > s:
                yield ("dotenv-secret", off + s, off + e)


# NAME=value anywhere in a command line (export X=.., X=.. cmd, env X=.. cmd)
_SHELL_ASSIGN = re.compile(r"(?:^|[\s;&|(])(?:export\s+|env\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?=[^\s=])")
_SHELL_OPTS = re.compile(
    r"""(?x)
      \bmysql(?:dump|admin|sh)?\b[^;&|\n]*?\s-p(?P<mysql>[^\s;&|'"]+|'[^']+'|"[^"]+")   # mysql -pSECRET
    | \s--password[= ](?P<lpw>[^\s;&|'"]+|'[^']+'|"[^"]+")                           # --password=SECRET
    | \bsshpass\s+-p\s*(?P<sshpass>[^\s;&|'"]+|'[^']+'|"[^"]+")                      # sshpass -p SECRET
    | \bcurl\b[^;&|\n]*?\s(?:-u|--user)\s+(?P<q>['"]?)[^\s:'"]+:(?P<curl>[^\s'"]+)(?P=q)   # curl -u user:SECRET
    | \b(?:docker|podman|helm|skopeo)\s+(?:\w+\s+)*?login\b[^;&|\n]*?\s-p\s+(?P<dlogin>[^\s;&|'"]+|'[^']+'|"[^"]+")
    | \bPASSWORD\s+(?P<sql>'[^']+')                                                      # ALTER USER .. PASSWORD '..'
    """
)


def _unquote(start: int, end: int, raw: str) -> tuple[int, int]:
    if len(raw) >= 2 and raw[0] in "'\"" and raw[-1] == raw[0]:
        return start + 1, end - 1
    return start, end


def shell_history(text: str) -> Iterator[Found]:
    """Secrets typed on a command line: `export X_TOKEN=..`, `PGPASSWORD=.. psql`, `mysql -p..` ..."""
    for off, line in lines(text):
        for m in _SHELL_ASSIGN.finditer(line):
            if is_secret_name(m.group("name")):
                s, e = value_span(line, m.end())
                if e > s:
                    yield ("shell-history-secret", off + s, off + e)
        for m in _SHELL_OPTS.finditer(line):
            for group in ("mysql", "lpw", "sshpass", "curl", "dlogin", "sql"):
                if m.group(group):
                    s, e = _unquote(m.start(group), m.end(group), m.group(group))
                    yield ("shell-history-secret", off + s, off + e)


_ENVIRONMENT = re.compile(r"^\s*Environment\s*=\s*", re.IGNORECASE)
_UNIT_PAIR = re.compile(r"""(?P<q>["']?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<v>.*?)(?P=q)(?=\s|$)""")


def systemd_unit(text: str) -> Iterator[Found]:
    """`Environment=NAME=value "NAME2=value two"` in unit files and drop-ins."""
    for off, line in lines(text):
        m = _ENVIRONMENT.match(line)
        if not m:
            continue
        pos = m.end()
        for pm in _UNIT_PAIR.finditer(line, pos):
            if is_secret_name(pm.group("name")) and pm.end("v") > pm.start("v"):
                yield ("systemd-environment-secret", off + pm.start("v"), off + pm.end("v"))
