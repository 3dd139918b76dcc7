"""Author HTML cut down to what mail clients show safely, with images sized for a narrow column."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import nh3
from lxml import html as lxml_html
from lxml.etree import Comment, ParserError

ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "del",
        "div",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "section",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
        "center",
        "font",
        "figure",
        "figcaption",
        "dl",
        "dt",
        "dd",
        "ruby",
        "rt",
        "rp",
    }
)
ALLOWED_ATTRIBUTES = {
    "*": {"class", "id", "style", "title", "lang", "dir", "align"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign"},
    "ol": {"start"},
    "font": {"color"},
}
ALLOWED_STYLE_PROPERTIES = frozenset(
    {
        "color",
        "background-color",
        "text-align",
        "font-weight",
        "font-style",
        "text-decoration",
        "width",
        "height",
        "zoom",
        "font-size",
        "vertical-align",
    }
)
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "tel"})
# Markup that is removed together with everything inside it, not just unwrapped.
DROPPED_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "iframe",
        "object",
        "embed",
        "form",
        "select",
        "textarea",
        "noscript",
        "template",
        "svg",
        "math",
        "title",
        "head",
    }
)
CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ZOOM_RE = re.compile(r"zoom\s*:\s*([0-9.]+)\s*(%?)", re.IGNORECASE)
PERCENT_RE = re.compile(r"^\s*([0-9.]+)\s*%\s*$")
IMAGE_STYLE = "display:block;height:auto;border:0;margin:0 auto;"

_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(URL_SCHEMES),
    link_rel=None,
    filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
)


@dataclass(frozen=True)
class ImageSource:
    """Where an image's bytes come from in the message: its new src, and its width when known."""

    src: str
    width_px: int | None = None


def clean_html(fragment: str, resolve_image: Callable[[str], ImageSource], content_width_px: int) -> str:
    """Sanitize an HTML fragment and fit its images, tables and anchors to an email column."""
    cleaned = _cleaner.clean(CONTROL_CHARS_RE.sub("", fragment))
    try:
        root = lxml_html.fragment_fromstring(cleaned, create_parent="div")
    except ParserError:  # lxml refuses a fragment that is only whitespace
        return ""
    for element in list(root.iter()):
        if element.tag == "img":
            _fit_image(element, resolve_image, content_width_px)
        elif element.tag == "table":
            _fit_table(element)
        elif element.tag == "pre":
            _fit_code(element)
        if element.get("id"):
            _name_anchor(element)
    root.text = root.text or ""
    inner: str = lxml_html.tostring(root, encoding="unicode", method="html")
    return inner[len("<div>") : -len("</div>")]


def _fit_image(image: lxml_html.HtmlElement, resolve_image: Callable[[str], ImageSource], column_px: int) -> None:
    source = resolve_image(image.get("src", ""))
    image.set("src", source.src)
    style = image.get("style", "")
    share = _share_of_column(style, image.get("width", ""))
    width_px = _declared_width(image.get("width", ""))
    if share is not None:
        width_px = max(1, round(column_px * share))
    elif width_px is None and source.width_px:
        width_px = source.width_px
    image.attrib.pop("height", None)
    if width_px is None:
        # Of unknown size: shown at its natural size up to the column, never enlarged to fill it.
        image.attrib.pop("width", None)
        image.set("style", "max-width:100%;" + IMAGE_STYLE)
        image.set("alt", image.get("alt", ""))
        return
    width_px = min(width_px, column_px)
    # Outlook's Word engine ignores max-width and sizes images by the width attribute alone.
    image.set("width", str(width_px))
    # A share of the column, never fixed pixels: an image a client blocks (Outlook, Thunderbird, Gmail with
    # images off) keeps its box, and a fixed box wider than a phone would widen the whole message.
    if share is not None:
        css_width = f"width:{round(share * 100)}%;max-width:100%;"
    else:
        css_width = f"width:100%;max-width:{width_px}px;"
    image.set("style", css_width + IMAGE_STYLE)
    image.set("alt", image.get("alt", ""))


def _share_of_column(style: str, width: str) -> float | None:
    # Typora writes a resized image as style="zoom:80%": the author saw it at 80 % of the column.
    zoom = ZOOM_RE.search(style)
    if zoom is not None:
        value = float(zoom.group(1))
        return min(1.0, value / 100 if zoom.group(2) else value) or None
    percent = PERCENT_RE.match(width)
    if percent is not None:
        return min(1.0, float(percent.group(1)) / 100) or None
    return None


def _declared_width(width: str) -> int | None:
    digits = width.strip().removesuffix("px")
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def _fit_table(table: lxml_html.HtmlElement) -> None:
    # A wide table scrolls inside its own box instead of widening the whole message.
    parent = table.getparent()
    if parent is None or parent.get("class") == "table-scroll":
        return
    box = lxml_html.Element("div", {"class": "table-scroll"})
    table.addprevious(box)
    box.append(table)


def _fit_code(pre: lxml_html.HtmlElement) -> None:
    # Outlook for Windows (Word) ignores white-space:pre-wrap and lets a long line widen the whole message;
    # inside a fixed-layout table of its own, Word wraps the line at the column instead.
    pre.addprevious(
        Comment('[if mso]><table role="presentation" width="100%" style="table-layout:fixed"><tr><td><![endif]')
    )
    closing = Comment("[if mso]></td></tr></table><![endif]")
    closing.tail, pre.tail = pre.tail, None
    pre.addnext(closing)


def _name_anchor(element: lxml_html.HtmlElement) -> None:
    # Gmail removes id attributes; an <a name> before the element keeps in-message links working.
    name = element.attrib.pop("id")
    if element.tag == "a" and not element.get("name"):
        element.set("name", name)
        return
    anchor = lxml_html.Element("a", {"name": name})
    anchor.tail, element.text = element.text, None
    element.insert(0, anchor)
