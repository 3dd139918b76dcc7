"""`newsletter preview`: the files it writes, its JSON report, and its exit codes."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.preflight import preflight
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.conftest import SAMPLES


def test_preview_writes_html_text_and_eml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no newsletter.toml here: the defaults apply
    sample = SAMPLES / "ai-briefing-2020-11-27.md"
    result = CliRunner().invoke(main, ["preview", str(sample), "-o", str(tmp_path), "--json"])
    code, out = result.exit_code, result.stdout
    assert code == 0
    report = json.loads(out)
    for key in ("subject", "preheader", "html_bytes", "message_bytes", "links", "images", "warnings"):
        assert key in report
    assert {"code", "message", "line"} <= set(report["warnings"][0])
    assert "missing-alt" in {warning["code"] for warning in report["warnings"]}
    stem = tmp_path / "ai-briefing-2020-11-27"
    page = stem.with_suffix(".html").read_text(encoding="utf-8")
    assert "reader@example.com" in page and "\ue001" not in page
    assert stem.with_suffix(".txt").read_text(encoding="utf-8").startswith("Newsletter")
    message = email.message_from_bytes(stem.with_suffix(".eml").read_bytes(), policy=email.policy.default)
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    assert report["message_bytes"] == len(stem.with_suffix(".eml").read_bytes())


def test_unusable_input_is_one_line_and_non_zero(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("no heading, no subject\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["preview", str(tmp_path / "bad.md"), "-o", str(tmp_path)])
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0 and "no subject" in result.stderr
    result = CliRunner().invoke(main, ["preview", str(tmp_path / "missing.md")])
    assert result.exit_code != 0 and "cannot read" in result.stderr
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe\x00 not text")
    result = CliRunner().invoke(main, ["preview", str(tmp_path / "binary.md"), "-o", str(tmp_path)])
    assert result.exit_code != 0 and "cannot read" in result.stderr


def test_a_huge_file_is_refused_before_rendering(tmp_path: Path) -> None:
    huge = tmp_path / "huge.md"
    huge.write_text("# Big\n\n" + "words and more words\n\n" * 150_000, encoding="utf-8")  # 3.3 MB
    result = CliRunner().invoke(main, ["preview", str(huge), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0 and "at most 2 MiB" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def codes(source: str, settings: Settings, message_bytes: int = 1000) -> set[str]:
    return {warning.code for warning in preflight(render_issue(source, settings), message_bytes).warnings}


def test_preflight_warnings(settings: Settings) -> None:
    assert "insecure-url" in codes("# T\n\n[x](http://example.org)", settings)
    assert "empty-link" in codes("# T\n\n[](https://example.org)", settings)
    assert "placeholder" in codes("# T\n\nTK add the intro", settings)
    assert "placeholder" in codes("# T\n\nLorem ipsum dolor", settings)
    assert "placeholder" not in codes("# T\n\nThings to do today", settings)
    assert "long-subject" in codes("# " + "很长的标题" * 10, settings)
    assert "webp-image" in codes("# T\n\n![a](https://example.org/a.webp)", settings)
    assert "svg-image" in codes("# T\n\n![a](https://example.org/a.svg)", settings)
    assert "missing-alt" in codes('# T\n\n<img src="https://example.org/a.png">', settings)
    assert "relative-image" in codes("# T\n\n![a](nowhere.png)", settings)
    assert "gmail-clip" in codes("# T\n\nsmall", settings, message_bytes=200 * 1024)
    assert codes("# Fine\n\nAll [good](https://example.org).", settings) == set()


def test_warning_lines_point_into_the_file(settings: Settings) -> None:
    source = "---\nsubject: S\n---\n# T\n\nfirst\n\n[x](http://example.org)\n"
    warnings = preflight(render_issue(source, settings), 1000).warnings
    assert [(w.code, w.line) for w in warnings] == [("insecure-url", 8)]
