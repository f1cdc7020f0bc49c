"""The shipped reference config loads, and mistakes in it are named precisely."""

from pathlib import Path

import pytest

from hoopctl.config import ConfigError
from hoopctl.gateway.config import EXAMPLE, load_config


def localised(tmp_path: Path, edit=lambda text: text) -> Path:
    """The example with its absolute paths moved under tmp_path (secrets made private)."""
    secret = tmp_path / "appdb.pw"
    secret.write_text("upstream-password\n")
    secret.chmod(0o600)
    text = EXAMPLE.read_text().replace("/etc/hoopctl/secrets/appdb", str(secret))
    text = text.replace("/var/lib/hoopctl", str(tmp_path / "state")).replace("/run/hoopctl", str(tmp_path))
    path = tmp_path / "gateway.yaml"
    path.write_text(edit(text))
    return path


def test_example_config_loads(tmp_path):
    cfg = load_config(localised(tmp_path))
    assert cfg.resources["appdb"].password == "upstream-password"
    assert "secret" not in repr(cfg.resources["appdb"]) and "upstream-password" not in repr(cfg)
    assert cfg.policy.roles["reader"].grants >= {"read"}
    assert cfg.access.roles["owner"].mode == "hold" and cfg.access.roles["owner"].approvals == 2
    assert cfg.masking is not None


def test_recordings_key_file_is_read_privately(tmp_path):
    key = tmp_path / "recordings.key"
    key.write_text("k" * 32 + "\n")
    key.chmod(0o600)
    cfg = load_config(
        localised(
            tmp_path,
            lambda t: t.replace("# key_file: /etc/hoopctl/secrets/recordings.key", f"key_file: {key}"),
        )
    )
    assert cfg.recordings_key == b"k" * 32 and b"k" * 32 not in repr(cfg).encode()
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="recordings.key_file: .* mode 0600"):
        load_config(
            localised(
                tmp_path,
                lambda t: t.replace("# key_file: /etc/hoopctl/secrets/recordings.key", f"key_file: {key}"),
            )
        )


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("port: 5432", "port: fivefour"), "resources.appdb.port: expected an integer"),
        (
            lambda t: t.replace("grants: [read]\n", "grants: [raed]\n", 1),
            "roles: roles.reader.grants[0]: unknown class",
        ),
        (lambda t: t.replace("fsync: batch", "fsync: sometimes"), "recordings.fsync: expected one of"),
        (lambda t: t.replace("mode: hold", "mode: wait"), "access.roles.owner.mode: expected one of"),
        (lambda t: t.replace("listen: 127.0.0.1:6432", "listen: localhost"), "listen: expected HOST:PORT"),
    ],
)
def test_mistakes_name_the_key(tmp_path, edit, message):
    with pytest.raises(ConfigError) as err:
        load_config(localised(tmp_path, edit))
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "gateway.yaml"))
    assert "\n" not in str(err.value)
