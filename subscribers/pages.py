"""The page templates in templates/web/ (the editor restyles them there), rendered with autoescape in the
reader's language (gettext catalogs through Jinja2's i18n extension)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from newsletter import language
from newsletter.resources import bytecode_cache, template_dirs, template_loader
from newsletter.settings import Settings


def static_dir(settings: Settings) -> Path:
    """The pages' static files: the editor's `template_dir`/web/static when it exists, else the shipped ones."""
    return next(path / "static" for path in template_dirs(settings.template_dir, "web") if (path / "static").is_dir())


N_ = language.N_
# How the preferences page names a state, an event and a delivery (the stored words are for machines).
STATUS_LABELS = {
    "pending": N_("waiting for your confirmation"),
    "active": N_("subscribed"),
    "unsubscribed": N_("unsubscribed"),
    "bounced": N_("mail to this address bounced"),
    "complained": N_("marked as spam"),
}
EVENT_LABELS = {
    "created": N_("signed up"),
    "status": N_("status changed"),
    "confirmation-requested": N_("confirmation mail sent"),
    "preferences": N_("preferences changed"),
    "imported": N_("imported"),
    "bounce": N_("bounce"),
    "complaint": N_("complaint"),
}
DELIVERY_LABELS = {
    "pending": N_("waiting"),
    "sending": N_("being sent"),
    "sent": N_("sent"),
    "failed": N_("could not be delivered"),
    "bounced": N_("bounced"),
    "skipped": N_("not sent"),
}


def language_choices() -> list[tuple[str, str]]:
    """Every language with a catalog and its name as its readers write it: ("zh-CN", "中文")."""
    return [(tag, language.locale(tag).get_language_name() or tag) for tag in language.available()]


class Pages:
    """Renders a page template in a language, with the newsletter's name and URLs in reach of every page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._environments: dict[str, Environment] = {}
        self._fixed: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def environment(self, lang: str) -> Environment:
        """The Jinja2 environment whose `_()` speaks `lang` (one per language: translations are global to it)."""
        with self._lock:
            environment = self._environments.get(lang)
            if environment is None:
                environment = self._environments[lang] = self._make_environment(lang)
            return environment

    def _make_environment(self, lang: str) -> Environment:
        environment = Environment(
            loader=template_loader(self.settings.template_dir, "web"),
            bytecode_cache=bytecode_cache(),
            autoescape=select_autoescape(["html", "xml", "j2"], default_for_string=True, default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=["jinja2.ext.i18n"],
        )
        translations = language.translations(lang)
        environment.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        environment.globals.update(
            newsletter_name=self.settings.newsletter_name,
            base_url=self.settings.base_url.rstrip("/"),
            lang=lang,
            languages=language_choices(),
            format_date=lambda value: language.date_text(value, lang),
            format_datetime=lambda value: language.datetime_text(value, lang),
            format_number=lambda value: language.number_text(value, lang),
            format_iso=lambda text: language.datetime_text(dt.datetime.fromisoformat(text), lang),
            format_iso_date=lambda text: language.date_text(dt.date.fromisoformat(text[:10]), lang),
            status_names=language.names(lang, STATUS_LABELS),
            event_names=language.names(lang, EVENT_LABELS),
            delivery_names=language.names(lang, DELIVERY_LABELS),
            today=dt.date.today,
        )
        return environment

    def render(self, template: str, lang: str | None = None, **context: Any) -> str:
        chosen = lang or language.choose(self.settings.default_language)
        if context:
            return self.environment(chosen).get_template(template).render(**context)
        # A page with no values of its own (the sign-up's "check your inbox") reads the same every time: it is
        # rendered once per language. Two threads racing here render the same text; either does.
        fixed = self._fixed.get((template, chosen))
        if fixed is None:
            fixed = self._fixed[template, chosen] = self.environment(chosen).get_template(template).render()
        return fixed

    def response(
        self,
        template: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        lang: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        chosen = lang or language.choose(self.settings.default_language)
        response_headers = {"content-language": chosen, "vary": "Accept-Language", **(headers or {})}
        return HTMLResponse(self.render(template, chosen, **context), status_code=status_code, headers=response_headers)
