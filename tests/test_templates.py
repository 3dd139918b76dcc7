"""The editor's `template_dir`: a template put there wins over the shipped one, in emails and in pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from newsletter.render import render_issue
from newsletter.settings import Settings
from subscribers.app import create_app
from tests.webflow import client_for


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    """A template directory that overrides one email stylesheet, one page and the pages' stylesheet."""
    directory = tmp_path / "my-templates"
    (directory / "web" / "static").mkdir(parents=True)
    (directory / "content.css.j2").write_text(".nl-content p { color: #123456; }\n", encoding="utf-8")
    (directory / "web" / "subscribe.html").write_text(
        '{% extends "base.html" %}{% block main %}<p>Sign up to the {{ newsletter_name }} of our '
        "club</p>{% endblock %}",
        encoding="utf-8",
    )
    (directory / "web" / "static" / "site.css").write_text("body { background: #abcdef; }\n", encoding="utf-8")
    return directory


def test_the_email_uses_the_editors_stylesheet(settings: Settings, template_dir: Path) -> None:
    shipped = render_issue("# Title\n\nHello.\n", settings)
    custom = render_issue("# Title\n\nHello.\n", settings.replace(template_dir=str(template_dir)))
    assert "#123456" in custom.html and "#123456" not in shipped.html
    assert settings.newsletter_name in custom.html  # the rest still comes from the shipped templates


@pytest.mark.anyio
async def test_pages_use_the_editors_templates_and_static_files(
    settings: Settings, engine: Engine, template_dir: Path
) -> None:
    custom = settings.replace(template_dir=str(template_dir))
    async with client_for(create_app(custom, engine), settings.base_url) as client:
        page = await client.get("/subscribe")
        assert page.status_code == 200 and "of our club" in page.text
        assert (await client.get("/static/site.css")).text == "body { background: #abcdef; }\n"
        assert (await client.get("/issues/")).status_code == 200  # not overridden: the shipped page
    async with client_for(create_app(settings, engine), settings.base_url) as client:
        assert "of our club" not in (await client.get("/subscribe")).text
