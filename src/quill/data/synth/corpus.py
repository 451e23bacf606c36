"""Real English text for synthetic handwriting, cut into lines and paragraphs.

The default corpus is Jane Austen's six novels (Project Gutenberg texts, public domain),
which Debian ships as the R data package ``r-cran-janeaustenr`` (MIT-licensed packaging).
It is read straight from the package's lazy-load database with a small reader for R's
serialisation format, so neither R nor a network is needed at run time. Any UTF-8 text file
can be used instead (``--corpus``): paragraphs are separated by blank lines.

Austen has almost no digits and few symbols (a model trained on her alone could not read
"£25" or "10:30"), so a share of lines gets one number-like token (a year, a sum, a time,
a date, a percentage...) inserted between two of its words: :func:`number_token`.

Every snippet is checked against the vocabulary; characters outside it are mapped to their
usual ASCII form where one exists (curly quotes, dashes) and otherwise the paragraph is
dropped and counted, never silently altered.
"""

from __future__ import annotations

import gzip
import re
import struct
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quill.errors import QuillError
from quill.vocab import Tokenizer

JANEAUSTENR_DIR = Path("/usr/lib/R/site-library/janeaustenr")
JANEAUSTENR_BOOKS = (
    "prideprejudice",
    "sensesensibility",
    "emma",
    "mansfieldpark",
    "persuasion",
    "northangerabbey",
)

#: Typographic characters and their plain equivalents (what a person would write by hand).
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                        "\u2013": "-", "\u2014": "--", "\u00a0": " "})  # fmt: skip
#: Gutenberg marks italics as _word_; chapter headings are not prose.
_ITALICS = re.compile(r"_(\S(?:[^_]*\S)?)_")
_SPACES = re.compile(r"\s+")
_HEADING = re.compile(r"^(CHAPTER|VOLUME|BOOK)\b|^[IVXLC]+\.?$", re.IGNORECASE)


def number_token(rng: np.random.Generator) -> str:
    """A random number as people write them in letters and notes.

    >>> rng = np.random.default_rng(0)
    >>> tokens = [number_token(rng) for _ in range(400)]
    >>> all(any(c.isdigit() for c in t) for t in tokens)
    True
    >>> sorted(set("".join(tokens)) - set("0123456789"))
    ['#', '$', '%', '+', '-', '.', '/', ':', '=', 'd', 'h', 'n', 'r', 's', 't', '£']
    """
    n = int(rng.integers(0, 10_000))
    small, year = int(rng.integers(1, 100)), int(rng.integers(1700, 2030))
    day, month = int(rng.integers(1, 29)), int(rng.integers(1, 13))
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(day % 10 if day not in (11, 12, 13) else 0, "th")
    forms = (
        str(n),
        str(small),
        str(year),
        f"{day}{suffix}",
        f"£{small}",
        f"${small}.{int(rng.integers(0, 100)):02d}",
        f"{small}%",
        f"{int(rng.integers(1, 13))}:{int(rng.integers(0, 60)):02d}",
        f"{day}/{month}/{year}",
        f"{day}.{month}.{year % 100:02d}",
        f"#{small}",
        f"{small}-{int(rng.integers(1, 100))}",
        f"{n / 100:.2f}",
        f"{small}+{day}={small + day}",
    )
    return forms[int(rng.integers(len(forms)))]


def insert_number(line: str, rng: np.random.Generator, max_chars: int) -> str:
    """``line`` with a :func:`number_token` between two words, if it still fits.

    >>> insert_number("one two", np.random.default_rng(1), 60).count(" ")
    2
    """
    words = line.split(" ")
    token = number_token(rng)
    if len(line) + len(token) + 1 > max_chars:
        return line
    at = int(rng.integers(0, len(words) + 1))
    return " ".join([*words[:at], token, *words[at:]])


class CorpusError(QuillError, RuntimeError):
    """The corpus is not installed or unreadable; the message says how to fix it."""

    code = "corpus_unavailable"


class _RReader:
    """Reads R's XDR serialisation (version 2 or 3) far enough for character, integer,
    logical and generic vectors and their ``names`` attribute: what R data packages hold."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise CorpusError("not an R XDR serialisation")
        self.data = data
        self.pos = 2
        version = self._int()
        self.pos += 8  # R version that wrote it, oldest version that can read it
        if version == 3:
            encoding_length = self._int()  # followed by the native encoding's name
            self.pos += encoding_length
        self.refs: list[object] = []

    def _int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NILVALUE
            return None
        if kind == 255:  # back-reference to an earlier symbol
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # SYMSXP: its name, remembered for back-references
            name = self.read()
            self.refs.append(name)
            return name
        if kind == 9:  # CHARSXP
            length = self._int()
            if length == -1:
                return None
            text = self.data[self.pos : self.pos + length].decode("utf-8", errors="replace")
            self.pos += length
            return text
        if kind == 2:  # LISTSXP (pairlist): attributes, tag, value, rest
            attrs = self.read() if has_attr else None
            tag = self.read() if has_tag else None
            value = self.read()
            rest = self.read()
            del attrs
            return [(tag, value), *(rest or [])]
        if kind in (10, 13, 16, 19):  # LGLSXP, INTSXP, STRSXP, VECSXP
            length = self._int()
            if kind in (10, 13):
                values: list[Any] = list(struct.unpack_from(f">{length}i", self.data, self.pos))
                self.pos += 4 * length
            else:
                values = [self.read() for _ in range(length)]
            if has_attr:
                attributes = dict(self.read() or [])
                names = attributes.get("names")
                if names is not None:
                    return dict(zip(names, values, strict=True))
            return values
        raise CorpusError(f"unsupported R object type {kind}")


def read_r_lazyload(package_dir: Path) -> dict[str, list[str]]:
    """The data sets of an installed R package (``data/Rdata.rdx`` + ``Rdata.rdb``)."""
    index_path = package_dir / "data" / "Rdata.rdx"
    if not index_path.is_file():
        raise CorpusError(
            f"R data package not found at {package_dir}: install the corpus with "
            "scripts/install_fonts.sh (Debian package r-cran-janeaustenr)"
        )
    raw = index_path.read_bytes()
    index = _RReader(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else zlib.decompress(raw[4:]))
    variables = index.read()["variables"]
    blob = (package_dir / "data" / "Rdata.rdb").read_bytes()
    result = {}
    for name, (offset, length) in variables.items():
        chunk = blob[offset : offset + length]
        result[name] = _RReader(zlib.decompress(chunk[4:])).read()
    return result


def paragraphs_from_lines(lines: list[str]) -> list[str]:
    """Join a book's lines into paragraphs (blank line = break), dropping headings.

    >>> paragraphs_from_lines(["CHAPTER 1", "", "It is a _truth_", "universally", "", "Yes."])
    ['It is a truth universally', 'Yes.']
    """
    paragraphs, current = [], []
    for line in [*lines, ""]:
        line = (line or "").strip()
        if line:
            current.append(line)
            continue
        text = _SPACES.sub(" ", " ".join(current))
        current = []
        if text and not _HEADING.match(text):
            paragraphs.append(_ITALICS.sub(r"\1", text.translate(_PLAIN)))
    return paragraphs


@dataclass
class Corpus:
    """Paragraphs of text within the vocabulary, and how to cut them into labels."""

    paragraphs: list[str]
    source: str
    licence: str
    #: Paragraphs dropped because they hold characters outside the vocabulary.
    dropped: int = 0
    #: Share of lines that get a number inserted (see :func:`insert_number`).
    numbers: float = 0.15

    @classmethod
    def from_paragraphs(
        cls, paragraphs: list[str], source: str, licence: str, tokenizer: Tokenizer
    ) -> Corpus:
        kept = [p for p in paragraphs if len(p) >= 10 and not tokenizer.unknown_characters(p)]
        if not kept:
            raise CorpusError(f"{source}: no paragraph of at least 10 characters in vocabulary")
        return cls(kept, source, licence, dropped=len(paragraphs) - len(kept))

    def line(self, rng: np.random.Generator, min_chars: int = 10, max_chars: int = 60) -> str:
        """A line as a writer would break it: a paragraph word-wrapped at a random width."""
        while True:
            wrapped = self._wrap(rng, min_chars, max_chars)
            # A paragraph's last line is usually short: take full lines where there are any.
            full = wrapped[:-1] if len(wrapped) > 1 else wrapped
            candidates = [w for w in full if len(w) >= min_chars]
            if candidates:
                return self._with_number(
                    candidates[int(rng.integers(len(candidates)))], rng, max_chars
                )

    def paragraph(
        self, rng: np.random.Generator, lines: tuple[int, int] = (2, 8), max_chars: int = 60
    ) -> str:
        """Consecutive lines of one paragraph, joined by newlines: at least ``lines[0]`` of
        them (short paragraphs are passed over), at most ``lines[1]``."""
        count = int(rng.integers(lines[0], lines[1] + 1))
        wrapped = self._wrap(rng, max(20, max_chars // 2), max_chars)
        while len(wrapped) < lines[0]:
            wrapped = self._wrap(rng, max(20, max_chars // 2), max_chars)
        start = int(rng.integers(max(1, len(wrapped) - count + 1)))
        chosen = wrapped[start : start + count]
        return "\n".join(self._with_number(line, rng, max_chars) for line in chosen)

    def _with_number(self, line: str, rng: np.random.Generator, max_chars: int) -> str:
        return insert_number(line, rng, max_chars) if rng.random() < self.numbers else line

    def _wrap(self, rng: np.random.Generator, min_chars: int, max_chars: int) -> list[str]:
        text = self.paragraphs[int(rng.integers(len(self.paragraphs)))]
        width = int(rng.integers(min_chars, max_chars + 1))
        return textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)


def load_corpus(path: str | Path | None = None, tokenizer: Tokenizer | None = None) -> Corpus:
    """Jane Austen's novels from the Debian package, or the UTF-8 text file at ``path``."""
    tokenizer = tokenizer or Tokenizer()
    if path is None:
        books = read_r_lazyload(JANEAUSTENR_DIR)
        paragraphs = [p for name in JANEAUSTENR_BOOKS for p in paragraphs_from_lines(books[name])]
        return Corpus.from_paragraphs(
            paragraphs,
            source="Jane Austen's novels (Project Gutenberg) via Debian r-cran-janeaustenr",
            licence="public domain text; MIT packaging",
            tokenizer=tokenizer,
        )
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:  # replacing bytes dropped their paragraphs unsaid
        raise CorpusError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); give a UTF-8 file, "
            "paragraphs separated by blank lines"
        ) from exc
    return Corpus.from_paragraphs(
        paragraphs_from_lines(lines), source=str(path), licence="user supplied", tokenizer=tokenizer
    )
