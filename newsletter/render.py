"""Render an issue once: Markdown -> Jinja2 -> MJML -> HTML -> premailer, plus text and web versions."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from html import escape as html_escape
from pathlib import Path
from typing import Any

import cssutils
import jinja2
from mjml import mjml2html
from premailer import Premailer

from newsletter import fields, theme
from newsletter.cjk import HAN_RE, HANGUL_RE, KANA_RE
from newsletter.errors import IssueFormatError
from newsletter.frontmatter import FrontMatter, split_front_matter
from newsletter.images import InlineImage, is_remote, load_local_image
from newsletter.markdown import Heading, ParsedMarkdown, Reference, inline_text, parse_markdown, render_markdown_html
from newsletter.plaintext import display_width, markdown_to_text, wrap
from newsletter.remote import RemoteImageSizes
from newsletter.resources import bytecode_cache, template_loader
from newsletter.sanitizer import ImageSource, clean_html
from newsletter.settings import Settings
from newsletter.slots import (
    SlotMarker,
    SlotTemplate,
    field_slot_name,
    fill_slots,
    html_slot,
    strip_slot_delimiters,
    text_slot,
)

__all__ = ["InlineImage", "RenderedIssue", "SlotTemplate", "fill_slots", "render_issue", "render_issue_file"]

MAX_ISSUE_BYTES = 2 * 1_048_576  # far past what any inbox shows; a bigger file is a mistake, not an issue
PREHEADER_COLUMNS = 140  # inbox lists show roughly the first 90-140 characters after the subject
SLUG_CHARS = 80  # short enough to read in a URL, well within models.SLUG_MAX_CHARS
SLUG_RE = re.compile(r"[^\w.-]+")
CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
STYLE_TAG_RE = re.compile(r"<style\b", re.IGNORECASE)
FALSE_WORDS = frozenset({"no", "false", "off", "0"})


@dataclass(frozen=True)
class ImageProblem:
    """A local image that could not be embedded."""

    src: str
    problem: str


@dataclass(frozen=True)
class RenderedIssue:
    """An issue rendered once; `html` and `text` hold per-recipient slots (see newsletter.slots)."""

    slug: str
    subject: str
    preheader: str
    lang: str
    html: str
    text: str
    web_html: str
    images: tuple[InlineImage, ...]
    source_text: str
    source_hash: str
    content_html: str = ""  # the issue's own HTML, for pages that wrap it in their own layout
    date: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    headings: tuple[Heading, ...] = ()
    references: tuple[Reference, ...] = ()
    image_problems: tuple[ImageProblem, ...] = ()
    subject_origin: str = "front matter"  # or "option" (--subject), "heading" (the first heading's text)
    opens_with_h1: bool = False  # the Markdown's first block is a level-1 heading: the body's own title
    shows_title: bool = True  # the template prints the subject as the body's title
    fields: tuple[fields.Field, ...] = ()  # the personal fields the author wrote, in order

    @property
    def links(self) -> tuple[str, ...]:
        """The URLs the issue links to, in order, each once."""
        return tuple(dict.fromkeys(ref.url for ref in self.references if ref.kind == "link" and ref.url))


def render_issue_file(
    path: Path, settings: Settings, *, subject: str | None = None, image_sizes: RemoteImageSizes | None = None
) -> RenderedIssue:
    """Render an issue file; local images are looked up beside it, the slug defaults to its name.

    Raises:
        IssueFormatError: the file cannot be read as UTF-8 text, or the issue cannot be rendered.
    """
    try:
        size = path.stat().st_size
        if size > MAX_ISSUE_BYTES:
            raise IssueFormatError(
                f"{path} is {size / 1_048_576:.1f} MiB; an issue is at most {MAX_ISSUE_BYTES // 1_048_576} MiB "
                "of Markdown (Gmail already clips a message past 102 KB)"
            )
        source = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise IssueFormatError(f"cannot read {path}: {error}") from None
    return render_issue(
        source, settings, base_dir=path.parent, subject=subject, slug=path.stem, image_sizes=image_sizes
    )


def render_issue(
    source_text: str,
    settings: Settings,
    *,
    base_dir: Path | None = None,
    subject: str | None = None,
    slug: str | None = None,
    image_sizes: RemoteImageSizes | None = None,
) -> RenderedIssue:
    """Render Markdown (with optional front matter) into the email's HTML and text, and a web page.

    Parameters:
        subject: used when the front matter names none; else the first heading is the subject.
        slug: used when the front matter names none; else one is made from the subject.
        image_sizes: the size of a remote image, where it can be known; else remote images are shown at
            their natural size up to the column width.

    Raises:
        IssueFormatError: the front matter is invalid, or no subject can be found.
    """
    source = source_text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    # Control characters are invalid in XML and HTML text (MRML refuses them) and invisible anyway.
    source = strip_slot_delimiters(CONTROL_CHARS_RE.sub("", source))
    # Personal fields become placeholder words now, slots once the email is rendered (see fields.py).
    source, personal = fields.extract(source)
    front = split_front_matter(source)
    parsed = parse_markdown(front.body, front.body_line)
    title, origin = _subject(front, parsed, subject)
    meta = {key: personal.replace(value, _fallback) for key, value in front.meta.items()}
    opens = opens_with_h1(parsed)
    lang = meta.get("lang") or detect_lang(personal.replace(front.body, _fallback))
    if image_sizes is not None:
        image_sizes.prefetch(ref.url for ref in parsed.references if ref.kind == "image")
    images = _ImageResolver(base_dir, image_sizes)
    content = clean_html(render_markdown_html(parsed), images.resolve, theme.CONTENT_WIDTH_PX)
    page = _PageValues(
        settings,
        title,
        _preheader(front.meta, parsed),
        lang,
        meta.get("date", ""),
        content,
        shows_title(meta, origin, opens),
    )
    shown_title = personal.replace(title, _fallback)
    return RenderedIssue(
        slug=make_slug(meta.get("slug") or slug or shown_title),
        subject=personal.replace(title, _text_field_slot),
        preheader=personal.replace(page.preheader, _fallback),
        lang=lang,
        html=personal.replace(email_html(page, _templates(settings.template_dir)), _html_field_slot),
        text=personal.replace(email_text(page, markdown_to_text(parsed)), _text_field_slot),
        web_html=personal.replace(
            web_html(page, _templates(settings.template_dir), images.embedded), _escaped_fallback
        ),
        images=tuple(images.embedded.values()),
        source_text=source_text,
        source_hash=hashlib.sha256(source_text.encode("utf-8")).hexdigest(),
        content_html=personal.replace(images.with_data_uris(content), _escaped_fallback),
        date=page.date,
        meta=meta,
        fields=personal.fields,
        headings=tuple(parsed.headings),
        references=tuple(parsed.references),
        image_problems=tuple(images.problems),
        subject_origin=origin,
        opens_with_h1=opens,
        shows_title=page.show_title,
    )


def _fallback(field: fields.Field) -> str:
    return field.fallback


def _escaped_fallback(field: fields.Field) -> str:
    return html_escape(field.fallback)


def _html_field_slot(field: fields.Field) -> str:
    return html_slot(field_slot_name(field.name, field.fallback))


def _text_field_slot(field: fields.Field) -> str:
    return text_slot(field_slot_name(field.name, field.fallback))


@dataclass(frozen=True)
class _PageValues:
    settings: Settings
    subject: str
    preheader: str
    lang: str
    date: str
    content: str
    show_title: bool


class _ImageResolver:
    """Turns each image src into what the email uses: remote stays, local becomes cid:, else reported."""

    def __init__(self, base_dir: Path | None, remote_sizes: RemoteImageSizes | None) -> None:
        self.base_dir = base_dir
        self.remote_sizes = remote_sizes
        self.embedded: dict[str, InlineImage] = {}
        self.problems: list[ImageProblem] = []

    def resolve(self, src: str) -> ImageSource:
        if not src or is_remote(src):
            size = (
                self.remote_sizes(src)
                if self.remote_sizes is not None and src.startswith(("http:", "https:"))
                else None
            )
            return ImageSource(src, size[0] if size else None)
        local = load_local_image(src, self.base_dir)
        if local.image is None:
            self.problems.append(ImageProblem(src, local.problem))
            return ImageSource(src)
        self.embedded[local.image.cid] = local.image
        return ImageSource(f"cid:{local.image.cid}", local.width_px)

    def with_data_uris(self, html: str) -> str:
        for cid, image in self.embedded.items():
            html = html.replace(f'src="cid:{cid}"', f'src="{image.data_uri}"')
        return html


def _subject(front: FrontMatter, parsed: ParsedMarkdown, given: str | None) -> tuple[str, str]:
    """The subject and where it came from: "front matter", "option" or "heading"."""
    candidates = [(front.meta.get("subject"), "front matter"), (front.meta.get("title"), "front matter")]
    candidates += [(given, "option"), *((heading.text, "heading") for heading in parsed.headings[:1])]
    for candidate, origin in candidates:
        text = " ".join(CONTROL_CHARS_RE.sub("", candidate or "").split())
        if text:
            return text, origin
    raise IssueFormatError(
        "the issue has no subject: add `subject:` front matter, pass --subject, or start the issue with a heading"
    )


def opens_with_h1(parsed: ParsedMarkdown) -> bool:
    """Whether the Markdown's first block is a level-1 heading (its own title)."""
    first = next((token for token in parsed.tokens if token.type != "html_block" or token.content.strip()), None)
    return first is not None and first.type == "heading_open" and first.tag == "h1"


def shows_title(meta: dict[str, str], subject_origin: str, opens_with_title: bool) -> bool:
    """Whether the template prints the subject atop the body: not when the body already shows it (its own
    opening H1, or the heading the subject was taken from), nor when the front matter says `show_title: no`."""
    if meta.get("show_title", "").lower() in FALSE_WORDS:
        return False
    return not opens_with_title and subject_origin != "heading"


def _preheader(meta: dict[str, str], parsed: ParsedMarkdown) -> str:
    text = meta.get("preheader") or meta.get("summary") or meta.get("description") or ""
    if not text:
        tokens = parsed.tokens
        paragraphs = (tokens[i + 1] for i, t in enumerate(tokens) if t.type == "paragraph_open")
        text = next((inline_text(inline) for inline in paragraphs if inline_text(inline)), "")
    text = " ".join(text.split())
    if display_width(text) <= PREHEADER_COLUMNS:
        return text
    return wrap(text, PREHEADER_COLUMNS - 1)[0].rstrip() + "…"


def detect_lang(text: str) -> str:
    """A BCP 47 tag guessed from the script of the text: zh-CN for Chinese, ja, ko, else en."""
    if KANA_RE.search(text):
        return "ja"
    if HANGUL_RE.search(text):
        return "ko"
    sample = text[:20000]
    han = len(HAN_RE.findall(sample))
    # Chinese when Han characters are a fair share of the letters (English with a quoted name stays en).
    if han and han * 4 >= sum(char.isalpha() for char in sample):
        return "zh-CN"
    return "en"


def make_slug(text: str) -> str:
    """A file-name and URL safe slug."""
    slug = SLUG_RE.sub("-", unicodedata.normalize("NFKC", text)).strip("-.").lower()
    return slug[:SLUG_CHARS] or "issue"


@cache
def _templates(template_dir: str) -> jinja2.Environment:
    # Markup templates escape what they are given; the CSS templates must not (a font name's quotes).
    return jinja2.Environment(
        loader=template_loader(template_dir),
        bytecode_cache=bytecode_cache(),
        autoescape=_escapes_markup,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _escapes_markup(name: str | None) -> bool:
    return not (name or "").endswith(".css.j2")


def _common(page: _PageValues, environment: jinja2.Environment) -> dict[str, Any]:
    values: dict[str, Any] = {
        "subject": page.subject,
        "preheader": page.preheader,
        "lang": page.lang,
        "date": page.date,
        "newsletter_name": page.settings.newsletter_name,
        "postal_address": page.settings.postal_address,
        "light": theme.LIGHT,
        "dark": theme.DARK,
        "fonts": theme.FONTS,
        "body_width_px": theme.BODY_WIDTH_PX,
        "show_title": page.show_title,
    }
    values["css"] = environment.get_template("content.css.j2").render(values)
    head = (environment.get_template(name).render(values) for name in ("head.css.j2", "dark.css.j2"))
    values["head_css"] = "".join(head)
    return values


def email_html(page: _PageValues, environment: jinja2.Environment) -> str:
    """The email's HTML with slots: MJML renders the frame, the content goes in after, premailer inlines."""
    marker = SlotMarker()
    content_mark = f"{marker.word}content"
    words = dict(theme.words_for(page.lang))
    words["why"] = words["why"].format(name=page.settings.newsletter_name, email=marker.mark("email"))
    values = _common(page, environment) | {"content": content_mark, "slot": marker.mark, "words": words}
    mjml = environment.get_template("issue.mjml.j2").render(values)
    try:
        frame = mjml2html(mjml, disable_comments=True, fonts={})
    except ValueError as error:
        raise IssueFormatError(f"the email template is not valid MJML: {error}") from None
    # The content never passes through MRML's parser, which rejects some valid HTML (a bare `<`).
    html = frame.replace(content_mark, page.content, 1)
    html = html.replace(
        "<head>",
        '<head><meta name="color-scheme" content="light dark">'
        '<meta name="supported-color-schemes" content="light dark">',
        1,
    )
    return marker.to_html_slots(inline_css(html, values["css"]))


@cache
def _skip_css_validation() -> None:
    """Turn off cssutils' property validation, once per process."""
    # premailer validates every inline style attribute even with disable_validation (its merge_styles);
    # validating only logs, and compiling cssutils' patterns costs about 0.3 s of the first render in a
    # process, half of `newsletter preview`. Without profiles every property is kept as written.
    cssutils.profile.removeProfile(all=True)


def inline_css(html: str, css: str) -> str:
    """Inline `css` into the elements it matches; the document's own <style> blocks stay in the head as they are.

    MJML's resets (`table, td {...}`, `p {display: block}`) and media queries are written for the head:
    inlined, they would repeat on every cell and paragraph and take a third of the message.
    """
    _skip_css_validation()
    # premailer keeps the doctype only when it is spelled as lxml spells it; without one, browsers and
    # webmail render in quirks mode.
    if html[:15].lower() == "<!doctype html>":
        html = "<!DOCTYPE html>" + html[15:]
    inliner = Premailer(
        STYLE_TAG_RE.sub('<style data-premailer="ignore"', html),
        css_text=css,
        allow_network=False,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        exclude_pseudoclasses=True,
        disable_link_rewrites=True,
        disable_basic_attributes=["width", "height"],
    )
    return str(inliner.transform(pretty_print=False))


def email_text(page: _PageValues, body: str) -> str:
    """The text part: name, subject, body, and a footer with the slots."""
    settings = page.settings
    words = theme.words_for(page.lang)
    # When the body opens with its own H1, that heading is the title: the subject is not said twice.
    head = [settings.newsletter_name, page.subject] if page.show_title else [settings.newsletter_name]
    if page.date:
        head.append(page.date)
    why = words["why"].format(name=settings.newsletter_name, email=text_slot("email"))
    footer = [
        "-- ",
        *wrap(why),
        f"{words['text_view']}: {text_slot('view_url')}",
        # ?hl=: the page a reader whose language is not stored opens from here speaks the issue's language.
        f"{words['text_unsubscribe']}: {text_slot('unsubscribe_url')}?hl={page.lang}",
        f"{words['text_preferences']}: {text_slot('preferences_url')}?hl={page.lang}",
    ]
    if settings.postal_address:
        footer.extend(wrap(settings.postal_address))
    return "\n".join([*head, "", body.rstrip("\n"), "", *footer]) + "\n"


def web_html(page: _PageValues, environment: jinja2.Environment, images: dict[str, InlineImage]) -> str:
    """A standalone page of the issue for the archive; local images become data: URIs."""
    content = page.content
    for cid, image in images.items():
        content = content.replace(f'src="cid:{cid}"', f'src="{image.data_uri}"')
    archive_url = page.settings.base_url.rstrip("/") + "/issues"
    values = _common(page, environment) | {"content": content, "archive_url": archive_url}
    values["web_css"] = environment.get_template("web.css.j2").render(values)
    return environment.get_template("issue_web.html.j2").render(values)
