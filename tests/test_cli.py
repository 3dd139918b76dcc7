"""The CLI's wiring: each command reaches its use case and turns errors into one line."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import main
from tests.conftest import SAMPLE_FILES


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
    assert "Before the first send, set" in result.output
    assert "from_address:" in result.output and "postal_address:" in result.output
    assert "secret_key:" not in result.output, "init wrote one"
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


HEAVY_MODULES = (
    "sqlalchemy",
    "alembic",
    "dramatiq",
    "premailer",
    "mjml",
    "markdown_it",
    "rich",
    "dkim",
    "redis",
    "jinja2",
    "babel",
)


def modules_loaded_by(tmp_path: Path, *args: str) -> set[str]:
    """The top-level modules a fresh interpreter has imported after running `newsletter ARGS`."""
    code = (
        "import sys\nfrom newsletter.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, check=True)
    return set(done.stdout.split("\n")[-2].split())


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    loaded = modules_loaded_by(tmp_path, "--help")
    assert loaded.isdisjoint(HEAVY_MODULES), loaded & set(HEAVY_MODULES)


def test_preview_imports_the_renderer_but_not_the_database_or_the_queue(tmp_path: Path) -> None:
    loaded = modules_loaded_by(tmp_path, "preview", str(SAMPLE_FILES[0]), "-o", str(tmp_path))
    assert {"premailer", "mjml"} <= loaded
    assert loaded.isdisjoint({"sqlalchemy", "alembic", "dramatiq", "redis", "rich"}), loaded
