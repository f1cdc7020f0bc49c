import pytest

from hoopctl.config import ConfigError, Section, load_yaml, read_secret_file


def write(tmp_path, text):
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


def test_error_names_file_key_and_problem(tmp_path):
    root = load_yaml(write(tmp_path, "resources:\n  appdb:\n    port: abc\n"))
    with pytest.raises(ConfigError) as err:
        root.section("resources").section("appdb").int("port", lo=1, hi=65535)
    assert (
        str(err.value)
        == f"{tmp_path}/gw.yaml: resources.appdb.port: expected an integer from 1 to 65535, got 'abc'"
    )


def test_yaml_syntax_error_is_one_line_with_line_number(tmp_path):
    with pytest.raises(ConfigError, match=r"gw.yaml: line 3: expected"):
        load_yaml(write(tmp_path, "a: 1\nb: [unclosed\n"))


def test_unknown_key_is_refused(tmp_path):
    root = load_yaml(write(tmp_path, "listne: 1\n"))
    with pytest.raises(ConfigError, match="listne: unknown key"):
        root.check_keys({"listen"})


def test_secret_file_must_be_private(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    assert read_secret_file(secret, file="gw.yaml", key="k") == "s3cret"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        read_secret_file(secret, file="gw.yaml", key="k")
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret_file(link, file="gw.yaml", key="k")


def test_section_rejects_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        Section([1, 2], file="f.yaml", where="roles")
