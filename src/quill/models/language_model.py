"""A character n-gram language model for CTC beam search (interpolated Witten-Bell).

Handwriting is ambiguous where spelling is not: ``rn`` and ``m``, ``cl`` and ``d``, a
sloppy ``e`` and ``c``. A character model trained on plain text breaks those ties during
:func:`quill.models.decoding.ctc_beam_search` at almost no cost, and needs no word list, so
names and numbers the corpus never saw still decode.

Witten-Bell interpolation mixes every order down to a uniform distribution::

    P(c | h) = (count(h, c) + types(h) * P(c | h[1:])) / (count(h) + types(h))

where ``types(h)`` is how many distinct characters followed ``h``: a context seen with many
different continuations trusts its shorter context more. Unlike add-k smoothing, a long
unseen context falls back to what shorter ones know instead of to a uniform guess.

The model works on characters; :meth:`CharNGramLM.log_prob` speaks token ids through the
tokenizer it was fitted with, the interface beam search asks for. It saves as JSON beside a
staged model (``lm.json``).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from quill.vocab import Tokenizer

FORMAT_VERSION = 1


class CharNGramLM:
    """P(next character | previous ``order - 1`` characters), interpolated Witten-Bell.

    >>> lm = CharNGramLM.fit(["the cat", "the hat", "the mat"], order=3)
    >>> lm.char_log_prob("th", "e") > lm.char_log_prob("th", "x")
    True
    >>> round(sum(math.exp(lm.char_log_prob("t", c)) for c in lm.tokenizer.characters), 6)
    1.0
    """

    def __init__(self, order: int, counts: dict[str, Counter[str]], tokenizer: Tokenizer):
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        self.order = order
        self.counts = counts  # context (0..order-1 characters) -> next character counts
        self.tokenizer = tokenizer
        self._totals = {context: sum(c.values()) for context, c in counts.items()}
        self._uniform = 1.0 / len(tokenizer.characters)
        self._id_to_char = {tokenizer.encode(c)[0]: c for c in tokenizer.characters}
        self._cached_log_prob = lru_cache(maxsize=200_000)(self._log_prob)

    @classmethod
    def fit(
        cls, texts: Iterable[str], order: int = 5, tokenizer: Tokenizer | None = None
    ) -> CharNGramLM:
        """Count the n-grams of ``texts`` (one line each); characters outside the tokenizer
        end a context (they cannot be decoded, so they must not be predicted)."""
        tokenizer = tokenizer or Tokenizer()
        known = set(tokenizer.characters)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for text in texts:
            history = ""
            for char in text:
                if char not in known:
                    history = ""
                    continue
                for start in range(len(history) + 1):
                    counts[history[start:]][char] += 1
                history = (history + char)[-(order - 1) :] if order > 1 else ""
        return cls(order, dict(counts), tokenizer)

    def char_log_prob(self, history: str, char: str) -> float:
        """Natural log of P(``char`` | the last ``order - 1`` characters of ``history``)."""
        context = history[-(self.order - 1) :] if self.order > 1 else ""
        return self._cached_log_prob(context, char)

    def _log_prob(self, context: str, char: str) -> float:
        probability = self._uniform
        for start in range(len(context), -1, -1):  # shortest context first
            counts = self.counts.get(context[start:])
            if counts is None:
                break  # a longer context containing an unseen one is unseen too
            types = len(counts)
            probability = (counts[char] + types * probability) / (
                self._totals[context[start:]] + types
            )
        return math.log(probability)

    def log_prob(self, prefix: tuple[int, ...], token: int) -> float:
        """The beam-search hook: log P(``token`` | ``prefix``) over token ids."""
        history = "".join(self._id_to_char.get(i, "") for i in prefix[-(self.order - 1) :])
        char = self._id_to_char.get(token)
        return -math.inf if char is None else self.char_log_prob(history, char)

    def perplexity(self, texts: Iterable[str]) -> float:
        """Per-character perplexity over ``texts`` (lower is better; 1 is certainty)."""
        total, count = 0.0, 0
        for text in texts:
            history = ""
            for char in text:
                if char not in self._id_to_char.values():
                    history = ""
                    continue
                total -= self.char_log_prob(history, char)
                history += char
                count += 1
        return math.exp(total / max(count, 1))

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (contexts seen once are kept: the files stay a few MB)."""
        path = Path(path)
        data = {
            "format_version": FORMAT_VERSION,
            "kind": "char-ngram-witten-bell",
            "order": self.order,
            "tokenizer": self.tokenizer.to_dict(),
            "counts": {context: dict(counts) for context, counts in sorted(self.counts.items())},
        }
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharNGramLM:
        """Read a model written by :meth:`save`; a clear error for anything else."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {data.get('format_version')!r}")
            counts = {context: Counter(next_) for context, next_ in data["counts"].items()}
            return cls(int(data["order"]), counts, Tokenizer.from_dict(data["tokenizer"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read language model {path}: {exc}") from exc
