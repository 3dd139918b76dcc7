"""The reader's language: which catalogs exist, how a tag or Accept-Language picks one, and Babel formats.

Translations are gettext catalogs, one `.po` file per language under `newsletter/locale/`; a new language
is a new `.po` file (see the README). They are compiled when first used, so a checkout and an installed
wheel work alike, with no build step; the compiled `.mo` is kept in the user's cache under the hash of
its `.po` file, so a short command does not compile it again and an edited catalog is never stale.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.resources import PACKAGE_DIR, cache_dir

if TYPE_CHECKING:  # Babel loads when a page or mail needs it, not when settings are read
    from babel import Locale
    from babel.support import Translations

LOCALE_DIR = PACKAGE_DIR / "locale"
DOMAIN = "messages"
FALLBACK = "en"  # the language the templates are written in: its catalog may be empty
# RFC 9110 12.5.4: Accept-Language is a list of language ranges with optional q-values.
_RANGE_RE = re.compile(r"^\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")
MAX_ACCEPT_LANGUAGE_CHARS = 1000
LANGUAGE_MAX_CHARS = 35  # BCP 47 tags of real use are far shorter; RFC 5646 4.4.1 asks for at least 35


def _tag(locale_dir_name: str) -> str:
    """`zh_CN` (the gettext directory name) as a BCP 47 tag, `zh-CN`."""
    return locale_dir_name.replace("_", "-")


@cache
def available() -> tuple[str, ...]:
    """The BCP 47 tags of every language with a catalog, English first."""
    found = sorted(_tag(path.parent.parent.name) for path in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return tuple(sorted(set(found) | {FALLBACK}, key=lambda tag: (tag != FALLBACK, tag)))


def supported(tag: str | None) -> str | None:
    """The available language closest to `tag` (zh, zh-Hans-CN, zh_CN -> zh-CN; en-GB -> en), or None."""
    if not tag:
        return None
    cleaned = tag.strip().replace("_", "-")
    if not cleaned or len(cleaned) > LANGUAGE_MAX_CHARS:
        return None
    by_lower = {language.lower(): language for language in available()}
    if cleaned.lower() in by_lower:
        return by_lower[cleaned.lower()]
    primary = cleaned.split("-")[0].lower()
    # A reader of any Chinese script is better served by the Simplified catalog than by English.
    same_primary = [language for language in available() if language.split("-")[0].lower() == primary]
    return same_primary[0] if same_primary else None


def from_accept_language(header: str | None) -> str | None:
    """The available language a browser's Accept-Language header prefers most, or None."""
    if not header or len(header) > MAX_ACCEPT_LANGUAGE_CHARS:
        return None
    ranges: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        match = _RANGE_RE.match(item)
        if match is None:
            continue
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality > 0 and match.group(1) != "*":
            ranges.append((-quality, position, match.group(1)))
    for _, _, language_range in sorted(ranges):
        language = supported(language_range)
        if language is not None:
            return language
    return None


def choose(*candidates: str | None, default: str = FALLBACK) -> str:
    """The first candidate that names an available language, else `default` (else English)."""
    for candidate in candidates:
        language = supported(candidate)
        if language is not None:
            return language
    return supported(default) or FALLBACK


@cache
def translations(language: str) -> Translations:
    """The gettext translations of `language`, compiled from its `.po` file once (see the module's note)."""
    from babel.support import Translations

    path = catalog_path(language)
    if not path.is_file():
        return Translations()
    source = path.read_bytes()
    directory = cache_dir("locale")
    kept = directory / f"{hashlib.sha256(source).hexdigest()}.mo" if directory is not None else None
    data = _read(kept)
    if data is None:
        data = _compile(source, language)
        _keep(kept, data)
    return Translations(fp=io.BytesIO(data), domain=DOMAIN)


def _read(path: Path | None) -> bytes | None:
    try:
        return path.read_bytes() if path is not None else None
    except OSError:
        return None


def _keep(path: Path | None, data: bytes) -> None:
    if path is None:
        return
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)  # whole or absent for another process reading it
    except OSError:
        partial.unlink(missing_ok=True)


def _compile(source: bytes, language: str) -> bytes:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    catalog = read_po(io.BytesIO(source), locale=language.replace("-", "_"))
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()


def N_(message: str) -> str:  # noqa: N802 (the gettext convention extraction tools look for)
    """Mark a message for the catalog where it is defined; it is translated where it is shown."""
    return message


def gettext(language: str, message: str) -> str:
    """`message` in `language` (as it is where the catalog has no translation)."""
    return translations(language).gettext(message)


def names(language: str, labels: Mapping[str, str]) -> dict[str, str]:
    """A table of N_-marked labels (a state, a kind... by its stored key) in `language`; a page shows a key
    missing from it as itself."""
    found = translations(language)
    return {key: found.gettext(label) for key, label in labels.items()}


@cache
def locale(language: str) -> Locale:
    """The Babel locale of a language tag (English when Babel does not know it)."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(language.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse(FALLBACK)


def date_text(value: dt.date | dt.datetime, language: str, style: str = "long") -> str:
    """A date as readers of `language` write it: "December 5, 2026", "2026年12月5日"."""
    from babel.dates import format_date

    return format_date(value, style, locale=locale(language))


def datetime_text(value: dt.datetime, language: str, timezone: str = "UTC", style: str = "medium") -> str:
    """A moment in `timezone` as readers of `language` write it, with the zone."""
    from babel.dates import format_datetime, get_timezone

    return format_datetime(value, style, tzinfo=get_timezone(timezone), locale=locale(language))


def number_text(value: float, language: str) -> str:
    """A number with the grouping and decimal marks of `language`."""
    from babel.numbers import format_decimal

    return format_decimal(value, locale=locale(language))


def catalog_path(language: str) -> Path:
    """Where the `.po` file of `language` lives."""
    return LOCALE_DIR / language.replace("-", "_") / "LC_MESSAGES" / f"{DOMAIN}.po"
