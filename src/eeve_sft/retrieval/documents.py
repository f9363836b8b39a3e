"""Reading a folder of documents (.md, .txt, .html, .pdf) into text blocks: headings and paragraphs.

Every format becomes one extracted text per file and a list of :class:`Block` with character offsets into that
text (for .md and .txt the text is the file itself). Markdown is parsed with markdown-it, HTML with BeautifulSoup,
PDF with pypdf (layout mode keeps the blank lines between paragraphs; the PDF's bookmarks tell which lines are
headings). A file that cannot be read is skipped with its reason, never fatal and never silent: the caller counts
:class:`Skipped` entries and reports them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

SUPPORTED = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")
HEADING, PARAGRAPH = "heading", "paragraph"
TXT_HEADING_CHARS = 40  # a one-line .txt paragraph this short without final punctuation reads as a heading
_SENTENCE_END = re.compile(r"[.!?。…:;)\]」』\"'”’]$|[다요죠까]$")


@dataclass(frozen=True)
class Block:
    kind: str  # HEADING or PARAGRAPH
    text: str
    start: int  # offsets into Document.text
    end: int
    level: int = 0  # heading level, 1 = title


@dataclass
class Document:
    path: str  # relative to the docs folder, with '/' separators
    sha256: str
    text: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str  # a short key: unknown_format, unreadable, encrypted_pdf, not_utf8, no_text
    detail: str


class _BadFile(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _clean(text: str) -> str:
    """NFC, no carriage returns or non-breaking spaces, runs of spaces collapsed (line breaks kept)."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    return re.sub(r"[ \t]+", " ", text)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _BadFile("not_utf8", f"not UTF-8 text (byte {err.start})") from None


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for m in re.finditer("\n", text):
        starts.append(m.end())
    starts.append(len(text) + 1)
    return starts


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _markdown_blocks(text: str) -> list[Block]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    starts = _line_starts(text)
    blocks: list[Block] = []
    depth = 0  # inside a list, table or quote: the whole container is one paragraph
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and depth == 0:
            inline = tokens[i + 1]
            start, end = _trimmed(text, starts[tok.map[0]], starts[tok.map[1]] - 1)
            blocks.append(Block(HEADING, inline.content.strip(), start, end, int(tok.tag[1])))
        elif tok.type in ("bullet_list_open", "ordered_list_open", "table_open", "blockquote_open"):
            if depth == 0 and tok.map:
                start, end = _trimmed(text, starts[tok.map[0]], starts[tok.map[1]] - 1)
                blocks.append(Block(PARAGRAPH, text[start:end], start, end))
            depth += 1
        elif tok.type in ("bullet_list_close", "ordered_list_close", "table_close", "blockquote_close"):
            depth -= 1
        elif tok.type in ("paragraph_open", "code_block", "fence") and depth == 0 and tok.map:
            start, end = _trimmed(text, starts[tok.map[0]], starts[tok.map[1]] - 1)
            if end > start:
                blocks.append(Block(PARAGRAPH, text[start:end], start, end))
    return blocks


def _is_txt_heading(paragraph: str) -> bool:
    line = paragraph.strip()
    return "\n" not in line and len(line) <= TXT_HEADING_CHARS and not _SENTENCE_END.search(line)


def _plain_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    for m in re.finditer(r"\S(?:.|\n(?![ \t]*\n))*", text):
        start, end = _trimmed(text, m.start(), m.end())
        piece = text[start:end]
        if _is_txt_heading(piece):
            blocks.append(Block(HEADING, piece, start, end, 1 if not blocks else 2))
        else:
            blocks.append(Block(PARAGRAPH, piece, start, end))
    return blocks


def _joined(parts: list[tuple[str, str, int]]) -> tuple[str, list[Block]]:
    """(kind, text, level) parts as one text, blank line between parts, with the blocks' offsets."""
    pieces, blocks, pos = [], [], 0
    for kind, text, level in parts:
        if pieces:
            pieces.append("\n\n")
            pos += 2
        pieces.append(text)
        blocks.append(Block(kind, text, pos, pos + len(text), level))
        pos += len(text)
    return "".join(pieces), blocks


_HTML_SKIP = ("script", "style", "nav", "header", "footer", "noscript", "template", "head")
_HTML_BLOCKS = ("h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "table", "pre", "blockquote", "dl")


def _html_parts(data: bytes) -> list[tuple[str, str, int]]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(_HTML_SKIP):
        tag.decompose()  # page furniture (menus, scripts, footers) is not manual text
    parts: list[tuple[str, str, int]] = []
    for tag in soup.find_all(_HTML_BLOCKS):
        if tag.find_parent(_HTML_BLOCKS[6:]) is not None:
            continue  # a list inside a list, a paragraph inside a table cell: its container holds it
        if tag.name[0] == "h" and tag.name[1:].isdigit():
            text = " ".join(tag.get_text(" ").split())
            if text:
                parts.append((HEADING, text, int(tag.name[1])))
            continue
        if tag.name in ("ul", "ol"):
            lines = ["- " + " ".join(li.get_text(" ").split()) for li in tag.find_all("li")]
        elif tag.name == "table":
            lines = [
                " | ".join(" ".join(c.get_text(" ").split()) for c in tr.find_all(["th", "td"]))
                for tr in tag.find_all("tr")
            ]
        else:
            lines = [" ".join(line.split()) for line in tag.get_text().split("\n")]
        text = "\n".join(line for line in lines if line.strip("- |"))
        if text:
            parts.append((PARAGRAPH, text, 0))
    return parts


def _outline_titles(reader) -> dict[str, int]:
    """Bookmark title -> level (1 = top) of a PDF's outline."""
    titles: dict[str, int] = {}

    def walk(items, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
            else:
                titles.setdefault(" ".join(str(item.title).split()), level)

    from pypdf.errors import PdfReadError

    try:
        walk(reader.outline, 1)
    except (PdfReadError, KeyError, TypeError, ValueError, AttributeError):  # a broken outline costs only headings
        return {}
    return titles


def _pdf_parts(data: bytes) -> list[tuple[str, str, int]]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # An empty user password is common ("owner-only" protection): such a file opens and reads normally.
            try:
                opened = reader.decrypt("")
            except (PdfReadError, DependencyError, NotImplementedError, ValueError):
                opened = 0
            if not opened:
                raise _BadFile("encrypted_pdf", "encrypted PDF (needs a password)")
        titles = _outline_titles(reader)
        pages = [page.extract_text(extraction_mode="layout") or "" for page in reader.pages]
    except _BadFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, NotImplementedError) as err:
        raise _BadFile(
            "unreadable", f"unreadable PDF ({' '.join(str(err).split())[:120] or type(err).__name__})"
        ) from None
    parts: list[tuple[str, str, int]] = []
    for page in pages:
        for raw in re.split(r"\n[ \t]*\n", _clean(page)):
            text = " ".join(line.strip() for line in raw.split("\n") if line.strip())
            if not text:
                continue
            level = titles.get(text)
            parts.append((HEADING, text, level) if level else (PARAGRAPH, text, 0))
    return parts


def read_document(path: Path, relative: str) -> Document:
    """One file as a Document; raises _BadFile with the reason it cannot be read."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise _BadFile("unknown_format", f"unknown format '{suffix or path.name}' (reads {', '.join(SUPPORTED)})")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _BadFile("unreadable", f"cannot read: {err.strerror}") from None
    sha = hashlib.sha256(data).hexdigest()
    if suffix in (".md", ".markdown", ".txt"):
        text = _clean(_decode(data))
        blocks = _markdown_blocks(text) if suffix != ".txt" else _plain_blocks(text)
    else:
        parts = _html_parts(data) if suffix in (".html", ".htm") else _pdf_parts(data)
        text, blocks = _joined([(kind, _clean(t), level) for kind, t, level in parts])
    if not any(b.kind == PARAGRAPH for b in blocks):
        raise _BadFile("no_text", "no text found")
    return Document(relative, sha, text, blocks)


def list_files(docs_dir: Path) -> list[Path]:
    """Every file under `docs_dir` (hidden files and folders left out), in a fixed order."""
    files = []
    for path in sorted(docs_dir.rglob("*")):
        rel = path.relative_to(docs_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        files.append(path)
    return files


def load_documents(docs_dir: str | Path) -> tuple[list[Document], list[Skipped]]:
    """All readable documents under `docs_dir`, and the files skipped with their reasons.

    Raises UserError when the folder is missing or holds no readable document at all.
    """
    root = Path(docs_dir)
    if not root.is_dir():
        raise UserError(f"documents folder not found: {root}")
    documents: list[Document] = []
    skipped: list[Skipped] = []
    files = list_files(root)
    if not files:
        raise UserError(f"documents folder {root} holds no files (reads {', '.join(SUPPORTED)})")
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            documents.append(read_document(path, relative))
        except _BadFile as bad:
            skipped.append(Skipped(relative, bad.reason, bad.detail))
    if not documents:
        reasons = "; ".join(f"{s.path}: {s.detail}" for s in skipped[:3])
        raise UserError(f"no readable document in {root} ({len(skipped)} file(s) skipped: {reasons})")
    return documents, skipped
