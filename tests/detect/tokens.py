"""Fake-but-well-formed credentials for tests: random bodies with the real checksum where one exists."""

from __future__ import annotations

import random
import string

from hoopctl.detect.validators import github_checksum

BASE62 = string.ascii_letters + string.digits


def github_token(prefix: str = "ghp_", seed: int = 0, *, valid: bool = True) -> str:
    """A GitHub-style token (also npm_) whose last 6 characters are the base62 CRC32 of the body."""
    rnd = random.Random(seed)
    body = "".join(rnd.choice(BASE62) for _ in range(30))
    check = github_checksum(body)
    if not valid:
        check = check[:-1] + ("A" if check[-1] != "A" else "B")
    return prefix + body + check


def random_string(n: int, seed: int = 0, alphabet: str = BASE62) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choice(alphabet) for _ in range(n))
