"""Reading YAML configuration with errors that name the file, the key and the fix.

Every daemon's config goes through `Section`: typed getters that know where in the
file they are, so a mistake reads `gateway.yaml: resources.appdb.port: expected an
integer from 1 to 65535, got 'abc'` instead of a traceback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, NoReturn

import yaml

_MISSING = object()


class ConfigError(ValueError):
    """A configuration mistake; str() is one line naming the file and the key."""


class Section:
    """A mapping from the config file, with its dotted location for error messages."""

    def __init__(self, data: Any, *, file: str, where: str = "") -> None:
        self.file, self.where = file, where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"expected a mapping, got {type(data).__name__}")
        self.data: dict[str, Any] = data

    def fail(self, message: str, key: str | None = None) -> NoReturn:
        path = ".".join(p for p in (self.where, key) if p)
        raise ConfigError(f"{self.file}: {path + ': ' if path else ''}{message}")

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key, default)
        if value is _MISSING:
            self.fail("required key is missing", key)
        return value

    def str(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if value is not None and not isinstance(value, str):
            self.fail(f"expected a string, got {value!r}", key)
        return value

    def int(self, key: str, default: Any = _MISSING, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            bounds = f" from {lo} to {hi}" if lo is not None and hi is not None else ""
            self.fail(f"expected an integer{bounds}, got {value!r}", key)
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            self.fail(f"expected true or false, got {value!r}", key)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if value not in choices:
            self.fail(f"expected one of {', '.join(choices)}, got {value!r}", key)
        return value

    def list(self, key: str, default: Any = _MISSING) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list):
            self.fail(f"expected a list, got {value!r}", key)
        return value

    def section(self, key: str, *, required: bool = False) -> Section:
        value = self._get(key, _MISSING if required else None)
        return Section(value, file=self.file, where=".".join(p for p in (self.where, key) if p))

    def duration(self, key: str, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        try:
            return parse_duration(value)
        except ValueError:
            self.fail(f"expected a duration such as 90s, 15m or 2h, got {value!r}", key)

    def path(self, key: str, default: Any = _MISSING) -> Path | None:
        value = self.str(key, default)
        return Path(value) if value is not None else None

    def check_keys(self, allowed: set[str]) -> None:
        """Unknown keys are mistakes (a typo must not silently disable a setting)."""
        for key in self.data:
            if key not in allowed:
                self.fail(f"unknown key (expected one of: {', '.join(sorted(allowed))})", str(key))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """`90s`, `15m`, `2h`, `1d` or plain seconds -> positive seconds; ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:])
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return seconds


def load_yaml(path: Path) -> Section:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}{problem}") from exc
    return Section(data, file=str(path))


def read_secret_file(path: Path, *, file: str, key: str) -> str:
    """Reads a secret that must be private to its owner (a root-only file or a systemd credential)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{file}: {key}: cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "r") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise ConfigError(
                f"{file}: {key}: {path} must be a regular file owned by this user and mode 0600 (or 0400)"
            )
        value = f.read().rstrip("\n")
    if not value:
        raise ConfigError(f"{file}: {key}: {path} is empty")
    return value


def credential_path(name: str) -> Path | None:
    """Path of a systemd credential (LoadCredential=) by name, when the unit has one."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory, name) if directory else None
