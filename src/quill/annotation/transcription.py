"""What an annotator typed -> a training label, following the written instructions.

Annotators type ``#`` for each character they cannot read and ``\\#`` for a hash sign that is
really on the page. Keyboard variants that handwriting cannot distinguish (curly quotes,
dashes, ellipsis, non-breaking spaces: what a word processor or a phone substitutes) become
their plain forms, so one written mark has one label. Spelling is never touched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

ILLEGIBLE = "#"
ESCAPED_HASH = "\\#"

_PLAIN = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
    }
)
_SPACES = re.compile(r"\s+")
_UNESCAPED_HASH = re.compile(r"(?<!\\)#")


def clean(typed: str | Iterable[str]) -> str:
    """One line's label: entries joined, NFC, plain punctuation, single spaces, stripped.

    Label Studio stores a TextArea's value as a list of submissions; a newline typed inside a
    line box is a slip of the Enter key, not a line break.

    >>> clean(["  \u201cWell\u201d \u2014 it\u2019s", "done\u2026\\n"])
    '"Well" - it\\'s done...'
    """
    text = typed if isinstance(typed, str) else " ".join(typed)
    text = unicodedata.normalize("NFC", text).translate(_PLAIN)
    return _SPACES.sub(" ", text).strip()


def is_illegible(text: str) -> bool:
    """Whether the annotator marked characters they could not read.

    >>> is_illegible("the ### came"), is_illegible("item \\\\#5")
    (True, False)
    """
    return bool(_UNESCAPED_HASH.search(text))


def unescape(text: str) -> str:
    """The label with a written hash sign restored.

    >>> unescape("item \\\\#5")
    'item #5'
    """
    return text.replace(ESCAPED_HASH, ILLEGIBLE)
