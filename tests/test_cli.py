from click.testing import CliRunner

from hoopctl.cli import main


def test_help_lists_verbs_and_shows_an_example():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output


def test_unknown_verb_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-verb"])
    assert result.exit_code == 2
