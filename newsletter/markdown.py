"""Markdown to HTML the way a CJK editor (Typora) shows it: GFM, `[TOC]`, CJK-friendly emphasis."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_cjk_friendly import cjk_friendly
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.tasklists import tasklists_plugin

from newsletter.cjk import CJK

TOC_MARK_RE = re.compile(r"^\s*\[toc\]\s*$", re.IGNORECASE)
# A bare URL ends before CJK text or full-width punctuation (`）`, `，`, `。`): Chinese prose puts no
# space after a URL, and no real URL carries these characters unencoded.
URL_STOP_RE = re.compile(f"[{CJK}\u2018-\u201f\u2026]")  # curly quotes and the ellipsis too
CHECKBOX_PREFIX = '<input class="task-list-item-checkbox"'


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str
    line: int


@dataclass(frozen=True)
class Reference:
    """A link or an image of the issue, with the source line it is on (1-based)."""

    kind: str  # "link" or "image"
    url: str
    text: str
    line: int
    raw_html: bool = False


@dataclass
class ParsedMarkdown:
    """The token tree of an issue body and what was found in it."""

    tokens: list[Token]
    parser: MarkdownIt
    env: dict[str, Any]
    headings: list[Heading] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)


class _LinkMatch:
    __slots__ = ("index", "last_index", "raw", "schema", "text", "url")

    def __init__(self, schema: str | None, index: int, raw: str, url: str) -> None:
        self.schema, self.index, self.raw, self.text, self.url = schema, index, raw, raw, url
        self.last_index = index + len(raw)


class CjkLinkify:
    """linkify-it with URLs cut at the first CJK character or full-width punctuation."""

    def __init__(self) -> None:
        self._linkify = LinkifyIt(options={"fuzzy_link": False, "fuzzy_email": False, "fuzzy_ip": False})

    def pretest(self, text: str) -> bool:
        return bool(self._linkify.pretest(text))

    def test(self, text: str) -> bool:
        return bool(self.match(text))

    def match(self, text: str) -> list[_LinkMatch]:
        found = (self._cut(text, match) for match in self._linkify.match(text) or [])
        return [match for match in found if match is not None]

    def match_at_start(self, text: str) -> _LinkMatch | None:
        match = self._linkify.match_at_start(text)
        return self._cut(text, match) if match is not None else None

    @staticmethod
    def _cut(text: str, match: Any) -> _LinkMatch | None:
        raw = text[match.index : match.last_index]
        stop = URL_STOP_RE.search(raw)
        if stop is not None:
            raw = raw[: stop.start()]
        if len(raw) <= len(match.schema or "") + 3:
            return None
        prefix = match.url[: len(match.url) - len(match.raw)] if match.url.endswith(match.raw) else ""
        return _LinkMatch(match.schema, match.index, raw, prefix + raw)


def make_parser() -> MarkdownIt:
    """CommonMark with GFM tables, strikethrough, task lists, footnotes, linkify and CJK-friendly emphasis."""
    parser = MarkdownIt("commonmark", {"html": True, "linkify": True, "typographer": False})
    parser.enable(["table", "strikethrough", "linkify"])
    parser.linkify = CjkLinkify()
    parser.use(cjk_friendly).use(footnote_plugin).use(tasklists_plugin)
    parser.add_render_rule("heading_open", _render_heading_open)
    return parser


def parse_markdown(body: str, line_offset: int = 0) -> ParsedMarkdown:
    """Parse the body; give headings anchors, turn `[TOC]` into a contents list, find links and images."""
    parser = make_parser()
    env: dict[str, Any] = {}
    parsed = ParsedMarkdown(parser.parse(body, env), parser, env)
    _replace_checkboxes(parsed.tokens)
    _collect_headings(parsed, line_offset)
    _insert_toc(parsed)
    _collect_references(parsed, line_offset)
    return parsed


def render_markdown_html(parsed: ParsedMarkdown) -> str:
    """The body as HTML, before it is cleaned for email."""
    return str(parsed.parser.renderer.render(parsed.tokens, parsed.parser.options, parsed.env))


def inline_text(token: Token) -> str:
    """The visible text of an inline token (links keep their text, images their alt)."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "image":
            parts.append(inline_text(child))
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts).strip()


def _render_heading_open(self: Any, tokens: list[Token], index: int, options: Any, env: Any) -> str:
    # Gmail and Outlook drop `id` but keep `<a name>`, so in-message links (the TOC) use names.
    token = tokens[index]
    anchor = token.meta.get("anchor")
    opening = str(self.renderToken(tokens, index, options, env))
    return f'{opening}<a name="{anchor}"></a>' if anchor else opening


def _replace_checkboxes(tokens: list[Token]) -> None:
    # Mail clients drop form controls; a ballot-box character shows the same thing everywhere.
    for token in tokens:
        for child in token.children or []:
            if child.type == "html_inline" and child.content.startswith(CHECKBOX_PREFIX):
                child.type = "text"
                child.content = "\u2611" if 'checked="checked"' in child.content else "\u2610"


def _collect_headings(parsed: ParsedMarkdown, line_offset: int) -> None:
    tokens = parsed.tokens
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and index + 1 < len(tokens):
            anchor = f"section-{len(parsed.headings) + 1}"
            token.meta["anchor"] = anchor
            line = (token.map[0] if token.map else 0) + line_offset + 1
            parsed.headings.append(Heading(int(token.tag[1]), inline_text(tokens[index + 1]), anchor, line))


def _insert_toc(parsed: ParsedMarkdown) -> None:
    tokens = parsed.tokens
    for index in range(len(tokens) - 2):
        opening, inline = tokens[index], tokens[index + 1]
        if opening.type == "paragraph_open" and inline.type == "inline" and TOC_MARK_RE.match(inline.content):
            toc = Token("html_block", "", 0)
            toc.content = toc_html(parsed.headings)
            toc.map = opening.map
            toc.meta["toc"] = True
            tokens[index : index + 3] = [toc]
            return _insert_toc(parsed)
    return None


def toc_html(headings: list[Heading]) -> str:
    """A nested list of links to the headings' `<a name>` anchors."""
    if not headings:
        return ""
    top = min(heading.level for heading in headings)
    out = ['<div class="toc">']
    depth = 0
    for heading in headings:
        level = heading.level - top + 1
        while depth < level:
            out.append("<ul>")
            depth += 1
        while depth > level:
            out.append("</ul>")
            depth -= 1
        out.append(f'<li><a href="#{heading.anchor}">{html.escape(heading.text)}</a></li>')
    out.append("</ul>" * depth + "</div>\n")
    return "".join(out)


def _collect_references(parsed: ParsedMarkdown, line_offset: int) -> None:
    for token in parsed.tokens:
        first_line = (token.map[0] if token.map else 0) + line_offset + 1
        if token.type == "html_block" and not token.meta.get("toc"):
            parsed.references.extend(_raw_html_references(token.content, first_line))
        elif token.type == "inline":
            _inline_references(parsed, token, first_line)


def _inline_references(parsed: ParsedMarkdown, token: Token, line: int) -> None:
    children = token.children or []
    for index, child in enumerate(children):
        if child.type in ("softbreak", "hardbreak"):
            line += 1
        elif child.type == "link_open":
            parsed.references.append(
                Reference("link", str(child.attrs.get("href", "")), _link_text(children, index), line)
            )
        elif child.type == "image":
            parsed.references.append(Reference("image", str(child.attrs.get("src", "")), inline_text(child), line))
        elif child.type == "html_inline":
            parsed.references.extend(_raw_html_references(child.content, line))


def _link_text(children: list[Token], start: int) -> str:
    parts = []
    for child in children[start + 1 :]:
        if child.type == "link_close":
            break
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "image":
            parts.append(inline_text(child) or "[image]")
    return "".join(parts).strip()


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str], int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "img"):
            self.found.append((tag, {name: value or "" for name, value in attrs}, self.getpos()[0] - 1))


def _raw_html_references(content: str, line: int) -> list[Reference]:
    collector = _TagCollector()
    collector.feed(content)
    collector.close()
    found = []
    for tag, attrs, offset in collector.found:
        if tag == "img":
            found.append(Reference("image", attrs.get("src", ""), attrs.get("alt", ""), line + offset, True))
        elif "href" in attrs:
            found.append(Reference("link", attrs["href"], "(raw HTML)", line + offset, True))
    return found
