"""INI and TOML shaped credential files: ~/.aws/credentials, .pypirc, gitlab-runner's config.toml."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hoopctl.detect.parsers._util import Found, ini_value_span, lines

_ASSIGN = re.compile(r"^\s*(?P<key>[A-Za-z0-9_.-]+)\s*[=:]\s*")


def _assignments(text: str, keys: set[str], rule_id: str, sep: str = "=:") -> Iterator[Found]:
    for off, line in lines(text):
        m = _ASSIGN.match(line)
        if m and m.group("key").lower() in keys:
            s, e = ini_value_span(line, m.end())
            if e > s:
                yield (rule_id, off + s, off + e)


def aws_credentials(text: str) -> Iterator[Found]:
    """Shared credentials/config files of the AWS CLI and SDKs."""
    yield from _assignments(
        text, {"aws_secret_access_key", "aws_session_token", "aws_security_token"}, "aws-credentials-file"
    )


def pypirc(text: str) -> Iterator[Found]:
    """distutils/twine config: `password` in an index server section."""
    yield from _assignments(text, {"password"}, "pypirc-password")


def gitlab_runner(text: str) -> Iterator[Found]:
    """gitlab-runner config.toml: each runner's `token`, and cache credentials."""
    yield from _assignments(
        text,
        {"token", "secretkey", "secret_key", "accesskey", "access_key", "password"},
        "gitlab-runner-config",
    )
