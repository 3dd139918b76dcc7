"""`newsletter preview`: the files it writes, its JSON report, and its exit codes."""

from __future__ import annotations

import email
import email.policy
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.mime import MessageTemplate
from newsletter.preflight import (
    DEFAULT_NEWSLETTER_NAME,
    GMAIL_CLIP_BYTES,
    PreflightReport,
    group_warnings,
    preflight,
    setting_warnings,
)
from newsletter.preview import sample_recipient
from newsletter.render import render_issue
from newsletter.settings import Settings
from tests.conftest import SAMPLE_FILES, SAMPLES, WebServer, tiny_png


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


def report_of(source: str, settings: Settings, base_dir: Path | None = None) -> PreflightReport:
    issue = render_issue(source, settings, base_dir=base_dir)
    return preflight(issue, MessageTemplate.build(issue, settings).fill(sample_recipient(settings)))


def codes(source: str, settings: Settings) -> set[str]:
    return {warning.code for warning in report_of(source, settings).warnings}


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
    assert codes("# Fine\n\nAll [good](https://example.org).", settings) == set()


def test_warning_lines_point_into_the_file(settings: Settings) -> None:
    source = "---\nsubject: S\n---\n# T\n\nfirst\n\n[x](http://example.org)\n"
    warnings = report_of(source, settings).warnings
    assert [(w.code, w.line) for w in warnings] == [("insecure-url", 8)]


def test_gmail_clip_is_measured_on_the_html_part(settings: Settings, tmp_path: Path) -> None:
    # A large embedded image makes the message big, but Gmail clips on the HTML part alone.
    (tmp_path / "photo.png").write_bytes(tiny_png(1, 1) + os.urandom(150_000))
    report = report_of("# T\n\n![photo](photo.png)\n", settings, tmp_path)
    assert report.message_bytes > 150_000 and report.html_part_bytes < GMAIL_CLIP_BYTES
    assert "gmail-clip" not in {warning.code for warning in report.warnings}
    long = "# T\n\n" + "".join(f"* [Item {n} of a long list](https://example.org/{n}/page)\n" for n in range(1500))
    clipped = report_of(long, settings)
    assert clipped.html_part_bytes > GMAIL_CLIP_BYTES
    [warning] = [warning for warning in clipped.warnings if warning.code == "gmail-clip"]
    assert f"{clipped.html_part_bytes / 1024:.1f} KB encoded" in warning.message


def test_repeated_warnings_are_grouped(settings: Settings) -> None:
    source = "# T\n\n" + "\n\n".join(f"[link {n}](http://example.org/{n})" for n in range(30))
    [group] = group_warnings(report_of(source, settings).warnings)
    assert (group.code, group.count) == ("insecure-url", 30)
    assert group.where == "30 times, lines 3, 5, 7, 9, 11, ...: "
    assert "example.org/" not in group.message


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.stem)
def test_subject_from_a_section_heading_is_warned(path: Path, settings: Settings) -> None:
    report = report_of(path.read_text(encoding="utf-8"), settings)
    assert report.subject in ("AI", "1. NanoDet：轻量级（1.8MB）、超快速（移动端97fps）目标检测项目")
    assert {"subject-from-heading", "no-title"} <= {warning.code for warning in report.warnings}


def test_a_title_is_not_warned_about(settings: Settings) -> None:
    assert codes("# Weekly 12\n\n## News\n\nBody", settings) == set()
    assert codes("---\nsubject: Weekly 12\n---\n\n## News\n\nBody", settings) == set()
    assert "no-title" in codes("---\nsubject: Weekly 12\nshow_title: no\n---\n\nBody", settings)


def test_default_newsletter_name_is_warned(settings: Settings) -> None:
    assert "default-name" not in {warning.code for warning in setting_warnings(settings)}
    renamed = settings.replace(newsletter_name=DEFAULT_NEWSLETTER_NAME)
    assert "default-name" in {warning.code for warning in setting_warnings(renamed)}


def test_check_links_reports_broken_links_and_images(
    tmp_path: Path, settings: Settings, webserver: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    webserver.routes["/ok"] = (200, "text/html", b"ok", 0.0)
    webserver.routes["/logo.png"] = (200, "image/png", tiny_png(10, 10), 0.0)
    ok, missing, gone = webserver.url("/ok"), webserver.url("/missing"), webserver.url("/gone.png")
    source = (
        f"# T\n\n[a]({ok}) [b]({missing})\n\n[again]({missing})\n\n![logo]({webserver.url('/logo.png')}) ![g]({gone})\n"
    )
    (tmp_path / "issue.md").write_text(source, encoding="utf-8")
    result = CliRunner().invoke(main, ["preview", "issue.md", "--check-links", "--json"])
    assert result.exit_code == 0, result.output
    broken = [w for w in json.loads(result.stdout)["warnings"] if w["code"] == "broken-link"]
    assert [(w["line"], w["message"]) for w in broken] == [
        (3, f"link answers HTTP 404: {missing}"),
        (7, f"image answers HTTP 404: {webserver.url('/gone.png')}"),
    ]
    assert sorted(webserver.requests) == ["/gone.png", "/logo.png", "/missing", "/ok"]  # each once
    plain = CliRunner().invoke(main, ["preview", "issue.md"])
    assert plain.exit_code == 0 and "broken-link" not in plain.stderr
