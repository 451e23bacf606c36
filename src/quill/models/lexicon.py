"""A word list that beam search's readings are checked against: the words a language uses.

The character LM judges a reading a few characters at a time (an order-7 LM sees six back),
so a misread word that is spelt like a word ("grantes" for "grandes") costs it little. On
the unseen writers' test lines, 38-57% of the words the default model misread were not
words of their language, while fewer than 2.2% of the words it read right were not. Beam
search therefore ends with its final beams (the ``beam_width`` best readings) and, with a
word list, ranks them again: each word of a reading that is not in the list costs
``word_penalty`` (:func:`quill.models.decoding.ctc_beam_search`). Proper names and rare
words are then read a little less willingly; ``quill lm tune --word-penalties`` measures
the trade on validation lines.

A word is a run of letters (digits, punctuation, apostrophes and spaces separate words),
compared in lower case: "L'Homme" holds the words "l" and "homme". The file is plain
UTF-8 text, one word per line (``quill lm words`` writes it from transcriptions or text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from quill.vocab import Tokenizer

#: A word: a run of letters of any script (not digits, not the underscore).
WORD = re.compile(r"[^\W\d_]+")


def words_of(texts: Iterable[str]) -> set[str]:
    """The words of ``texts``, in lower case.

    >>> sorted(words_of(["L'Homme a 2 chats.", "homme"]))
    ['a', 'chats', 'homme', 'l']
    """
    return {word.lower() for text in texts for word in WORD.findall(text)}


@dataclass(frozen=True, eq=False)
class WordLexicon:
    """The words of a language (lower case) and the characters of a model's token ids, to
    count the words of a reading that are not in it.

    >>> lexicon = WordLexicon(frozenset({"the", "cat"}), ("", "", "", *"the cat dog"))
    >>> lexicon.unknown_words([3, 4, 5, 6, 11, 12, 13])  # "the dog"
    1
    """

    words: frozenset[str]
    #: Each token id's character ("" for the special tokens), as the model's tokenizer has it.
    characters: Sequence[str]

    def unknown_words(self, ids: Sequence[int]) -> int:
        """How many words of the reading ``ids`` are not in the list."""
        characters = self.characters
        text = "".join(characters[i] if 0 <= i < len(characters) else "" for i in ids)
        return sum(word.lower() not in self.words for word in WORD.findall(text))

    @classmethod
    def load(cls, path: Path, tokenizer: Tokenizer) -> WordLexicon:
        """Read a word list file (one word per line; any other text counts by its words) for a
        model with ``tokenizer``; a ValueError names what is wrong."""
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: a word list is UTF-8 text, one word per line") from exc
        words = frozenset(words_of(text.splitlines()))
        if not words:
            raise ValueError(f"{path}: the word list holds no words")
        return cls(words, tuple(tokenizer.decode([i]) for i in range(len(tokenizer))))


def save_words(path: Path, words: Iterable[str]) -> int:
    """Write ``words`` (lower-cased, each once, sorted) as a word list file; how many."""
    unique = sorted({word.lower() for word in words if WORD.fullmatch(word)})
    path.write_text("".join(f"{word}\n" for word in unique), encoding="utf-8")
    return len(unique)
