"""A character n-gram language model for CTC beam search (interpolated Kneser-Ney).

Handwriting is ambiguous where spelling is not: ``rn`` and ``m``, ``cl`` and ``d``, a
sloppy ``e`` and ``c``. A character model trained on plain text breaks those ties during
:func:`quill.models.decoding.ctc_beam_search` at almost no cost, and needs no word list, so
names and numbers the corpus never saw still decode.

Interpolated Kneser-Ney mixes every order down to a uniform distribution::

    P(c | h) = max(n(h, c) - D, 0) / n(h) + D * types(h) / n(h) * P(c | h[1:])

where ``types(h)`` is how many distinct characters followed ``h``. For the longest contexts
``n`` is the plain count; for shorter ones it is the *continuation* count, how many distinct
characters preceded ``h + c``: a shorter context only speaks when the longer one has not
been seen, so it should know which characters are common in new contexts, not overall. A
long unseen context falls back to what shorter ones know instead of to a uniform guess. On
the Hooker validation lines this gives a per-character perplexity of 5.27 where Witten-Bell
interpolation gives 6.58 (order 6, the same text; see docs/models.md).

The model works on characters; :meth:`CharNGramLM.log_prob` speaks token ids through the
tokenizer it was fitted with, the interface beam search asks for, so a model and its LM must
share one character set (:meth:`CharNGramLM.check_tokenizer`). Any character set works: fitted
with the Latin vocabulary on English and French text, one LM covers both (``é``, ``œ``, ``’``
are characters like any other). Texts are NFC-normalised as the dataset readers normalise
labels; characters outside the vocabulary end a context and are counted in
:attr:`CharNGramLM.unknown_characters`, for the caller to report. It saves as UTF-8 JSON beside
a staged model (``lm.json``).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path

import numpy as np

from quill.vocab import Tokenizer

FORMAT_VERSION = 1
#: Version of the compiled form (:meth:`CharNGramLM.save_compiled`); a reader of another
#: version compiles the JSON again. 2: the contexts' keys for the compiled beam search too;
#: 3: the compiled beam search's hash table of the keys, and each context's (character,
#: count) entries as pairs, so that a new process maps them instead of building them.
COMPILED_FORMAT_VERSION = 3
#: A free slot of :attr:`BeamTables.slots` (no context has this key).
EMPTY_SLOT = np.uint64(2**64 - 1)


#: Marks the start of a line in contexts (not a vocabulary character), so that characters
#: that open lines (capitals, quotes) are predicted there; Kneser-Ney's continuation counts
#: would otherwise never see them.
LINE_START = "\x02"
#: Kneser-Ney's absolute discount (0.8 measured best of 0.6 and 0.8 on Hooker val text).
DISCOUNT = 0.8


class CharNGramLM:
    """P(next character | previous ``order - 1`` characters), interpolated Kneser-Ney.

    >>> lm = CharNGramLM.fit(["the cat", "the hat", "the mat"], order=3)
    >>> lm.char_log_prob("th", "e") > lm.char_log_prob("th", "x")
    True
    >>> round(sum(math.exp(lm.char_log_prob("t", c)) for c in lm.tokenizer.characters), 6)
    1.0
    """

    def __init__(
        self,
        order: int,
        counts: Mapping[str, Mapping[str, int]] | None,
        tokenizer: Tokenizer,
        *,
        compiled: _CompiledTables | None = None,
        source: Path | None = None,
    ):
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        self.order = order
        #: How many previous tokens :meth:`log_prob` looks at (beam search keeps only those).
        self.context_length = order - 1
        self.tokenizer = tokenizer
        self._counts = counts  # context (0..order-1 characters) -> next character counts
        self._source = source  # the JSON file, read for ``counts`` when loaded compiled
        if compiled is None:
            if counts is None:
                raise ValueError("a language model needs its counts or compiled tables")
            compiled = _kneser_ney_tables(counts, order, tokenizer.characters, self._key_base())
        self._tables = _Tables(compiled)
        self._uniform = 1.0 / len(tokenizer.characters)
        characters = tokenizer.characters
        self._id_to_char = dict(zip(tokenizer.encode(characters), characters, strict=True))
        self._known = set(tokenizer.characters)
        #: Characters :meth:`fit` met outside the vocabulary, with how often (not saved).
        self.unknown_characters: Counter[str] = Counter()
        self._cached_log_prob = lru_cache(maxsize=200_000)(self._log_prob)
        #: ``context_log_prob(last context_length token ids, token)``: :meth:`log_prob` for a
        #: prefix already cut to what the model looks at, memoised: beam search asks it for
        #: every new prefix, most of them seen before.
        self.context_log_prob = lru_cache(maxsize=200_000)(self._context_log_prob)
        #: The tables a context's probabilities are interpolated from (see :meth:`_chain`),
        #: memoised apart: a prefix's context is asked about many next tokens, and a new
        #: (context, token) pair then costs a few multiplications instead of building and
        #: looking up every suffix of the context again.
        self._context_chain = lru_cache(maxsize=50_000)(self._chain)
        self._beam_tables: BeamTables | None = None

    def forget(self) -> None:
        """Drop the memoised answers (not the tables read from a compiled file): the next
        question costs what a line of new text costs. ``quill bench speed`` times its
        repeated lines this way, so that reading the same 16 lines again is not timed as
        cheaper than reading new ones."""
        for memo in (self._cached_log_prob, self.context_log_prob, self._context_chain):
            memo.cache_clear()

    @property
    def counts(self) -> Mapping[str, Mapping[str, int]]:
        """Context -> next-character counts (read from the JSON file on first use when the
        model was loaded in its compiled form)."""
        if self._counts is None:
            if self._source is None:
                raise ValueError("this language model was loaded without its counts")
            self._counts = _read_json(self._source)[1]
        return self._counts

    @classmethod
    def fit(
        cls, texts: Iterable[str], order: int = 6, tokenizer: Tokenizer | None = None
    ) -> CharNGramLM:
        """Count the n-grams of ``texts`` (one line each, NFC-normalised); characters outside
        the tokenizer end a context (they cannot be decoded, so they must not be predicted) and
        are counted in the result's :attr:`unknown_characters`.

        >>> CharNGramLM.fit(["naïve café"], order=2).unknown_characters
        Counter({'ï': 1, 'é': 1})
        """
        tokenizer = tokenizer or Tokenizer()
        known = set(tokenizer.characters)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        unknown: Counter[str] = Counter()
        for text in texts:
            history = LINE_START[: order - 1]
            for char in unicodedata.normalize("NFC", text):
                if char not in known:
                    unknown[char] += 1
                    history = ""
                    continue
                for start in range(len(history) + 1):
                    counts[history[start:]][char] += 1
                history = (history + char)[-(order - 1) :] if order > 1 else ""
        lm = cls(order, dict(counts), tokenizer)
        lm.unknown_characters = unknown
        return lm

    def char_log_prob(self, history: str, char: str) -> float:
        """Natural log of P(``char`` | the last ``order - 1`` characters of ``history``);
        a history that starts a line begins with :data:`LINE_START`."""
        context = history[-(self.order - 1) :] if self.order > 1 else ""
        return self._cached_log_prob(context, char)

    def _log_prob(self, context: str, char: str) -> float:
        return _interpolated_log_prob(self._uniform, self._suffix_tables(context), char)

    def _suffix_tables(self, context: str) -> list[tuple[dict[str, int], int, float]]:
        """(counts, total, DISCOUNT * distinct next characters) of each suffix of
        ``context`` that was seen, shortest first: what Kneser-Ney interpolates."""
        chain = []
        for start in range(len(context), -1, -1):  # shortest context first
            table = self._tables[context[start:]]
            if table is None:
                break  # a longer context containing an unseen one is unseen too
            counts, total = table
            chain.append((counts, total, DISCOUNT * len(counts)))
        return chain

    def log_prob(self, prefix: tuple[int, ...], token: int) -> float:
        """The beam-search hook: log P(``token`` | ``prefix``) over token ids."""
        return self.context_log_prob(
            prefix[-self.context_length :] if self.context_length else (), token
        )

    def _context_log_prob(self, context: tuple[int, ...], token: int) -> float:
        char = self._id_to_char.get(token)
        if char is None:
            return -math.inf
        return _interpolated_log_prob(self._uniform, self._context_chain(context), char)

    def _chain(self, context: tuple[int, ...]) -> list[tuple[dict[str, int], int, float]]:
        """:meth:`_suffix_tables` of the characters of ``context`` (token ids)."""
        history = "".join(map(self._id_to_char.get, context, repeat("")))  # specials: ""
        if len(context) < self.context_length:  # the prefix is shorter than the context
            history = LINE_START + history
        return self._suffix_tables(history[-self.context_length :] if self.context_length else "")

    def perplexity(self, texts: Iterable[str]) -> float:
        """Per-character perplexity over ``texts`` (lower is better; 1 is certainty)."""
        total, count = 0.0, 0
        for text in texts:
            history = LINE_START
            for char in unicodedata.normalize("NFC", text):
                if char not in self._known:
                    history = ""
                    continue
                total -= self.char_log_prob(history, char)
                history += char
                count += 1
        return math.exp(total / max(count, 1))

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise ValueError unless this LM speaks ``tokenizer``'s ids: beam search asks it
        about a model's classes, and under another character set an id names another
        character (or none: an ASCII LM would forbid every accent a Latin model reads)."""
        if tokenizer.characters != self.tokenizer.characters:
            missing = [c for c in tokenizer.characters if c not in self._known]
            lacks = f", and lacks {len(missing)} of its characters ({''.join(missing[:8])!r}...)"
            raise ValueError(
                f"the language model was fitted with another character set "
                f"({len(self.tokenizer.characters)} characters) than the model's "
                f"({len(tokenizer.characters)}){lacks if missing else ''}; beam search "
                "would score the model's classes as other characters or none: fit it with the "
                "model's (`quill lm fit --model MODEL_DIR`)"
            )

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
        path.write_text(
            json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharNGramLM:
        """Read a model written by :meth:`save`; a clear error for anything else."""
        path = Path(path)
        order, counts, tokenizer = _read_json(path)
        try:
            return cls(order, counts, tokenizer, source=path)
        except (ValueError, TypeError) as exc:  # counts that make no tables
            raise ValueError(f"cannot read language model {path}: {exc}") from exc

    def _key_base(self) -> int | None:
        """The base of :class:`BeamTables`' context keys (codes 1..alphabet size, then
        :data:`LINE_START`), or None when a context's key would not fit in 63 bits (a very
        long order over a large alphabet)."""
        base = len(self.tokenizer.characters) + 2
        return base if base ** max(self.context_length, 1) < 2**63 else None

    def beam_tables(self) -> BeamTables | None:
        """The tables in the form the compiled beam search reads (:class:`BeamTables`), made
        once (the keys come with the compiled form); None when the contexts cannot be keyed in
        63 bits, and beam search then runs in Python."""
        base = self._key_base()
        if self._beam_tables is None and base is not None:
            alphabet = self.tokenizer.characters
            arrays = self._tables.compiled.arrays()
            token_codes = np.zeros(len(self.tokenizer), dtype=np.int32)
            for token, char in self._id_to_char.items():
                token_codes[token] = alphabet.index(char) + 1
            self._beam_tables = BeamTables(
                slots=arrays["slots"],  # made with the tables, compiled or not, where base fits
                starts=arrays["starts"],
                totals=arrays["totals"],
                following=arrays["following"],
                token_codes=token_codes,
                context_length=self.context_length,
                base=base,
                line_start=base - 1,
                uniform=self._uniform,
                discount=DISCOUNT,
            )
        return self._beam_tables

    def save_compiled(self, path: str | Path) -> Path:
        """Write the Kneser-Ney tables as arrays into the new folder ``path`` (one ``.npy``
        file each and ``header.json``), which :meth:`load_compiled` maps into memory in a
        millisecond, where reading the JSON and computing the tables takes a second or more:
        inference keeps one per LM file in its cache (:mod:`quill.runtimes.cache`)."""
        path = Path(path)
        arrays = self._tables.compiled.arrays()
        path.mkdir(parents=True)
        for name, array in arrays.items():
            np.save(path / f"{name}.npy", array, allow_pickle=False)
        header = {
            "format_version": COMPILED_FORMAT_VERSION,
            "order": self.order,
            "tokenizer": self.tokenizer.to_dict(),
        }
        (path / "header.json").write_text(json.dumps(header, ensure_ascii=False), "utf-8")
        return path

    @classmethod
    def load_compiled(cls, path: str | Path, source: str | Path | None = None) -> CharNGramLM:
        """Map a folder written by :meth:`save_compiled` into memory (ValueError if it is not
        one); ``source`` is the JSON it was compiled from, read only if :attr:`counts` is
        asked for."""
        path = Path(path)
        try:
            header = json.loads((path / "header.json").read_text("utf-8"))
            if header.get("format_version") != COMPILED_FORMAT_VERSION:
                raise ValueError(f"unsupported format_version {header.get('format_version')!r}")
            tokenizer = Tokenizer.from_dict(header["tokenizer"])
            # mapped, not read: a process touches only the pages of the contexts it asks
            # about; as plain arrays (a memmap's slices are slow to make)
            arrays = {
                name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(
                    np.ndarray
                )
                for name in ("contexts", "starts", "totals", "following", "keys", "slots")
                if name not in ("keys", "slots") or (path / "keys.npy").is_file()  # unkeyable
            }
            compiled = _CompiledTables(**arrays, alphabet=tokenizer.characters)
            order = int(header["order"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read compiled language model {path}: {exc}") from exc
        source_path = Path(source) if source else None
        return cls(order, None, tokenizer, compiled=compiled, source=source_path)


@dataclass(frozen=True)
class BeamTables:
    """A language model's Kneser-Ney tables as the compiled beam search reads them
    (``quill/models/_ctc_beam.c``). A context is keyed by its characters' codes (alphabet index
    + 1, :data:`LINE_START` ``base - 1``) as the digits of a base-``base`` number, the last
    character least significant: no code is 0, so contexts of different lengths never share
    a key, and the empty context is 0."""

    slots: np.ndarray  # (2 * size,) uint64: the keys' hash table (:func:`context_slots`)
    starts: np.ndarray  # (contexts + 1,) int64: context i's entries are starts[i]:starts[i + 1]
    totals: np.ndarray  # (contexts,) int64
    following: np.ndarray  # (2 * entries,) int32: each entry's alphabet index, then its count
    token_codes: np.ndarray  # (token ids,) int32: a token's character code, 0 for specials
    context_length: int
    base: int
    line_start: int
    uniform: float
    discount: float


def _context_keys(contexts: np.ndarray, alphabet: str, base: int) -> np.ndarray:
    """(contexts,) uint64 keys of :class:`BeamTables` for the compiled form's context strings
    (NumPy pads each with NUL characters, which take no digit)."""
    width = contexts.dtype.itemsize // 4
    points = np.ascontiguousarray(contexts).view(np.uint32).reshape(len(contexts), width)
    codes = (_positions(points, alphabet + LINE_START) + 1).astype(np.uint64)  # (contexts, width)
    if np.any(codes[points != 0] == 0):  # 0: NUL padding, or a character outside the alphabet
        raise ValueError("a context holds a character outside the language model's alphabet")
    keys = np.zeros(len(contexts), dtype=np.uint64)
    for column in codes.T:  # first character first: each one more digit
        keys = np.where(column > 0, keys * np.uint64(base) + column, keys)
    return keys


def context_slots(keys: np.ndarray) -> np.ndarray:
    """The hash table in which the compiled beam search finds a context by its key: ``size``
    slots (the smallest power of two, at least 16, holding twice the keys), each a pair
    (key, context index) or (:data:`EMPTY_SLOT`, 0), flat: (2 * size,) uint64.

    A key lives in the first slot from its home (splitmix64's finaliser of the key, masked,
    as ``_ctc_beam.c``'s ``slot_of``) that it could take, so a lookup walks from the home slot
    and stops at the key or at a free slot. Made with the tables once, in rounds: in round
    r each key not yet placed tries its home + r and takes it if free (the lowest context
    index first), so every slot between a key's home and its own was taken before it.

    >>> slots = context_slots(np.array([5, 7, 11], np.uint64)).reshape(-1, 2)
    >>> len(slots), sorted(slots[slots[:, 0] != EMPTY_SLOT][:, 1].tolist())
    (16, [0, 1, 2])
    """
    size = 16
    while size < 2 * len(keys):
        size *= 2
    mask = np.uint64(size - 1)
    home = (key_hash(keys) & mask).astype(np.int64)
    slot_keys = np.full(size, EMPTY_SLOT, dtype=np.uint64)
    slot_contexts = np.zeros(size, dtype=np.uint64)
    waiting, step = np.arange(len(keys)), 0
    while len(waiting):
        tried = (home[waiting] + step) & (size - 1)
        claims = np.flatnonzero(slot_keys[tried] == EMPTY_SLOT)  # positions in waiting
        # np.unique keeps each free slot's first claimant: the lowest index, as waiting is sorted
        taken, first = np.unique(tried[claims], return_index=True)
        placed = waiting[claims[first]]
        slot_keys[taken], slot_contexts[taken] = keys[placed], placed
        kept = np.ones(len(waiting), dtype=bool)
        kept[claims[first]] = False
        waiting, step = waiting[kept], step + 1
    return np.stack([slot_keys, slot_contexts], axis=1).ravel()


def key_hash(keys: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of each key (uint64, wrapping as ``_ctc_beam.c``'s ``mixed``)."""
    mixed = keys.astype(np.uint64)
    mixed ^= mixed >> np.uint64(30)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(27)
    mixed *= np.uint64(0x94D049BB133111EB)
    return mixed ^ (mixed >> np.uint64(31))


def _read_json(path: Path) -> tuple[int, dict[str, dict[str, int]], Tokenizer]:
    """(order, counts, tokenizer) of an LM file written by :meth:`CharNGramLM.save`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported format_version {data.get('format_version')!r}")
        counts = data["counts"]
        if not isinstance(counts, dict) or not all(isinstance(c, dict) for c in counts.values()):
            raise ValueError("counts must map each context to its next characters' counts")
        return int(data["order"]), counts, Tokenizer.from_dict(data["tokenizer"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read language model {path}: {exc}") from exc


class _CompiledTables:
    """The Kneser-Ney tables as sorted arrays: contexts, and per context a slice of
    (character, count) entries with their total; with the contexts' keys and their hash table
    (:class:`BeamTables`) where they fit."""

    def __init__(
        self,
        contexts: np.ndarray,
        starts: np.ndarray,
        totals: np.ndarray,
        following: np.ndarray,
        alphabet: str,
        keys: np.ndarray | None = None,
        slots: np.ndarray | None = None,
    ):
        if not len(starts) == len(contexts) + 1 == len(totals) + 1 or len(following) % 2:
            raise ValueError("inconsistent array lengths")
        if starts.dtype != np.int64 or totals.dtype != np.int64 or following.dtype != np.int32:
            raise ValueError("starts and totals must be int64, following int32")
        if (keys is None) != (slots is None):
            raise ValueError("keys and slots come together")
        if keys is not None and (len(keys) != len(contexts) or keys.dtype != np.uint64):
            raise ValueError("keys must be one uint64 per context")
        if slots is not None and (slots.dtype != np.uint64 or len(slots) < 4 * len(contexts)):
            raise ValueError("slots must be uint64 pairs, twice as many as the contexts")
        if contexts.dtype.kind != "U":
            raise ValueError(f"contexts must be strings, not {contexts.dtype}")
        self.contexts, self.starts, self.totals = contexts, starts, totals
        self.following, self.alphabet, self.keys, self.slots = following, alphabet, keys, slots

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by their names in the compiled folder."""
        names = ("contexts", "starts", "totals", "following", "keys", "slots")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def lookup(self, context: str) -> tuple[dict[str, int], int] | None:
        """(next-character counts, their total) of ``context``, or None if it is unseen."""
        i = int(np.searchsorted(self.contexts, context))
        if i == len(self.contexts) or str(self.contexts[i]) != context:
            return None
        start, end = 2 * int(self.starts[i]), 2 * int(self.starts[i + 1])
        chars = map(self.alphabet.__getitem__, self.following[start:end:2].tolist())
        counts = self.following[start + 1 : end : 2].tolist()
        return dict(zip(chars, counts, strict=True)), int(self.totals[i])


def _interpolated_log_prob(
    uniform: float, chain: list[tuple[dict[str, int], int, float]], char: str
) -> float:
    """Natural log of the interpolated Kneser-Ney P(``char``) over a context's suffix tables
    (``CharNGramLM._suffix_tables``), from the uniform distribution up."""
    probability = uniform
    for counts, total, mass in chain:
        discounted = counts.get(char, 0) - DISCOUNT
        probability = ((discounted if discounted > 0 else 0.0) + mass * probability) / total
    return math.log(probability)


class _Tables(dict):
    """context -> (counts, total), None for an unseen context, read from the compiled arrays
    one context at a time on first use: a process only ever asks about a few thousand
    contexts, and a load then costs milliseconds."""

    def __init__(self, compiled: _CompiledTables):
        super().__init__()
        self.compiled = compiled

    def __missing__(self, context: str) -> tuple[dict[str, int], int] | None:
        table = self[context] = self.compiled.lookup(context)
        return table


def _kneser_ney_tables(
    counts: Mapping[str, Mapping[str, int]], order: int, alphabet: str, base: int | None
) -> _CompiledTables:
    """The compiled tables of ``counts`` (context -> next-character counts): plain counts for
    the longest contexts, continuation counts (distinct preceding characters) for shorter ones
    where they exist; a context seen only at line starts has no continuation counts and keeps
    its plain ones. Each context's entries are sorted by character; keyed for the compiled
    beam search where ``base`` is given (:meth:`CharNGramLM._key_base`).

    Array work throughout, as the English LM's 1.5 million entries take a second this way
    where a loop over them took ten: a new machine pays it at its first start."""
    width = max(order - 1, 1)
    names = np.array(list(counts), dtype=str).reshape(-1)
    if names.dtype.itemsize > 4 * width:
        raise ValueError(f"a context is longer than an order-{order} model's {order - 1}")
    contexts = names.astype(f"<U{width}")  # (contexts,), sorted below
    sizes = np.fromiter(map(len, counts.values()), np.int64, len(counts))
    chars = _alphabet_indices(list(chain.from_iterable(counts.values())), alphabet)
    numbers = np.fromiter(chain.from_iterable(c.values() for c in counts.values()), np.int64)
    if len(numbers) and (numbers.min() < 1 or numbers.max() >= 2**31):
        raise ValueError("counts must be between 1 and 2**31 - 1")
    rank = np.empty(len(contexts), np.int64)  # a context's row in the sorted tables
    by_name = np.argsort(contexts, kind="stable")
    rank[by_name] = np.arange(len(contexts))
    contexts = contexts[by_name]
    points = np.ascontiguousarray(contexts).view(np.uint32).reshape(len(contexts), width)
    # each non-empty context's suffix (its first character dropped), found among the contexts
    suffix_points = np.zeros_like(points)
    suffix_points[:, :-1] = points[:, 1:]
    suffixes = suffix_points.view(f"<U{width}").reshape(-1)
    suffix = np.searchsorted(contexts, suffixes).clip(max=max(len(contexts) - 1, 0))
    has_suffix = (points[:, 0] != 0) & (contexts[suffix] == suffixes)
    # continuation counts: how many entries (a longer context, c) have a given (suffix, c)
    entry_row = np.repeat(rank, sizes)  # (entries,)
    chained = has_suffix[entry_row]
    pairs, continuation = np.unique(
        suffix[entry_row[chained]] * len(alphabet) + chars[chained], return_counts=True
    )
    pair_row, pair_char = np.divmod(pairs, len(alphabet))
    longest = (points != 0).sum(axis=1) == order - 1
    continued = np.zeros(len(contexts), bool)
    continued[pair_row] = True
    continued &= ~longest
    plain = ~continued[entry_row]
    kept = continued[pair_row]
    rows = np.concatenate([entry_row[plain], pair_row[kept]])
    entry_chars = np.concatenate([chars[plain], pair_char[kept]])
    entry_counts = np.concatenate([numbers[plain], continuation[kept]])
    by_entry = np.lexsort((entry_chars, rows))
    rows, entry_chars, entry_counts = rows[by_entry], entry_chars[by_entry], entry_counts[by_entry]
    starts = np.zeros(len(contexts) + 1, np.int64)
    starts[1:] = np.cumsum(np.bincount(rows, minlength=len(contexts)))
    running = np.concatenate([[0], np.cumsum(entry_counts)])
    keys = None if base is None else _context_keys(contexts, alphabet, base)
    return _CompiledTables(
        contexts=contexts,
        starts=starts,
        totals=(running[starts[1:]] - running[starts[:-1]]).astype(np.int64),
        following=np.stack([entry_chars, entry_counts], axis=1).astype(np.int32).ravel(),
        alphabet=alphabet,
        keys=keys,
        slots=None if keys is None else context_slots(keys),
    )


def _alphabet_indices(characters: list[str], alphabet: str) -> np.ndarray:
    """(characters,) int64: each one-character string's index in ``alphabet``; ValueError for
    anything else."""
    points = np.array(characters, dtype=str).reshape(-1)
    if points.dtype.itemsize > 4:
        raise ValueError("a context is followed by more than one character")
    indices = _positions(points.astype("<U1").view(np.uint32), alphabet)
    if np.any(indices < 0):
        raise ValueError("a context is followed by a character outside the alphabet")
    return indices


def _positions(points: np.ndarray, characters: str) -> np.ndarray:
    """Each code point's index in ``characters`` (int64, the shape of ``points``), -1 for a
    code point not in it."""
    position_of = np.full(max(map(ord, characters)) + 2, -1, dtype=np.int64)  # the last: beyond
    position_of[[ord(char) for char in characters]] = np.arange(len(characters))
    return position_of[np.minimum(points, len(position_of) - 1)]
