"""The text/plain part, written from the Markdown token tree: links become numbered references."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from markdown_it.token import Token
from wcwidth import wcwidth

from newsletter.cjk import CJK, is_cjk
from newsletter.markdown import URL_STOP_RE, ParsedMarkdown

TEXT_WIDTH_COLUMNS = 76  # RFC 5322 2.1.1 recommends lines of at most 78 characters
NARROWEST_COLUMN = 8  # a table column is wrapped down to this width before the table overflows the line
COLUMN_GAP = " | "
URL_RE = re.compile(r"(?:https?|ftp|mailto|cid):[^\s<>\"]+|www\.[^\s<>\"]+", re.IGNORECASE)
# Kinsoku: these never start a line (closing marks) or never end one (opening marks).
NO_LINE_START = frozenset("，。、；：！？）」』】〉》〕…—,.;:!?)]}%’”·～~")
NO_LINE_END = frozenset("（「『【〈《〔([{‘“")
ATOM_RE = re.compile(rf"\s+|[^\s{CJK}]+|.", re.DOTALL)


def display_width(text: str) -> int:
    """Columns the text takes in a fixed-width font: CJK characters count twice."""
    return sum(max(0, wcwidth(char)) for char in text)


def wrap(text: str, width: int = TEXT_WIDTH_COLUMNS, first_prefix: str = "", prefix: str = "") -> list[str]:
    """Wrap text into lines of `width` columns; URLs are never broken, CJK may break between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines.extend(_wrap_line(paragraph, width, first_prefix if not lines else prefix, prefix))
    return lines


def _wrap_line(text: str, width: int, first_prefix: str, prefix: str) -> list[str]:
    lines: list[str] = []
    current, current_width, space = first_prefix, display_width(first_prefix), False
    empty = True
    for atom in _atoms(text):
        if atom.isspace():
            space = not empty
            continue
        gap = " " if space else ""
        atom_width = display_width(atom)
        if not empty and current_width + len(gap) + atom_width > width:
            lines.append(current.rstrip())
            current, current_width, gap = prefix, display_width(prefix), ""
        current += gap + atom
        current_width += len(gap) + atom_width
        empty, space = False, False
    lines.append(current.rstrip())
    return lines


def _atoms(text: str) -> list[str]:
    """Unbreakable pieces: URLs, words, single CJK characters, runs of space; punctuation glued on."""
    atoms: list[str] = []
    position = 0
    for match in URL_RE.finditer(text):
        url = match.group(0)
        stop = URL_STOP_RE.search(url)
        end = match.start() + (stop.start() if stop else len(url))
        atoms.extend(ATOM_RE.findall(text[position : match.start()]))
        atoms.append(text[match.start() : end])
        position = end
    atoms.extend(ATOM_RE.findall(text[position:]))
    glued: list[str] = []
    for atom in atoms:
        if (
            glued
            and not atom.isspace()
            and not glued[-1].isspace()
            and (atom[0] in NO_LINE_START or glued[-1][-1] in NO_LINE_END)
        ):
            glued[-1] += atom
        else:
            glued.append(atom)
    return glued


@dataclass
class _Context:
    first: str
    rest: str
    used: bool = False

    def take(self) -> str:
        prefix = self.rest if self.used else self.first
        self.used = True
        return prefix


@dataclass
class TextWriter:
    """Walks the block tokens, keeping list and quote prefixes and each section's link references."""

    lines: list[str] = field(default_factory=list)
    contexts: list[_Context] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    counter: int = 0
    list_numbers: list[int | None] = field(default_factory=list)

    def prefixes(self) -> tuple[str, str]:
        first = "".join(context.take() for context in self.contexts)
        rest = "".join(context.rest for context in self.contexts)
        return first, rest

    def blank(self) -> None:
        """End a block with one empty line (inside a quote, a bare `>`)."""
        empty = "".join(context.rest for context in self.contexts).rstrip()
        if self.lines and self.lines[-1] not in ("", empty):
            self.lines.append(empty)

    def block(self, text: str, wrapped: bool = True) -> None:
        first, rest = self.prefixes()
        if wrapped:
            self.lines.extend(wrap(text, TEXT_WIDTH_COLUMNS, first, rest))
        else:
            source_lines = text.split("\n")
            self.lines.extend((first if index == 0 else rest) + line for index, line in enumerate(source_lines))

    def flush_references(self) -> None:
        if not self.references:
            return
        self.blank()
        self.lines.extend(self.references)
        self.references = []

    def reference(self, url: str) -> int:
        self.counter += 1
        self.references.append(f"[{self.counter}] {url}")
        return self.counter


def markdown_to_text(parsed: ParsedMarkdown) -> str:
    """The issue body as plain text wrapped at 76 columns."""
    writer = TextWriter()
    tokens = parsed.tokens
    index = 0
    while index < len(tokens):
        index = _write_block(writer, tokens, index, parsed)
    writer.flush_references()
    return "\n".join(writer.lines).strip("\n") + "\n"


def _write_block(writer: TextWriter, tokens: list[Token], index: int, parsed: ParsedMarkdown) -> int:
    token = tokens[index]
    kind = token.type
    if kind == "heading_open":
        writer.flush_references()
        writer.blank()
        text = inline_to_text(tokens[index + 1], writer)
        writer.block(text)
        if token.tag in ("h1", "h2"):
            writer.lines.append(("=" if token.tag == "h1" else "-") * min(TEXT_WIDTH_COLUMNS, display_width(text)))
        writer.blank()
        return index + 3
    if kind == "paragraph_open":
        text = inline_to_text(tokens[index + 1], writer)
        if text:  # a paragraph of only an image without alt text leaves nothing to show
            if not token.hidden:
                writer.blank()
            writer.block(text)
            if not token.hidden:
                writer.blank()
        return index + 3
    if kind == "table_open":
        return _write_table(writer, tokens, index)
    _write_structure(writer, token, parsed)
    return index + 1


def _write_structure(writer: TextWriter, token: Token, parsed: ParsedMarkdown) -> None:
    kind = token.type
    if kind == "blockquote_open":
        writer.blank()
        writer.contexts.append(_Context("> ", "> "))
    elif kind in ("blockquote_close", "list_item_close"):
        closed = writer.contexts.pop()
        if kind == "blockquote_close":
            while writer.lines and writer.lines[-1] == closed.rest.rstrip():
                writer.lines.pop()
            writer.blank()
    elif kind in ("bullet_list_open", "ordered_list_open"):
        start = int(token.attrs.get("start", 1)) if kind == "ordered_list_open" else None
        writer.list_numbers.append(start)
    elif kind in ("bullet_list_close", "ordered_list_close"):
        writer.list_numbers.pop()
        writer.blank()
    elif kind == "list_item_open":
        number = writer.list_numbers[-1] if writer.list_numbers else None
        bullet = "- " if number is None else f"{number}. "
        if number is not None:
            writer.list_numbers[-1] = number + 1
        writer.contexts.append(_Context(bullet, " " * len(bullet)))
    elif kind in ("fence", "code_block"):
        writer.blank()
        writer.block("\n".join("    " + line for line in token.content.rstrip("\n").split("\n")), wrapped=False)
        writer.blank()
    elif kind == "html_block":
        _write_html_block(writer, token, parsed)
    elif kind == "hr":
        writer.blank()
        writer.block("-" * 20, wrapped=False)
        writer.blank()
    elif kind == "inline":  # footnote paragraphs and anything else that holds text
        writer.block(inline_to_text(token, writer))
    elif kind == "footnote_block_open":
        writer.flush_references()
        writer.blank()
        writer.block("-" * 20, wrapped=False)
    elif kind == "footnote_open":
        writer.contexts.append(_Context(f"[^{token.meta.get('id', 0) + 1}] ", "    "))
    elif kind == "footnote_close":
        writer.contexts.pop()


def _write_table(writer: TextWriter, tokens: list[Token], index: int) -> int:
    """A table as aligned columns; returns the index after it."""
    rows: list[list[str]] = []
    right: dict[int, bool] = {}
    header_rows = 0
    while tokens[index].type != "table_close":
        token = tokens[index]
        if token.type == "tr_open":
            rows.append([])
        elif token.type in ("th_open", "td_open"):
            right[len(rows[-1])] = "right" in str(token.attrs.get("style", ""))
            header_rows += token.type == "th_open" and not rows[-1]
        elif token.type == "inline":
            rows[-1].append(inline_to_text(token, writer))
        index += 1
    writer.blank()
    first, rest = writer.prefixes()
    lines = table_lines(rows, header_rows, right, TEXT_WIDTH_COLUMNS - display_width(rest))
    writer.lines.extend((first if number == 0 else rest) + line for number, line in enumerate(lines))
    writer.blank()
    return index + 1


def table_lines(rows: list[list[str]], header_rows: int, right: dict[int, bool], width: int) -> list[str]:
    """Rows of cells as lines of aligned columns (CJK counted double); a `<br>` in a cell stays in its row."""
    count = max((len(row) for row in rows), default=0)
    cells = [[(row[column] if column < len(row) else "").split("\n") for column in range(count)] for row in rows]
    widths = [max((display_width(line) for row in cells for line in row[column]), default=0) for column in range(count)]
    room = width - len(COLUMN_GAP) * (count - 1)
    # The widest column wraps first, never below its longest word nor NARROWEST_COLUMN.
    floors = [
        max([NARROWEST_COLUMN, *(display_width(word) for row in cells for line in row[c] for word in line.split())])
        for c in range(count)
    ]
    while sum(widths) > room:
        shrinkable = [c for c in range(count) if widths[c] > floors[c]]
        if not shrinkable:
            break
        widths[max(shrinkable, key=lambda c: widths[c])] -= 1
    wrapped = [
        [[piece for line in cell for piece in wrap(line, widths[c])] for c, cell in enumerate(row)] for row in cells
    ]
    # A word longer than its column (wrap never breaks one) widens the column to fit it.
    widths = [max((display_width(line) for row in wrapped for line in row[c]), default=0) for c in range(count)]
    out: list[str] = []
    for number, row in enumerate(wrapped):
        for line in range(max((len(cell) for cell in row), default=0)):
            texts = [cell[line] if line < len(cell) else "" for cell in row]
            out.append(
                COLUMN_GAP.join(_pad(text, widths[c], right.get(c, False)) for c, text in enumerate(texts)).rstrip()
            )
        if number + 1 == header_rows:
            out.append("-+-".join("-" * column_width for column_width in widths))
    return out


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(0, width - display_width(text))
    return space + text if right else text + space


def _write_html_block(writer: TextWriter, token: Token, parsed: ParsedMarkdown) -> None:
    writer.blank()
    if token.meta.get("toc"):
        top = min((heading.level for heading in parsed.headings), default=1)
        for heading in parsed.headings:
            indent = "  " * (heading.level - top)
            writer.lines.extend(wrap(heading.text, TEXT_WIDTH_COLUMNS, indent + "- ", indent + "  "))
    else:
        text = html_to_text(token.content).strip()
        if text:
            writer.block(text)
    writer.blank()


def inline_to_text(token: Token, writer: TextWriter) -> str:
    """An inline token as text: link text followed by its reference number, images as their alt text."""
    parts: list[str] = []
    link_start: list[tuple[int, str]] = []
    children = token.children or []
    for position, child in enumerate(children):
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            before = children[position - 1].content[-1:] if position else ""
            after = children[position + 1].content[:1] if position + 1 < len(children) else ""
            parts.append("" if is_cjk(before) and is_cjk(after) else " ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "image":
            alt = "".join(grand.content for grand in child.children or []).strip()
            parts.append(f"[{alt}]" if alt else "")
        elif kind == "link_open":
            link_start.append((len(parts), str(child.attrs.get("href", ""))))
        elif kind == "link_close" and link_start:
            start, url = link_start.pop()
            _close_link(parts, start, url, writer)
        elif kind == "html_inline":
            parts.append(html_to_text(child.content))
        elif kind == "footnote_ref":
            parts.append(f"[^{child.meta.get('id', 0) + 1}]")
    return "".join(parts).strip()


def _close_link(parts: list[str], start: int, url: str, writer: TextWriter) -> None:
    text = "".join(parts[start:]).strip()
    if not url or url.startswith("#"):
        return
    plain_url = url.removeprefix("mailto:")
    if not text or text in (url, plain_url, url.removeprefix("http://"), url.removeprefix("https://")):
        parts[start:] = [url if not text else text]
        return
    parts.append(f" [{writer.reference(url)}]")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "img":
            alt = dict(attrs).get("alt") or ""
            self.parts.append(f"[{alt}]" if alt else "")
        elif tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    """The visible text of an HTML fragment the author wrote (images as their alt text)."""
    collector = _TextCollector()
    collector.feed(fragment)
    collector.close()
    return re.sub(r"[ \t]*\n[ \t\n]*", "\n", "".join(collector.parts))
