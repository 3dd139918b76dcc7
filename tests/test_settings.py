"""Settings: file, environment, types, and a README row for every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.errors import ConfigError, MissingSetting
from newsletter.settings import Settings, load_settings, setting_help

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.database_url == "sqlite:///newsletter.db"
    assert settings.broker_url == ""
    assert settings.batch_size == 200


def test_file_then_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('smtp_port = 2525\nfrom_address = "a@example.org"\nrate_limit = 5\n', encoding="utf-8")
    settings = load_settings(config, environ={"NEWSLETTER_SMTP_PORT": "587", "NEWSLETTER_SMTP_SECURITY": "starttls"})
    assert settings.smtp_port == 587
    assert settings.smtp_security == "starttls"
    assert settings.from_address == "a@example.org"
    assert settings.rate_limit == 5.0


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.smtp_port = 1  # type: ignore[misc]
    assert settings.replace(smtp_port=1).smtp_port == 1


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        ("smtp_prot = 25\n", {}, "unknown setting 'smtp_prot'"),
        ('smtp_port = "many"\n', {}, "'smtp_port' must be int"),
        ("", {"NEWSLETTER_SMTP_SECURITY": "tls"}, "smtp_security"),
        ("", {"NEWSLETTER_BATCH_SIZE": "0"}, "batch_size"),
        ("", {"NEWSLETTER_FROM_NAME": "x\r\nBcc: victim@example.org"}, "line break"),
        ("smtp_port = [\n", {}, "cannot read"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path: Path, content: str, environ: dict[str, str], message: str) -> None:
    config = tmp_path / "newsletter.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config, environ=environ)


def test_missing_config_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_required_setting_names_itself() -> None:
    with pytest.raises(MissingSetting, match="NEWSLETTER_FROM_ADDRESS"):
        Settings().require("from_address")


def test_every_missing_setting_is_named_at_once() -> None:
    with pytest.raises(MissingSetting) as missing:
        Settings(secret_key="set").require("from_address", "secret_key", "postal_address")
    assert missing.value.names == ("from_address", "postal_address")
    assert "'from_address', 'postal_address'" in str(missing.value) and "NEWSLETTER_POSTAL_ADDRESS" in str(
        missing.value
    )


def test_every_setting_has_help_and_a_readme_row() -> None:
    readme = README.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", readme, flags=re.MULTILINE))
    for name, help_line in setting_help().items():
        assert help_line.strip(), f"setting {name} has no help line"
        assert name in rows, f"setting {name} has no row in the README's settings table"
    assert rows <= set(setting_help()), f"README documents settings that do not exist: {rows - set(setting_help())}"
