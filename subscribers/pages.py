"""The page templates in templates/web/ (the editor restyles them there), rendered with autoescape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from newsletter.resources import template_dirs, template_loader
from newsletter.settings import Settings


def static_dir(settings: Settings) -> Path:
    """The pages' static files: the editor's `template_dir`/web/static when it exists, else the shipped ones."""
    return next(path / "static" for path in template_dirs(settings.template_dir, "web") if (path / "static").is_dir())


class Pages:
    """Renders a page template with the newsletter's name and URLs in reach of every page."""

    def __init__(self, settings: Settings) -> None:
        self.environment = Environment(
            loader=template_loader(settings.template_dir, "web"),
            autoescape=select_autoescape(["html", "xml", "j2"], default_for_string=True, default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.globals.update(
            newsletter_name=settings.newsletter_name,
            base_url=settings.base_url.rstrip("/"),
        )

    def render(self, template: str, **context: Any) -> str:
        return self.environment.get_template(template).render(**context)

    def response(
        self, template: str, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
    ) -> HTMLResponse:
        return HTMLResponse(self.render(template, **context), status_code=status_code, headers=headers)
