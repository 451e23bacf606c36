"""The one character vocabulary and tokenizer used by every model, dataset and decoder.

Index 0 is shared by padding and the CTC blank, 1 and 2 start and end a sequence for the
Transformer decoders; characters follow. Characters outside the vocabulary are never dropped
silently: :meth:`Tokenizer.encode` raises :class:`UnknownCharacterError` naming them, and
:meth:`Tokenizer.unknown_characters` lets a reader report them before encoding.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from quill.errors import QuillError

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)

#: Printable ASCII (which covers IAM's set: letters, digits, space and !"#&'()*+,-./:;?),
#: the newline that separates lines in a paragraph, and the pound sign common in
#: British correspondence.
DEFAULT_CHARACTERS = "\n" + "".join(c for c in string.printable if c not in "\t\r\x0b\x0c\n") + "£"

#: Western European Latin script: the ASCII set above (same ids, so an ASCII model's rows map
#: one to one) followed by the letters of Latin-1 and Latin Extended-A that French, German,
#: Spanish, Portuguese, Italian, Dutch and the Nordic languages write (``œ``, ``ç``, ``ß``,
#: ``ø``...), the long s ``ſ``, and the punctuation of their typesetting (curly quotes,
#: guillemets, dashes, the ellipsis) with ``€ ° § ¡ ¿ ·``. ``^`` is an ASCII character and
#: keeps the meaning the multi-writer transcriptions give it: the letters after it are
#: written as a superscript (``1^er``, ``S^t``). Quill reads it as written rather than
#: dropping it, so a reading of ``M^r`` stays distinguishable from ``Mr``.
LATIN_CHARACTERS = DEFAULT_CHARACTERS + "".join(
    c for c in ("ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿŒœŸſß‘’“”«»–—…€°§¡¿·")
)

#: The named character sets a run can choose with ``model.vocabulary``.
VOCABULARIES = {"ascii": DEFAULT_CHARACTERS, "latin": LATIN_CHARACTERS}


class UnknownCharacterError(QuillError, ValueError):
    """A text holds characters the vocabulary cannot represent."""

    code = "unknown_character"

    def __init__(self, text: str, unknown: Sequence[str]):
        self.text = text
        self.unknown = list(unknown)
        shown = ", ".join(repr(c) for c in self.unknown)
        super().__init__(f"characters outside the vocabulary: {shown} in {text!r}")


@dataclass(frozen=True)
class Tokenizer:
    """Maps text to token ids and back.

    >>> tok = Tokenizer()
    >>> ids = tok.encode("Hi!")
    >>> tok.decode(ids)
    'Hi!'
    >>> tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id])
    'Hi!'
    >>> tok.unknown_characters("naïve ∞")
    ['ï', '∞']
    """

    pad_id: ClassVar[int] = 0
    blank_id: ClassVar[int] = 0  # CTC blank shares the padding index
    bos_id: ClassVar[int] = 1
    eos_id: ClassVar[int] = 2

    characters: str = DEFAULT_CHARACTERS
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.characters)) != len(self.characters):
            raise ValueError("vocabulary characters must be unique")
        index = {c: i + len(SPECIAL_TOKENS) for i, c in enumerate(self.characters)}
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.characters)

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, each once, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS); raises UnknownCharacterError."""
        unknown = self.unknown_characters(text)
        if unknown:
            raise UnknownCharacterError(text, unknown)
        return [self._index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: special tokens are skipped and decoding stops at EOS."""
        out = []
        offset = len(SPECIAL_TOKENS)
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= offset:
                out.append(self.characters[i - offset])
        return "".join(out)

    @classmethod
    def named(cls, name: str) -> Tokenizer:
        """The tokenizer of a named vocabulary (``ascii`` or ``latin``).

        >>> len(Tokenizer.named("ascii")), len(Tokenizer.named("latin"))
        (100, 177)
        """
        if name not in VOCABULARIES:
            raise ValueError(f"unknown vocabulary {name!r}; choose one of {sorted(VOCABULARIES)}")
        return cls(characters=VOCABULARIES[name])

    def to_dict(self) -> dict:
        """What a staged model stores so that inference decodes exactly as training encoded."""
        return {"characters": self.characters, "special_tokens": list(SPECIAL_TOKENS)}

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        if not isinstance(data, dict) or not isinstance(data.get("characters"), str):
            raise ValueError(f"a tokenizer is a mapping with its 'characters', not {data!r:.60}")
        if list(data.get("special_tokens", SPECIAL_TOKENS)) != list(SPECIAL_TOKENS):
            raise ValueError(f"unsupported special tokens {data.get('special_tokens')}")
        return cls(characters=data["characters"])
