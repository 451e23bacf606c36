"""A word list that beam search's readings are checked against: the words a language uses.

The character LM judges a reading a few characters at a time (an order-7 LM sees six back),
so a misreading that is no word at all ("grantes" for "grandes") costs it little when each
of its pieces is likely. On the unseen writers' test lines, 38% (poilus) to 56% (copiste) of
the words the default model misread were not words of their language, while fewer than 2.2%
of the words it read right were not. With a word list, beam search therefore ranks a prefix
lower by ``word_penalty`` for each word of it that is not in the list, as soon as the word
ends (a non-letter follows it), and the word a final reading ends in counts at the end
(:func:`quill.models.decoding.ctc_beam_search`). Counted while searching rather than only
over the final beams, a misreading makes room in the beam for readings that are words,
which the search would otherwise have dropped before the end of the line (on the val lines
of the default model: unseen writers 16.22% -> 16.01% CER, docs/models.md). Proper names and
rare words are then read a little less willingly; ``quill lm words`` measures the trade on
validation lines.

A word is a run of letters (digits, punctuation, apostrophes and spaces separate words),
compared in lower case: "L'Homme" holds the words "l" and "homme". The file is plain
UTF-8 text, one word per line (``quill lm wordlist`` writes it from transcriptions or text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from quill.vocab import Tokenizer

#: A word: a run of letters of any script (not digits, not the underscore).
WORD = re.compile(r"[^\W\d_]+")


def words_of(texts: Iterable[str]) -> set[str]:
    """The words of ``texts``, in lower case.

    >>> sorted(words_of(["L'Homme a 2 chats.", "homme"]))
    ['a', 'chats', 'homme', 'l']
    """
    return {word.lower() for text in texts for word in WORD.findall(text)}


#: Code points below this (ASCII, Latin-1, Latin Extended-A and -B) are lower-cased and
#: told letters from other characters by one table when a word list file is read.
_TABLED = 0x250


@dataclass(frozen=True, eq=False)
class WordLexicon:
    """The words of a language and the characters of a model's token ids, to count the words
    of a reading that are not in it.

    The words are kept as the compiled search reads them, their code points with a 0 after
    each word: a list of 100,000 words in a Latin script is read from its file in a few
    milliseconds, by table rather than string by string (the set of the words, which only the
    Python search asks for, is made when first asked).

    >>> lexicon = WordLexicon.of(["The", "cat"], ("", "", "", *"the cat dog"))
    >>> sorted(lexicon.words), lexicon.search_arrays()[1][3:7].tolist()  # "t", "h", "e", " "
    (['cat', 'the'], [116, 104, 101, 0])
    """

    #: Every word's code points in lower case, each word followed by a 0 (uint32).
    letters: np.ndarray
    #: Each token id's character ("" for the special tokens), as the model's tokenizer has it.
    characters: Sequence[str]

    @classmethod
    def of(cls, words: Iterable[str], characters: Sequence[str]) -> WordLexicon:
        """The list of ``words`` (each a run of letters; lower-cased here)."""
        text = "".join(f"{word.lower()}\0" for word in words)
        return cls(np.frombuffer(text.encode("utf-32-le"), np.uint32), tuple(characters))

    @cached_property
    def words(self) -> frozenset[str]:
        return frozenset(self.letters.tobytes().decode("utf-32-le").split("\0")) - {""}

    @cached_property
    def token_letters(self) -> tuple[str, ...]:
        """Each token id's letter in lower case, "" for a token that is not a letter: how both
        searches tell a word's letters from what ends it (made once per list)."""
        return tuple(chr(code) if code else "" for code in map(_letter_code, self.characters))

    def search_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The list as the compiled search reads it: :attr:`letters`, and each token id's
        letter in lower case as a code point, 0 for a token that is not a letter (int32)."""
        codes = [ord(letter) if letter else 0 for letter in self.token_letters]
        return self.letters, np.array(codes, np.int32)

    @classmethod
    def from_letters(cls, letters: np.ndarray, tokenizer: Tokenizer) -> WordLexicon:
        """A list kept as :attr:`letters` (as a cache keeps a file read before), for a model
        with ``tokenizer``; a ValueError for an array that is not such letters."""
        if letters.dtype != np.uint32 or letters.ndim != 1 or not len(letters) or letters[-1]:
            raise ValueError("word list letters are a 1-D uint32 array ending in 0")
        return cls(letters, _characters(tokenizer))

    @classmethod
    def load(cls, path: Path, tokenizer: Tokenizer) -> WordLexicon:
        """Read a word list file (one word per line; any other text counts by its words) for a
        model with ``tokenizer``; a ValueError names what is wrong."""
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: a word list is UTF-8 text, one word per line") from exc
        characters = _characters(tokenizer)
        letters = _word_a_line(text)
        if letters is not None:
            return cls(letters, characters)
        words = sorted(words_of(text.splitlines()))  # not a word a line: read by its words
        if not words:
            raise ValueError(f"{path}: the word list holds no words")
        return cls.of(words, characters)


def _characters(tokenizer: Tokenizer) -> tuple[str, ...]:
    """Each token id's character, "" for the special tokens."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


def _word_a_line(text: str) -> np.ndarray | None:
    r""":attr:`WordLexicon.letters` of a file that holds a word a line (as ``save_words``
    writes), lower-cased by table; None for any other text.

    >>> _word_a_line("Kew\ngarden\n").tolist(), _word_a_line("Kew Gardens\n")
    ([107, 101, 119, 0, 103, 97, 114, 100, 101, 110, 0], None)
    """
    points = np.frombuffer(f"{text.strip(chr(10))}\n".encode("utf-32-le"), np.uint32)
    if points.size < 2:
        return None
    lower, letter = _LATIN_LOWER[points % _TABLED], _LATIN_LETTER[points % _TABLED]
    beyond = points >= _TABLED  # a few letters of other scripts (Greek, IPA): one by one
    if beyond.any():
        others = np.unique(points[beyond])
        other_lower, other_letter = _tables(others.tolist())
        place = np.searchsorted(others, points[beyond])
        lower[beyond], letter[beyond] = other_lower[place], other_letter[place]
    newline = points == ord("\n")
    if not (letter | newline).all() or (newline[1:] & newline[:-1]).any():
        return None
    lower[newline] = 0
    return lower


def _tables(points: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each code point's lower case (itself where that is not one character) and whether it
    is a letter of a word."""
    lower = [c.lower() if len(c.lower()) == 1 else c for c in map(chr, points)]
    letter = [bool(WORD.fullmatch(chr(point))) for point in points]
    return np.array([ord(c) for c in lower], np.uint32), np.array(letter)


_LATIN_LOWER, _LATIN_LETTER = _tables(range(_TABLED))


def _letter_code(character: str) -> int:
    """A token's character as a word's letter in lower case (its code point), or 0.

    >>> [_letter_code(c) for c in ("A", "é", "3", "'", "")]
    [97, 233, 0, 0, 0]
    """
    if not WORD.fullmatch(character):
        return 0
    lower = character.lower()
    return ord(lower) if len(lower) == 1 else ord(character)


def save_words(path: Path, words: Iterable[str]) -> int:
    """Write ``words`` (lower-cased, each once, sorted) as a word list file; how many."""
    unique = sorted({word.lower() for word in words if WORD.fullmatch(word)})
    path.write_text("".join(f"{word}\n" for word in unique), encoding="utf-8")
    return len(unique)
