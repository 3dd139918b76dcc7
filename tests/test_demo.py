"""`newsletter demo` in an empty directory: the quickstart works on a fresh machine."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import main
from newsletter.demo import SAMPLE_ISSUE, SAMPLE_SUBJECT, SAMPLE_SUBSCRIBERS


def test_demo_sends_the_bundled_issue_to_the_sample_subscribers(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == len(SAMPLE_SUBSCRIBERS)
    messages = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in files]
    assert sorted(str(message["To"].addresses[0].addr_spec) for message in messages) == sorted(
        address for _, address in SAMPLE_SUBSCRIBERS
    )
    assert len({message["Message-ID"] for message in messages}) == len(messages)
    assert all(message.get_body(("html",)) is not None for message in messages)
    assert {message["Subject"] for message in messages} == {SAMPLE_SUBJECT}
    assert (tmp_path / "newsletter.toml").is_file() and (tmp_path / "newsletter.db").is_file()
    assert f"Sent {len(SAMPLE_SUBSCRIBERS)} messages" in result.output

    again = CliRunner().invoke(main, ["demo", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == len(SAMPLE_SUBSCRIBERS), "the issue went out once"


def test_the_sample_issue_ships_inside_the_package() -> None:
    assert SAMPLE_ISSUE.is_file()
    assert "newsletter" in SAMPLE_ISSUE.parent.parent.name
