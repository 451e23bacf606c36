"""The writer's lines that ``quill adapt`` learns a hand from: what one line is, how many
are enough, and how they are named and split. Kept apart from :mod:`quill.training.adapt`
because it imports no torch: ``quill bench adapt`` declares its options with
:data:`MIN_LINES`, and ``quill --help`` must stay fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quill.errors import QuillError

if TYPE_CHECKING:
    from quill.preprocess import ImageSource

#: The fewest lines a model adapts on. Measured on unseen poilus writers, reading their
#: lines from the eleventh on (docs/training.md): one or two lines read them 6.0 and 2.5 CER
#: points worse than before, three 0.4 to 1.9 worse, five between 1.1 better and 0.7 worse,
#: ten 2.5 to 3.8 better. One or two lines are refused; three to nine are allowed with a
#: warning (ADVISED_LINES), as ``--hold-out`` can show whether they helped this writer.
MIN_LINES = 3
#: Below this many lines a model still adapts, with a warning that more would help.
ADVISED_LINES = 10


class AdaptError(QuillError, ValueError):
    """The lines cannot adapt this model; the message says which and why."""

    code = "adapt_invalid"


@dataclass(frozen=True)
class AdaptLine:
    """One transcribed line of the writer's hand: an image (path, bytes, PIL) and its text."""

    image: ImageSource
    text: str
    #: How to name the line in an error (its file name).
    name: str = ""


def line_names(lines: Sequence[AdaptLine]) -> list[str]:
    """How an error names each line: its file name, else its place (``line 2``).

    >>> line_names([AdaptLine("a.png", "x", "a.png"), AdaptLine(b"", "y")])
    ['a.png', 'line 2']
    """
    return [line.name or f"line {index + 1}" for index, line in enumerate(lines)]


def held_out(lines: Sequence[AdaptLine], count: int) -> tuple[list[AdaptLine], list[AdaptLine]]:
    """``lines`` split into (lines to adapt on, the last ``count`` to measure on), in order.

    >>> adapt, measure = held_out([AdaptLine(str(i), "x") for i in range(5)], 2)
    >>> [line.image for line in adapt], [line.image for line in measure]
    (['0', '1', '2'], ['3', '4'])
    """
    if count < 0 or count >= len(lines):
        raise AdaptError(f"cannot hold out {count} of {len(lines)} lines: keep at least one")
    cut = len(lines) - count
    return list(lines[:cut]), list(lines[cut:])
