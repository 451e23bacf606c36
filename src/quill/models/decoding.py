"""CTC decoding: greedy best path and prefix beam search (with an optional character LM).

NumPy (and C for the beam search), no torch, on purpose: the ONNX inference path decodes
model outputs without importing torch. Torch tensors are accepted too (converted once).
Seq2seq generation in torch lives in :mod:`quill.models.generation`;
:func:`seq2seq_greedy_decode` is its NumPy twin for the exported encoder + decoder-step graphs.

Beam search runs compiled (``_ctc_beam.c``) where ``pip install`` could build it, and in
Python otherwise: the same search, step for step, with the same answers to the bit
(:data:`COMPILED_SEARCH`). The compiled one is 5-15x faster per line.

Confidence, everywhere in Quill, is a geometric mean of probabilities in [0, 1]:
``exp(mean log p)``. For CTC greedy it is over the best class of every valid frame (the
probability of the best path, per frame); for beam search it is the total probability of the
chosen labelling (all its alignments), per frame. A geometric mean does not shrink with the
length of the line, so a long confident line and a short confident line score alike.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from operator import itemgetter
from typing import Any, Protocol

import numpy as np

from quill.models.lexicon import WordLexicon

try:  # built by `pip install` where there is a C compiler (setup.py); else Python searches
    from quill.models import _ctc_beam
except ImportError:  # pragma: no cover - a build without a compiler
    _ctc_beam = None  # type: ignore[assignment]

Decoded = tuple[list[int], float]
#: A beam at the end of beam search (:func:`best_by_words`): its reading's ids, its rank
#: (log P_ctc + lm_weight * log P_lm + insertion_bonus * length - word_penalty * the missing
#: words before its last), log P_ctc, and whether its last word is missing from the list.
FinalBeam = tuple[list[int], float, float, bool]
#: A greedy reading's characters and its log-likelihood under each language's identifier
#: (:meth:`CTCDecoder.reading_scores`).
ReadingScores = tuple[int, list[float]]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, converted without importing torch here
        array = array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def _lengths(log_probs: np.ndarray, lengths: Any) -> np.ndarray:
    batch, frames = log_probs.shape[:2]
    if lengths is None:
        return np.full(batch, frames, dtype=np.int64)
    lengths = _as_numpy(lengths).astype(np.int64).reshape(-1)
    if lengths.shape[0] != batch:
        raise ValueError(f"{lengths.shape[0]} lengths for a batch of {batch}")
    return np.clip(lengths, 0, frames)


def ctc_greedy_decode(log_probs: Any, lengths: Any = None, blank: int = 0) -> list[Decoded]:
    """Best-path decoding of (B, T, C) log-probabilities: argmax, collapse repeats, drop blank.

    ``lengths`` (B,) limits each item to its valid frames (padding is ignored). Returns one
    ``(token_ids, confidence)`` per item; confidence is the geometric mean over valid frames
    of the best class probability (1.0 for an item with no frames).

    >>> lp = np.log(np.array([[[.1, .9, 0], [.1, .9, 0], [.8, .2, 0], [.1, 0, .9]]]) + 1e-9)
    >>> ids, conf = ctc_greedy_decode(lp)[0]
    >>> ids, round(conf, 3)
    ([1, 2], 0.874)
    >>> ctc_greedy_decode(lp, lengths=[2])[0][0]
    [1]
    """
    log_probs = _as_numpy(log_probs)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (B, T, C), got shape {log_probs.shape}")
    lengths = _lengths(log_probs, lengths)
    best = log_probs.argmax(axis=2)  # (B, T)
    best_log_prob = log_probs.max(axis=2)  # (B, T)
    results: list[Decoded] = []
    for path, scores, length in zip(best, best_log_prob, lengths, strict=True):
        path = path[:length]
        keep = np.ones(length, dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        keep &= path != blank
        confidence = float(np.exp(scores[:length].mean())) if length else 1.0
        results.append((path[keep].tolist(), confidence))
    return results


class CharLanguageModel(Protocol):
    """What beam search asks of a language model: log P(token | previous tokens).

    :class:`quill.models.language_model.CharNGramLM` is the one Quill ships.
    """

    def log_prob(self, prefix: tuple[int, ...], token: int) -> float: ...


def log_likelihood(
    lm: CharLanguageModel, ids: Sequence[int], compiled: bool | None = None
) -> float:
    """The sum of log P(token | the tokens before it) over ``ids`` read as one line, each
    token asked of ``lm`` after the tokens a beam-search prefix would show it (its last
    ``context_length``); -inf when a token is not one of its characters.

    ``compiled`` as :func:`ctc_beam_search` takes it: None sums in C wherever ``lm`` has
    tables for the compiled search (the same sum to the bit, ~15x faster: a language's
    identifier scores every line's reading), False in Python, True in C or ValueError.
    """
    tables = None if compiled is False or not COMPILED_SEARCH else _compiled_lm(lm)
    if tables is not None:
        return _ctc_beam.log_likelihood(tables, np.asarray(ids, dtype=np.int32))
    if compiled:
        raise ValueError(f"no compiled tables of {type(lm).__name__} here to sum in C")
    context = getattr(lm, "context_length", None)
    total = 0.0
    for i, token in enumerate(ids):
        start = 0 if context is None else max(0, i - context)
        total += lm.log_prob(tuple(ids[start:i]), token)
    return total


def mean_log_prob(lm: CharLanguageModel, ids: Sequence[int]) -> float:
    """Mean log P(token | the tokens before it) of ``ids`` read as one line: how much the line
    reads like the text ``lm`` was fitted on (0.0 for no tokens).

    >>> from quill.models.language_model import CharNGramLM
    >>> english = CharNGramLM.fit(["the cat sat on the mat"] * 3, order=3)
    >>> french = CharNGramLM.fit(["le chat est sur le tapis"] * 3, 3, english.tokenizer)
    >>> ids = english.tokenizer.encode("the mat")
    >>> mean_log_prob(english, ids) > mean_log_prob(french, ids)
    True
    """
    return log_likelihood(lm, ids) / len(ids) if ids else 0.0


def _finite(value: Any) -> bool:
    """Whether ``value`` is a real, finite number (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class LanguageOption:
    """Beam search for the lines of one more language (:attr:`CTCDecoder.languages`).

    ``identifier`` is a small LM of that language's text alone: a line whose greedy reading
    it finds more likely than the main language's identifier does (by the decoder's margin)
    is decoded with ``lm`` and this option's weights instead of the main ones.
    """

    language: str
    identifier: CharLanguageModel
    lm: CharLanguageModel
    lm_weight: float
    insertion_bonus: float
    #: The language's word list and what each word of a reading missing from it costs
    #: (:mod:`quill.models.lexicon`); None: readings are not checked for words.
    words: WordLexicon | None = None
    word_penalty: float = 0.0


#: Mean log-probability per character by which another language's identifier must beat the
#: main language's before a line is decoded in that language. A line read in the wrong
#: language loses more than one read in the main LM (which, for the multiwriter, knows every
#: language a little) gains, so the main language gets the benefit of the doubt: on the val
#: lines of Hooker and the three French sets, 0.7 read Hooker as without a French LM and
#: kept most of the French sets' gain (docs/models.md).
IDENTIFY_MARGIN = 0.7


#: Relative margin under beam search's floor (the lowest rank a kept prefix can have): far
#: above the rounding of a few float64 sums (~1e-16 relative each), so the floor stays below
#: every rank it bounds and the search keeps exactly the prefixes it would without it.
FLOOR_MARGIN = 1e-9
#: Classes less likely than this in a frame (e**-12 ~ 6e-6) are not tried by beam search by
#: default. Tighter is faster: on the Hooker val lines -8 read the same CER 1.6x faster, and
#: -5 let a 16-wide beam cost less than an 8-wide one at -12 and read better (``quill lm tune
#: --prunes`` measures it for a model).
PRUNE_LOG_PROB = -12.0
#: Beam search's default ``rank_gap``: none, every one of the ``beam_width`` best prefixes is
#: kept however far below the best it ranks.
RANK_GAP: float | None = None


#: The compiled search's version this module speaks; a build of another (a stale ``.so`` left
#: by an older checkout) is not used.
COMPILED_SEARCH_VERSION = 6
#: Whether beam search can run compiled (:func:`ctc_beam_search`'s ``compiled``).
COMPILED_SEARCH = _ctc_beam is not None and _ctc_beam.ABI_VERSION == COMPILED_SEARCH_VERSION
#: A language model's tables as the compiled search holds them, made on its first search.
_compiled_lms: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: A word list's table as the compiled search holds it, made on its first search.
_compiled_words_lists: weakref.WeakKeyDictionary[WordLexicon, Any] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CTCDecoder:
    """How CTC log-probabilities become text: greedy best path, or beam search with an LM.

    A staged model's ``decoding`` section (``quill lm tune`` writes it) builds one; greedy is
    the default because it costs nothing, while beam search with a language model costs a few
    milliseconds per line in Python and pays off on ambiguous handwriting.
    """

    method: str = "greedy"
    beam_width: int = 8
    lm: CharLanguageModel | None = None
    lm_weight: float = 0.0
    insertion_bonus: float = 0.0
    prune_log_prob: float = PRUNE_LOG_PROB
    rank_gap: float | None = RANK_GAP
    #: Other languages' LMs for beam search, each used for the lines that read like its
    #: language (:meth:`languages_of`); ``identifier`` recognises the main language's lines.
    languages: tuple[LanguageOption, ...] = ()
    identifier: CharLanguageModel | None = None
    identify_margin: float = IDENTIFY_MARGIN
    #: :func:`ctc_beam_search`'s ``compiled``: None uses the compiled search where it can.
    compiled: bool | None = None
    #: The main language's word list and its penalty (:mod:`quill.models.lexicon`).
    words: WordLexicon | None = None
    word_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")
        if isinstance(self.beam_width, bool) or not isinstance(self.beam_width, int):
            raise ValueError(f"beam_width must be a whole number, got {self.beam_width!r}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {self.beam_width}")
        # a NaN weight or a positive pruning threshold read every line as empty text
        weights = {"lm_weight": self.lm_weight, "insertion_bonus": self.insertion_bonus}
        weights |= {f"{o.language} lm_weight": o.lm_weight for o in self.languages}
        weights |= {f"{o.language} insertion_bonus": o.insertion_bonus for o in self.languages}
        weights |= {"word_penalty": self.word_penalty}
        weights |= {f"{o.language} word_penalty": o.word_penalty for o in self.languages}
        for name, value in {**weights, "prune_log_prob": self.prune_log_prob}.items():
            if not _finite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        negative = {
            name: value
            for name, value in weights.items()
            if name.endswith(("lm_weight", "word_penalty")) and value < 0
        }
        if negative:
            raise ValueError(f"LM weights and word penalties must be at least 0, got {negative}")
        if not self.prune_log_prob < 0:
            raise ValueError(f"prune_log_prob must be negative, got {self.prune_log_prob}")
        if self.rank_gap is not None and not self.rank_gap > 0:
            raise ValueError(f"rank_gap must be positive (or None), got {self.rank_gap!r}")
        if self.languages and self.identifier is None:
            raise ValueError("other languages need an identifier of the main language")

    def forget(self) -> None:
        """Drop what the language models memoised from earlier lines (see
        :meth:`quill.models.language_model.CharNGramLM.forget`); nothing to drop without one.
        (The compiled search memoises nothing from one line to the next.)"""
        models = [self.lm, self.identifier]
        for option in self.languages:
            models += [option.lm, option.identifier]
        for lm in models:
            forget = getattr(lm, "forget", None)
            if forget is not None:
                forget()

    def reading_scores(self, log_probs: Any, lengths: Any = None) -> list[ReadingScores]:
        """Per item of (B, T, C) log-probabilities, how much its greedy reading looks like
        each language: ``(characters, [log-likelihood under the main identifier, then under
        each other language's])`` (empty without other languages)."""
        identifiers = [self.identifier] if self.identifier is not None and self.languages else []
        identifiers += [option.identifier for option in self.languages]
        return [
            (len(ids), [log_likelihood(lm, ids, self.compiled) for lm in identifiers])
            for ids, _ in ctc_greedy_decode(log_probs, lengths)
        ]

    def choose_language(self, readings: Sequence[ReadingScores]) -> LanguageOption | None:
        """The language of lines read together (one line, or the lines of one page): the
        other language whose identifier finds their greedy readings, all characters
        together, the most likely, if it beats the main identifier by ``identify_margin``
        per character; None (the main language) otherwise, and for no characters at all."""
        characters = sum(count for count, _ in readings)
        if not self.languages or not characters:
            return None
        totals = np.sum([scores for count, scores in readings if count], axis=0) / characters
        best: LanguageOption | None = None
        bar = totals[0] + self.identify_margin
        for option, score in zip(self.languages, totals[1:], strict=True):
            if score > bar:
                best, bar = option, score
        return best

    def languages_of(self, log_probs: Any, lengths: Any = None) -> list[LanguageOption | None]:
        """Per item of (B, T, C) log-probabilities, the other language it reads as on its
        own (:meth:`choose_language` of its reading alone), or None for the main one."""
        return [
            self.choose_language([scores]) for scores in self.reading_scores(log_probs, lengths)
        ]

    def decode_as(
        self, language: LanguageOption | None, log_probs: Any, lengths: Any = None
    ) -> list[Decoded]:
        """Beam search of every item with the LM and weights of ``language`` (None: the main
        LM's), whatever the items read as."""
        chosen = self if language is None else language
        return ctc_beam_search(
            log_probs,
            lengths,
            beam_width=self.beam_width,
            lm=chosen.lm,
            lm_weight=chosen.lm_weight,
            insertion_bonus=chosen.insertion_bonus,
            prune_log_prob=self.prune_log_prob,
            rank_gap=self.rank_gap,
            compiled=self.compiled,
            words=chosen.words,
            word_penalty=chosen.word_penalty,
        )

    def __call__(self, log_probs: Any, lengths: Any = None) -> list[Decoded]:
        """(B, T, C) log-probabilities and (B,) valid frames -> (ids, confidence) each."""
        if self.method == "greedy":
            return ctc_greedy_decode(log_probs, lengths)
        if self.languages:
            return self._decode_by_language(log_probs, lengths)
        return self.decode_as(None, log_probs, lengths)

    def _decode_by_language(self, log_probs: Any, lengths: Any) -> list[Decoded]:
        """Beam search of each item with the LM and weights of the language it reads as."""
        log_probs = _as_numpy(log_probs)
        lengths = _lengths(log_probs, lengths)
        decoded = []
        for frames, length, language in zip(
            log_probs, lengths, self.languages_of(log_probs, lengths), strict=True
        ):
            decoded += self.decode_as(language, frames[None, :length])  # (1, length, C)
        return decoded


def ctc_beam_search(
    log_probs: Any,
    lengths: Any = None,
    beam_width: int = 8,
    blank: int = 0,
    lm: CharLanguageModel | None = None,
    lm_weight: float = 0.5,
    insertion_bonus: float = 0.0,
    prune_log_prob: float = PRUNE_LOG_PROB,
    rank_gap: float | None = RANK_GAP,
    compiled: bool | None = None,
    words: WordLexicon | None = None,
    word_penalty: float = 0.0,
) -> list[Decoded]:
    """CTC prefix beam search over (B, T, C) log-probabilities.

    Keeps the ``beam_width`` best labellings, summing the probability of all their
    alignments (greedy keeps only the single best alignment). With ``lm``, prefixes are
    ranked by ``log P_ctc + lm_weight * log P_lm + insertion_bonus * length``; confidence
    uses the CTC probability alone, so it stays comparable with greedy decoding. A class whose
    log-probability in a frame is at or below ``prune_log_prob`` does not extend any prefix
    there (a trade of accuracy for speed: see :data:`PRUNE_LOG_PROB`). With ``rank_gap``, a
    prefix ranked more than that below the frame's best is dropped even when the beam has room
    (the other trade: a prefix e**-10 times less likely than the best rarely overtakes it, and
    most frames of a confident model then carry a few prefixes instead of ``beam_width``).

    ``compiled``: True runs the compiled search (ValueError where it cannot: no build, or an
    LM without :meth:`~quill.models.language_model.CharNGramLM.beam_tables`), False the
    Python one, None the compiled one wherever it can. Both give the same answers.

    With ``words`` (:class:`~quill.models.lexicon.WordLexicon`), each word of a prefix
    missing from the list costs its rank ``word_penalty`` as soon as the word ends, and the
    word a final beam ends in is counted at the end (see :mod:`quill.models.lexicon`); the
    confidence is the chosen reading's own.

    Greedy takes the best single path (blank, blank) with probability .25; beam search sums
    the three paths of ``[1]`` (.4*.3 + .4*.5 + .5*.3 = .47):

    >>> lp = np.log(np.array([[[.5, .4, .1], [.5, .3, .2]]]))
    >>> ctc_greedy_decode(lp)[0][0], ctc_beam_search(lp)[0][0]
    ([], [1])
    >>> round(ctc_beam_search(lp)[0][1] ** 2, 2)  # confidence per frame, squared = P([1])
    0.47
    """
    log_probs = _as_numpy(log_probs)
    lengths = _lengths(log_probs, lengths)
    num_classes = log_probs.shape[2]
    # what rules the compiled search out for every item alike, asked once
    settings_rule_out = (
        "asked for the Python search"
        if compiled is False
        else _why_not_compiled(beam_width, lm, lm_weight, insertion_bonus, word_penalty)
    )
    tables = None if settings_rule_out else _compiled_lm(lm)
    decoded = []
    for frames, length in zip(log_probs, lengths, strict=True):
        frames = frames[:length]  # (T, C)
        candidates = _candidate_arrays(frames, beam_width, blank, prune_log_prob, num_classes)
        why_not = settings_rule_out
        if why_not is None and len(frames) and not np.all(frames < np.inf):
            why_not = "the frames hold NaN or +inf"
        if why_not is None:
            decoded.append(
                _ctc_beam.beam_search(
                    np.ascontiguousarray(frames[:, blank], dtype=np.float64),  # (T,)
                    *candidates, num_classes, beam_width, tables, lm_weight, insertion_bonus,
                    None if rank_gap is None else float(rank_gap), FLOOR_MARGIN,
                    None if words is None else _compiled_words(words), float(word_penalty),
                )
            )  # fmt: skip
            continue
        if compiled:
            raise ValueError(f"the compiled beam search cannot run here: {why_not}")
        decoded.append(
            _beam_search_one(
                frames, candidates, beam_width, blank, lm, lm_weight, insertion_bonus, rank_gap,
                words, word_penalty,
            )
        )  # fmt: skip
    return decoded


def best_by_words(beams: Sequence[FinalBeam], word_penalty: float, frames: int) -> Decoded:
    """The final beam (best first) that ranks best once its last word, when missing from the
    word list, has cost ``word_penalty`` too (the first of equals), with its confidence.

    >>> beams = [([3, 8, 5], -1.0, -1.5, True), ([3, 4, 5], -1.2, -1.6, False)]  # cot, cat
    >>> best_by_words(beams, 0.5, 4)[0], best_by_words(beams, 0.1, 4)[0]
    ([3, 4, 5], [3, 8, 5])
    """
    best, best_score = 0, -math.inf
    for index, (_, rank, _, last_unknown) in enumerate(beams):
        if not rank > best_score:  # a penalty only lowers a rank: this beam cannot win
            continue
        score = rank - word_penalty * last_unknown
        if score > best_score:
            best, best_score = index, score
    ids, _, log_p, _ = beams[best]
    return ids, math.exp(log_p / frames) if frames else 1.0


def _compiled_words(words: WordLexicon) -> Any:
    """``words`` as the compiled search holds them, made on its first search."""
    if words not in _compiled_words_lists:
        _compiled_words_lists[words] = _ctc_beam.word_tables(*words.search_arrays())
    return _compiled_words_lists[words]


def _compiled_lm(lm: CharLanguageModel | None) -> Any:
    """``lm``'s tables as the compiled search holds them, made on its first search (None for
    no LM, or an LM without :meth:`~quill.models.language_model.CharNGramLM.beam_tables`)."""
    beam_tables = getattr(lm, "beam_tables", None)
    if beam_tables is None:
        return None
    if lm not in _compiled_lms:
        arrays = beam_tables()
        try:
            tables = (
                None
                if arrays is None
                else _ctc_beam.lm_tables(*(getattr(arrays, f.name) for f in fields(arrays)))
            )
        except ValueError:  # tables it cannot hold (a context longer than it keeps)
            tables = None
        _compiled_lms[lm] = tables
    return _compiled_lms[lm]


def _why_not_compiled(
    beam_width: int,
    lm: CharLanguageModel | None,
    lm_weight: float,
    insertion_bonus: float,
    word_penalty: float = 0.0,
) -> str | None:
    """Why the compiled search cannot answer with these settings as the Python one would, or
    None. It ranks with plain float comparisons, so it leaves to Python an LM at a weight of 0
    or less (0 * -inf is NaN) and non-finite weights (and :func:`ctc_beam_search` frames
    holding NaN or +inf)."""
    if not COMPILED_SEARCH:
        return "quill.models._ctc_beam is not built (no C compiler at install)"
    if lm is not None and _compiled_lm(lm) is None:
        return f"{type(lm).__name__} has no tables for the compiled search"
    if lm is not None and not lm_weight > 0:
        return f"lm_weight is {lm_weight}"
    if not all(map(math.isfinite, (lm_weight, insertion_bonus, word_penalty))):
        return "a weight is not finite"
    if beam_width < 1:
        return f"beam_width is {beam_width}"
    return None


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (NumPy's is ~20x slower per scalar call).

    Beam search spells the same expression out inline in its inner loops (a call costs as
    much as the arithmetic there); any change here must be made there too.
    """
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _candidate_arrays(
    frames: np.ndarray, beam_width: int, blank: int, prune_log_prob: float, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (token, log P) that may extend a prefix in each frame, most likely first (equal
    ones by class number): frame t's are ``tokens[starts[t]:starts[t + 1]]`` and
    ``values[...]``, none in a blank-only frame. Returns (starts (T + 1,) int64, tokens int32,
    values float64).

    Only the ``beam_width + 1`` most likely classes of a frame (blank among them) can extend a
    surviving prefix, and a class at or below ``prune_log_prob`` is taken not to change which
    prefixes survive: most frames of a confident model leave one or two candidates, none
    between characters. So only the classes above the threshold are sorted, in one pass over
    all frames (2.7x faster than sorting every class of every frame with a candidate).

    >>> lp = np.log(np.array([[.5, .3, .2], [.9, .05, .05], [.1, .45, .45]]))
    >>> starts, tokens, values = _candidate_arrays(lp, 8, 0, -2.0, 3)
    >>> starts.tolist(), tokens.tolist()
    ([0, 2, 2, 4], [1, 2, 1, 2])
    """
    # compared in float64, as Python compares the frames' values with the threshold
    above = frames > np.float64(prune_log_prob)  # (T, C), blank included: it takes a rank
    extends = above.copy()
    extends[:, blank] = False
    above &= extends.any(axis=1, keepdims=True)  # (T, 1): a blank-only frame has none
    rows, classes = np.nonzero(above)  # row-major
    values = frames[rows, classes]
    order = np.lexsort((-values, rows))  # frame by frame, best first; stable: ties by class
    rows, classes, values = rows[order], classes[order], values[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)  # place within its frame
    keep = (rank < min(num_classes, beam_width + 1)) & (classes != blank)
    rows = rows[keep]
    starts = np.searchsorted(rows, np.arange(len(frames) + 1))  # (T + 1,)
    return starts.astype(np.int64), classes[keep].astype(np.int32), values[keep].astype(np.float64)


def _beam_search_one(
    frames: np.ndarray,
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray],
    beam_width: int,
    blank: int,
    lm: CharLanguageModel | None,
    lm_weight: float,
    insertion_bonus: float,
    rank_gap: float | None = None,
    words: WordLexicon | None = None,
    word_penalty: float = 0.0,
) -> Decoded:
    """Prefix beam search of one item's (T, C) frames in Python, given their
    :func:`_candidate_arrays` (the compiled search, ``_ctc_beam.c``, is this one in C).
    With ``words``, a prefix's rank is lowered by ``word_penalty`` for each word missing from
    the list that it has ended, and the final beam :func:`best_by_words` chooses.

    Prefixes are the nodes of a trie (an int each, with a record of its parent, last token,
    LM state and scores), so extending, merging and ranking them hashes small ints instead of
    ever longer tuples. The arithmetic, the order in which prefixes are met and the stable
    sort are those of the plain ``dict[prefix tuple, [log P_blank, log P_label]]``
    formulation (kept as the reference in tests/models/test_beam_search_exact.py), so the
    answer is the same to the bit. Once the beam is full, a prefix whose rank is below every
    beam's rank in this frame (a floor the stays cannot fall under) is left out of the sort,
    and its LM score is not asked for when no LM score could lift it over the floor: on
    Hooker lines that is about a third of the new prefixes and 8% of the instructions. With
    ``rank_gap`` the floor is also the best beam's last rank plus this frame's log P(blank),
    less the gap (the frame's best ranks at least there), and the beam is cut at its best
    rank less the gap.
    ``logaddexp`` is written out inline (see :func:`_logaddexp`): in these loops a call costs
    as much as the arithmetic.
    """
    neg_inf = -math.inf
    log1p, exp = math.log1p, math.exp
    num_classes = frames.shape[1]
    # An n-gram LM looks back a fixed number of tokens (``context_length``): asked with only
    # those (through its memoised ``context_log_prob`` when it has one) it answers the same,
    # and the prefixes' LM states stay short tuples.
    context = getattr(lm, "context_length", None)
    lm_log_prob = None
    if lm is not None:
        lm_log_prob = (
            getattr(lm, "context_log_prob", lm.log_prob) if context is not None else lm.log_prob
        )
    # Per node: (parent, last token, LM state, LM log-probability, lm_weight * that,
    # length, insertion_bonus * length, the letters of the word it ends in (lower case),
    # the missing words before those, word_penalty * that). A prefix's rank is
    # log P_ctc + lm_weight * log P_lm + insertion_bonus * length - word_penalty * missing,
    # summed in that order.
    nodes_info: list[tuple] = [
        (-1, -1, (), 0.0, lm_weight * 0.0, 0, insertion_bonus * 0, "", 0, word_penalty * 0)
    ]
    # each token's letter in lower case for the word list ("" for a token that is no letter)
    letters = words.token_letters if words is not None else ()
    known = words.words if words is not None else frozenset()

    def unknown_after(info: tuple, letter: str) -> int:
        """The missing words before the word a node's prefix extended by ``letter`` ends in
        (a non-letter after letters ends their word)."""
        if letter or not info[7]:
            return info[8]
        return info[8] + (info[7] not in known)

    children: dict[int, int] = {}  # node * num_classes + token -> node
    # The beams, best first: node, log P(ending in blank), log P(ending in a label).
    nodes, p_blanks, p_labels = [0], [0.0], [neg_inf]
    labels_dead = True  # every p_label is -inf, as after a blank-only frame
    blank_column = frames[:, blank].tolist() if len(frames) else []
    rank_of = itemgetter(3)
    # The rank of the beam_width-th beam (-inf while the beam is not full), moved on by each
    # blank-only frame: the floor below which a prefix cannot be kept (see below). Only when
    # lm_weight * log P_lm can only lower a rank (log P_lm <= 0): with a positive weight or
    # no LM (at a weight of 0 an unknown character's -inf makes a rank NaN, unordered).
    lm_bounded = lm_weight > 0 or lm is None
    lowest = neg_inf
    # The best beam's rank, moved on as ``lowest`` is: with ``rank_gap``, the other floor.
    leading = 0.0
    starts, tokens, values = candidates
    pairs = list(zip(tokens.tolist(), values.tolist(), strict=True))
    for (start, end), p_blank_frame in zip(pairwise(starts.tolist()), blank_column, strict=True):
        if start == end:
            # A blank-only frame (most frames between characters) adds the same log P(blank)
            # to every prefix: the ranking cannot change, so there is nothing to sort.
            lowest += p_blank_frame
            leading += p_blank_frame
            if labels_dead:  # logaddexp(b, -inf) is b
                p_blanks = [b + p_blank_frame for b in p_blanks]
            else:
                p_blanks = [
                    (
                        lab
                        if b == neg_inf
                        else b
                        if lab == neg_inf
                        else (b if b > lab else lab) + log1p(exp(-abs(b - lab)))
                    )
                    + p_blank_frame
                    for b, lab in zip(p_blanks, p_labels, strict=True)
                ]
                p_labels = [neg_inf] * len(nodes)
                labels_dead = True
            continue
        # The prefixes met this frame, in the order met (equal ranks keep it), as
        # (node, log P_blank, log P_label, rank). A prefix that is not a beam has one parent
        # among the beams, so it is met once, with its final values, and ranked at once; only
        # the beams can be met twice (as themselves and as an extension of another beam), so
        # only their entries are mutable lists, found through beam_at.
        beam_at: dict[int, list | None] = dict.fromkeys(nodes)
        entries: list = []
        # With a full beam, every beam stays (ending in blank) at least at its last rank plus
        # this frame's log P(blank) (merging only adds), so no prefix ranked strictly below
        # the lowest of those can be kept: it is not added to the sort, and its LM score is
        # not asked for when even a certain next character (log P_lm = 0) would leave it
        # below. ``floor`` is that lowest, less a margin for the rounding of the sums.
        floor = lowest + p_blank_frame
        if rank_gap is not None and lm_bounded:
            floor = max(floor, leading + p_blank_frame - rank_gap)
        floor -= FLOOR_MARGIN * (1.0 + abs(floor))
        for node, b, lab in zip(nodes, p_blanks, p_labels, strict=True):
            if b == neg_inf:
                p_total = lab
            elif lab == neg_inf:
                p_total = b
            else:
                p_total = (b if b > lab else lab) + log1p(exp(-abs(b - lab)))
            x = p_total + p_blank_frame
            stay = beam_at[node]
            if stay is None:
                stay = beam_at[node] = [node, x, neg_inf, neg_inf]  # ranked below, when complete
                entries.append(stay)
            else:
                y = stay[1]
                if y != neg_inf and x != neg_inf:
                    x = (y if y > x else x) + log1p(exp(-abs(y - x)))
                elif x == neg_inf:
                    x = y
                stay[1] = x
            info = nodes_info[node]
            repeat = info[1]
            key = node * num_classes
            for token, p in pairs[start:end]:
                if token == repeat:
                    stay[2] = _logaddexp(stay[2], lab + p)  # a repeat collapses
                    x = b + p  # the repeated label needs a blank between
                else:
                    x = p_total + p
                child = children.get(key + token)
                if child is None:
                    # A prefix never kept before: ranked now, made a node only if it is kept
                    # (most are not); met once, so logaddexp(-inf, x) is x.
                    if lm_log_prob is None:
                        score = info[3] + 0.0
                    elif x + info[4] + insertion_bonus * (info[5] + 1) - info[9] < floor:
                        continue
                    else:
                        score = info[3] + lm_log_prob(info[2], token)
                    unknown = unknown_after(info, letters[token] if token < len(letters) else "")
                    rank = (
                        x
                        + lm_weight * score
                        + insertion_bonus * (info[5] + 1)
                        - word_penalty * unknown
                    )
                    if not rank < floor:  # (a NaN rank is kept, as it was met)
                        entries.append((-1, neg_inf, x, rank, node, token, score))
                    continue
                if child not in beam_at:  # met once: logaddexp(-inf, x) is x
                    grown = nodes_info[child]
                    rank = x + grown[4] + grown[6] - grown[9]
                    if not rank < floor:  # (a NaN rank is kept, as it was met)
                        entries.append((child, neg_inf, x, rank))
                    continue
                other = beam_at[child]
                if other is None:
                    other = beam_at[child] = [child, neg_inf, x, neg_inf]
                    entries.append(other)
                else:
                    y = other[2]
                    if y != neg_inf and x != neg_inf:
                        x = (y if y > x else x) + log1p(exp(-abs(y - x)))
                    elif x == neg_inf:
                        x = y
                    other[2] = x
        for entry in beam_at.values():
            if entry is not None:
                node, b, lab, _ = entry
                if b == neg_inf:
                    rank = lab
                elif lab == neg_inf:
                    rank = b
                else:
                    rank = (b if b > lab else lab) + log1p(exp(-abs(b - lab)))
                info = nodes_info[node]
                entry[3] = rank + info[4] + info[6] - info[9]
        # sorted() is stable, reverse=True included: equal ranks keep the order met
        best = sorted(entries, key=rank_of, reverse=True)[:beam_width]
        if rank_gap is not None:
            cut = best[0][3] - rank_gap
            best = [entry for entry in best if not entry[3] < cut]  # (NaN ranks are kept)
            leading = best[0][3]
        # (a beam cut short by rank_gap gives no floor from its last rank)
        lowest = best[-1][3] if lm_bounded and len(best) == beam_width else neg_inf
        nodes = [entry[0] for entry in best]
        for i, entry in enumerate(best):
            if entry[0] < 0:  # a new prefix kept: now a node
                _, _, _, _, from_node, token, score = entry
                info = nodes_info[from_node]
                state = info[2]
                if context is None:
                    state = (*state, token)
                else:
                    state = (*state, token)[-context:] if context else ()
                size = info[5] + 1
                letter = letters[token] if token < len(letters) else ""
                unknown = unknown_after(info, letter)
                nodes[i] = children[from_node * num_classes + token] = len(nodes_info)
                nodes_info.append(
                    (from_node, token, state, score, lm_weight * score, size,
                     insertion_bonus * size, info[7] + letter if letter else "", unknown,
                     word_penalty * unknown)
                )  # fmt: skip
        p_blanks = [entry[1] for entry in best]
        p_labels = [entry[2] for entry in best]
        labels_dead = False
    if words is not None:
        beams = []
        for node, b, lab in zip(nodes, p_blanks, p_labels, strict=True):
            total = _logaddexp(b, lab)
            info = nodes_info[node]
            rank = total + info[4] + info[6] - info[9]
            last_unknown = unknown_after(info, "") > info[8]
            beams.append((_ids_of(nodes_info, node), rank, total, last_unknown))
        return best_by_words(beams, word_penalty, len(frames))
    confidence = (
        math.exp(_logaddexp(p_blanks[0], p_labels[0]) / len(frames)) if len(frames) else 1.0
    )
    return _ids_of(nodes_info, nodes[0]), confidence


def _ids_of(nodes_info: list[tuple], node: int) -> list[int]:
    """The token ids of a node's prefix, first to last."""
    ids: list[int] = []
    while node > 0:
        node, token = nodes_info[node][:2]
        ids.append(token)
    return ids[::-1]


#: (tokens (B, 1) int64, self_keys, self_values) -> (logits (B, C), self_keys, self_values)
StepFunction = Callable[
    [np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]
]


def seq2seq_greedy_decode(
    step: StepFunction,
    cross_keys: np.ndarray,
    max_length: int,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> list[Decoded]:
    """Greedy decoding with a KV cache over an exported decoder step, in NumPy.

    ``step`` runs one decoder step (e.g. an onnxruntime session of ``decoder_step.onnx`` with
    the cross-attention keys/values bound); ``cross_keys`` (layers, B, heads, S, head_dim)
    gives the cache geometry. Same rules as the torch decoder: PAD and BOS are never emitted,
    every row stops at its EOS (included in the ids and the confidence), the loop stops when
    all rows have ended. Returns ``(ids, confidence)`` per row.
    """
    layers, batch, heads, _, head_dim = cross_keys.shape
    self_keys = np.zeros((layers, batch, heads, 0, head_dim), dtype=cross_keys.dtype)
    self_values = self_keys
    tokens = np.full((batch, 1), bos_id, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    total = np.zeros(batch, dtype=np.float64)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(max_length):
        logits, self_keys, self_values = step(tokens, self_keys, self_values)
        logits = logits.astype(np.float64)
        logits[:, [pad_id, bos_id]] = -np.inf
        log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)  # (B, C)
        best = log_probs.argmax(axis=1)
        for row in np.flatnonzero(~finished):
            outputs[row].append(int(best[row]))
            total[row] += log_probs[row, best[row]]
        finished |= best == eos_id
        if finished.all():
            break
        tokens = best[:, None].astype(np.int64)
    return [
        (ids, float(np.exp(score / max(len(ids), 1))))
        for ids, score in zip(outputs, total, strict=True)
    ]
