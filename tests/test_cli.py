"""The CLI's wiring: each command reaches its use case and turns errors into one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner working in an empty directory, with no NEWSLETTER_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in __import__("os").environ if name.startswith("NEWSLETTER_")]:
        monkeypatch.delenv(name)
    return CliRunner()


def run(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def test_init_writes_a_config_once_and_creates_the_database(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, "init")
    assert result.exit_code == 0, result.output
    config = tomllib.loads((tmp_path / "newsletter.toml").read_text(encoding="utf-8"))
    assert len(config["secret_key"]) >= 32
    assert (tmp_path / "newsletter.db").exists()
    before = (tmp_path / "newsletter.toml").read_text(encoding="utf-8")
    result = run(runner, "init")
    assert "left as it is" in result.output
    assert (tmp_path / "newsletter.toml").read_text(encoding="utf-8") == before
    assert "up to date" in run(runner, "db", "current").output


def test_subscriber_commands(runner: CliRunner, tmp_path: Path) -> None:
    run(runner, "init")
    assert run(runner, "subscribers", "add", "Ann@Example.org", "--name", "Ann").exit_code == 0
    assert run(runner, "subscribers", "add", "bob@example.org", "--status", "pending").exit_code == 0
    listed = run(runner, "subscribers", "list", "--status", "pending").output
    assert "bob@example.org" in listed and "Ann" not in listed
    (tmp_path / "in.csv").write_text("email,name\ncarl@example.org,Carl\nbad@\n", encoding="utf-8")
    result = run(runner, "subscribers", "import", "in.csv")
    assert "Imported 1" in result.output and "line 3" in result.output
    assert run(runner, "subscribers", "remove", "ann@example.org").exit_code == 0
    assert run(runner, "subscribers", "forget", "carl@example.org", "--yes").exit_code == 0
    run(runner, "subscribers", "export", "-o", "out.csv")
    exported = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "Ann@Example.org,Ann,unsubscribed" in exported and "carl" not in exported


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("subscribers", "add", "not-an-address"), "@-sign"),
        (("subscribers", "remove", "ghost@example.org"), "no subscriber"),
        (("subscribers", "import", "missing.csv"), "does not exist"),
        (("--config", "nope.toml", "subscribers", "list"), "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(runner: CliRunner, args: tuple[str, ...], message: str) -> None:
    run(runner, "init")
    result = runner.invoke(main, list(args))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_commands_refuse_an_unmigrated_database(runner: CliRunner) -> None:
    result = runner.invoke(main, ["subscribers", "list"])
    assert result.exit_code == 1
    assert "newsletter db upgrade" in result.output
