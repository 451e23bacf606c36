"""The one text normalisation applied before scoring.

References and readings get the same light normalisation: Unicode NFC, whitespace runs
collapsed to one space, blank lines dropped, no space around a line. A recognizer's spacing
convention (Tesseract ends its output with blank lines) is not a reading error; a missing
line break inside a paragraph is one, so newlines stay and count as characters.

This is the normalisation the README's benchmark figures were measured with.
"""

from __future__ import annotations

import unicodedata


def normalise(text: str) -> str:
    """The text as scored: NFC, single spaces, no blank lines, no surrounding space.

    >>> normalise("  Dear   Sir,\\n\\n yours\\ttruly \\n")
    'Dear Sir,\\nyours truly'
    >>> normalise("cafe\\u0301") == "caf\\u00e9"
    True
    """
    text = unicodedata.normalize("NFC", text)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)
