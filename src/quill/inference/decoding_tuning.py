"""Fit a character language model and tune how a staged CTC model decodes with it.

``quill lm fit`` counts n-grams over plain text (Jane Austen's novels, the transcriptions of
a dataset's train split, any text files); ``quill lm tune`` runs a staged model once over a
validation set, decodes the same log-probabilities greedily and with beam search at each
beam width, pruning threshold, LM weight and insertion bonus of a grid, and (``--write``)
stores the best setting (within a latency budget, if given) in the model's ``decoding``
section with the LM beside it, so every interface decodes the same way.
Tuning on validation data, never on the test split, keeps the benchmark honest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quill.evaluation import corpus_cer
from quill.inference.shifts import ONE_PASS
from quill.models.decoding import (
    PRUNE_LOG_PROB,
    CTCDecoder,
    Decoded,
    LanguageOption,
    ctc_greedy_decode,
)
from quill.models.language_model import CharNGramLM
from quill.models.lexicon import WordLexicon
from quill.staged_model import DecodingConfig, StagedModel
from quill.staging.model_card import with_decoding_section, with_header

#: Lines per call when :func:`measure_shifts` reads a tuning set (as `quill bench accuracy`).
SHIFT_BATCH = 16


@dataclass
class TuningResult:
    """CER of one decoding setting on the tuning set, and its decoding time per line."""

    setting: dict[str, Any]
    cer: float
    ms_per_line: float
    #: The CER of each data folder's lines, when the tuning set joins several (:func:`scored`).
    per_set: dict[str, float] = field(default_factory=dict)


def scored(
    texts: Sequence[str], references: Sequence[str], sets: Sequence[str] = ()
) -> tuple[float, dict[str, float]]:
    """The corpus CER of ``texts`` and, when ``sets`` (each line's data folder) names more
    than one, each folder's: a setting can read one writer's pages better and strangers'
    hands worse, which the pooled figure alone hides. Texts are scored as read (as every
    tuning table in a model card was), not normalised as ``quill bench accuracy`` scores.

    >>> scored(["ab", "cd"], ["ab", "cx"], ["hooker", "copiste"])
    (0.25, {'hooker': 0.0, 'copiste': 0.5})
    >>> scored(["ab"], ["ax"])
    (0.5, {})
    """
    members: dict[str, list[int]] = {}
    for index, label in enumerate(sets):
        members.setdefault(label, []).append(index)
    per_set = {
        label: corpus_cer([texts[i] for i in chosen], [references[i] for i in chosen])
        for label, chosen in members.items()
    }
    return corpus_cer(texts, references), per_set if len(per_set) > 1 else {}


class _RecordingDecoder:
    """Decodes greedily while keeping every batch's log-probabilities for re-decoding."""

    def __init__(self) -> None:
        self.batches: list[tuple[Any, Any]] = []

    def __call__(self, log_probs: Any, lengths: Any = None) -> list[Decoded]:
        self.batches.append((log_probs, lengths))
        return ctc_greedy_decode(log_probs, lengths)


def record_log_probs(
    recognizer: Any, images: Sequence[Path], progress: Callable[[], None] = lambda: None
) -> list[tuple[Any, Any]]:
    """Run the model once over line images: one (log_probs (1, T, C), lengths (1,)) each,
    or (None, None) for a blank image, which the recognizer reads as "" without the model.

    One image per call keeps the recorded outputs in the order of ``images``.
    """
    if recognizer.model.family != "ctc":
        raise ValueError("decoding with a language model applies to CTC models only")
    recorder = _RecordingDecoder()
    original, recognizer.runtime.decoder = recognizer.runtime.decoder, recorder
    try:
        for path in images:
            recorded = len(recorder.batches)
            recognizer.predict([str(path)], kind="line")
            if len(recorder.batches) == recorded:  # blank: the model was not run
                recorder.batches.append((None, None))
            progress()
    finally:
        recognizer.runtime.decoder = original
    return recorder.batches


def tune(
    batches: Sequence[tuple[Any, Any]],
    references: Sequence[str],
    decode_text: Callable[[list[int]], str],
    lm: CharNGramLM | None,
    weights: Sequence[float],
    bonuses: Sequence[float],
    beam_widths: Sequence[int],
    prunes: Sequence[float] = (PRUNE_LOG_PROB,),
    rank_gaps: Sequence[float | None] = (None,),
    progress: Callable[[str], None] = lambda _: None,
    sets: Sequence[str] = (),
) -> list[TuningResult]:
    """CER of greedy, of beam search alone and of beam search with ``lm`` at every
    (beam width, prune threshold, rank gap, weight, bonus) of the grid, on the same recorded
    log-probabilities; best first. A rank gap of None keeps the whole beam. ``sets``: each
    line's data folder, for the CER of each (:func:`scored`)."""
    searches = [
        {"method": "beam", "beam_width": width, "prune_log_prob": prune}
        | ({} if gap is None else {"rank_gap": gap})
        for width, prune, gap in itertools.product(beam_widths, prunes, rank_gaps)
    ]
    settings: list[dict[str, Any]] = [{"method": "greedy"}, *searches]
    if lm is not None:
        settings += [
            {**search, "lm_weight": w, "insertion_bonus": b}
            for search, w, b in itertools.product(searches, weights, bonuses)
        ]
    results = []
    for setting in settings:
        progress(json.dumps(setting))
        decoder = CTCDecoder(lm=lm if "lm_weight" in setting else None, **setting)
        texts, ms_per_line = _decode_all(decoder, batches, decode_text)
        results.append(TuningResult(setting, *_cer_ms(texts, references, sets, ms_per_line)))
    return sorted(results, key=lambda r: r.cer)


def _cer_ms(
    texts: Sequence[str], references: Sequence[str], sets: Sequence[str], ms: float
) -> tuple[float, float, dict[str, float]]:
    """A :class:`TuningResult`'s figures in field order: CER, milliseconds, CER per set."""
    cer, per_set = scored(texts, references, sets)
    return cer, ms, per_set


def _decode_all(
    decoder: CTCDecoder, batches: Sequence[tuple[Any, Any]], decode_text: Callable[[list[int]], str]
) -> tuple[list[str], float]:
    """Every recorded line's text with ``decoder`` ("" for a blank one), and the mean
    milliseconds decoding took per line, each line timed as new text."""
    decoded: list[Decoded] = []
    elapsed = 0.0
    first = next((batch for batch in batches if batch[0] is not None), None)
    if first is not None:  # untimed: a language model's first search builds its tables
        decoder(*first)
    for log_probs, lengths in batches:
        if log_probs is None:
            decoded.append(([], 1.0))
            continue
        decoder.forget()  # each line timed as new text, whatever was decoded before
        start = time.perf_counter()
        decoded += decoder(log_probs, lengths)
        elapsed += time.perf_counter() - start
    return [decode_text(ids) for ids, _ in decoded], elapsed * 1000 / max(1, len(decoded))


@dataclass
class LanguageTuningResult(TuningResult):
    """:class:`TuningResult` of a decoding with one more language, and how many of the
    tuning lines it decoded in that language."""

    lines_in_language: int = 0


def tune_language(
    batches: Sequence[tuple[Any, Any]],
    references: Sequence[str],
    decode_text: Callable[[list[int]], str],
    main: CTCDecoder,
    identifier: CharNGramLM,
    option: LanguageOption,
    weights: Sequence[float],
    bonuses: Sequence[float],
    margins: Sequence[float],
    progress: Callable[[str], None] = lambda _: None,
    sets: Sequence[str] = (),
) -> list[LanguageTuningResult]:
    """CER of ``main`` (a beam search with its LM, as the model decodes now) and of ``main``
    reading ``option``'s language too, at every identification margin and weight and bonus
    of ``option``'s LM, on the same recorded log-probabilities; best first. A language
    ``main`` reads already is replaced by ``option``; its other languages are kept."""
    kept = tuple(other for other in main.languages if other.language != option.language)
    results = []
    baseline_texts, baseline_ms = _decode_all(main, batches, decode_text)
    baseline = _cer_ms(baseline_texts, references, sets, baseline_ms)
    results.append(LanguageTuningResult({}, *baseline, lines_in_language=0))
    for margin in margins:
        # which lines read as the language depends on the margin alone, not on the weights
        choosing = dataclasses.replace(
            main, identifier=identifier, identify_margin=margin, languages=(*kept, option)
        )
        in_language = sum(
            chosen is not None and chosen.language == option.language
            for log_probs, lengths in batches
            if log_probs is not None
            for chosen in choosing.languages_of(log_probs, lengths)
        )
        for weight, bonus in itertools.product(weights, bonuses):
            setting = {"identify_margin": margin, "lm_weight": weight, "insertion_bonus": bonus}
            progress(json.dumps(setting))
            weighted = dataclasses.replace(option, lm_weight=weight, insertion_bonus=bonus)
            decoder = dataclasses.replace(choosing, languages=(*kept, weighted))
            texts, ms_per_line = _decode_all(decoder, batches, decode_text)
            figures = _cer_ms(texts, references, sets, ms_per_line)
            results.append(LanguageTuningResult(setting, *figures, lines_in_language=in_language))
    return sorted(results, key=lambda r: r.cer)


def with_words(
    decoder: CTCDecoder, language: str | None, words: WordLexicon | None, penalty: float
) -> CTCDecoder:
    """``decoder`` checking its readings of ``language`` (None: the main one) against
    ``words`` at ``penalty`` (none at a penalty of 0); a ValueError for a language it does
    not read."""
    used = words if penalty > 0 else None
    if language is None:
        return dataclasses.replace(decoder, words=used, word_penalty=penalty)
    if language not in {option.language for option in decoder.languages}:
        raise ValueError(f"the model's decoding reads no language {language!r}")
    return dataclasses.replace(
        decoder,
        languages=tuple(
            dataclasses.replace(option, words=used, word_penalty=penalty)
            if option.language == language
            else option
            for option in decoder.languages
        ),
    )


def tune_words(
    batches: Sequence[tuple[Any, Any]],
    references: Sequence[str],
    decode_text: Callable[[list[int]], str],
    decoder: CTCDecoder,
    language: str | None,
    words: WordLexicon,
    penalties: Sequence[float],
    progress: Callable[[str], None] = lambda _: None,
    sets: Sequence[str] = (),
) -> list[TuningResult]:
    """CER of ``decoder`` checking its readings of ``language`` against ``words`` at each
    penalty (0: without the list), on the same recorded log-probabilities; best first, the
    smaller of equal penalties first."""
    results = []
    for penalty in penalties:
        progress(f"word_penalty {penalty:g}")
        texts, ms = _decode_all(with_words(decoder, language, words, penalty), batches, decode_text)
        results.append(
            TuningResult({"word_penalty": penalty}, *_cer_ms(texts, references, sets, ms))
        )
    return sorted(results, key=lambda r: (r.cer, r.setting["word_penalty"]))


def best_within(
    results: Sequence[TuningResult], max_ms: float | None, cer_tolerance: float = 0.0
) -> TuningResult:
    """The lowest-CER result that decodes within ``max_ms`` per line, or if none does, the
    fastest (greedy). With ``cer_tolerance`` (a CER, 0.0005 = 0.05 points), the fastest of
    the affordable results that read within that of the lowest CER.

    >>> results = [TuningResult({"a": 1}, 0.2281, 2.8), TuningResult({"b": 1}, 0.2282, 2.3)]
    >>> best_within(results, None).setting, best_within(results, None, 0.0005).setting
    ({'a': 1}, {'b': 1})
    """
    affordable = [r for r in results if max_ms is None or r.ms_per_line <= max_ms]
    if not affordable:
        return min(results, key=lambda r: r.ms_per_line)
    lowest = min(r.cer for r in affordable)
    return min(
        (r for r in affordable if r.cer <= lowest + cer_tolerance),
        key=lambda r: (network_passes(r), r.ms_per_line, r.cer),
    )


def network_passes(result: TuningResult) -> int:
    """How many times a setting runs the network over a line: once, or once per shift.

    A tie goes to fewer passes before it goes to the faster clock: a clock on a busy machine
    can make three passes look as fast as one, the count cannot.

    >>> network_passes(TuningResult({"shifts": [0, -2, 2]}, 0.1, 9.0))
    3
    """
    return len(result.setting.get("shifts", ONE_PASS))


def measure_shifts(
    recognizer: Any,
    images: Sequence[Path],
    references: Sequence[str],
    candidates: Sequence[tuple[int, ...]],
    progress: Callable[[str], None] = lambda _: None,
    sets: Sequence[str] = (),
) -> list[TuningResult]:
    """CER and milliseconds per line (preprocessing, network and decoding) of ``recognizer``
    reading ``images`` with each candidate's shifts and its own decoding; best first, the
    faster of equal ones first; ``sets`` as :func:`tune`'s. The recognizer keeps the shifts
    it had."""
    kept, results = recognizer.shifts, []
    try:
        if images:  # a warm-up read: the first candidate is not timed with the cold start
            recognizer.predict([str(images[0])], kind="line")
        for shifts in candidates:
            progress(f"shifts {list(shifts)}")
            recognizer.shifts = shifts
            start, texts = time.perf_counter(), []
            for first in range(0, len(images), SHIFT_BATCH):
                chunk = [str(path) for path in images[first : first + SHIFT_BATCH]]
                texts += [p.text for p in recognizer.predict(chunk, kind="line")]
            ms = (time.perf_counter() - start) * 1000 / max(1, len(images))
            setting = {"shifts": list(shifts)}
            results.append(TuningResult(setting, *_cer_ms(texts, references, sets, ms)))
    finally:
        recognizer.shifts = kept
    return sorted(results, key=lambda r: (r.cer, network_passes(r), r.ms_per_line))


def attach(
    model_dir: Path,
    lm_path: Path | None,
    setting: dict[str, Any],
    results: Sequence[TuningResult] = (),
    tuned_on: str = "",
) -> StagedModel:
    """Write ``setting`` as the staged model's ``decoding`` section (copying the LM in) and
    the tuning table as the model card's Decoding section. A decoding that reads differently
    makes a new model version (:meth:`StagedModel.set_decoding`), which the card's header
    then shows. Returns the model as written."""
    staged = StagedModel.load(model_dir)
    decoding = DecodingConfig.from_dict(setting).keeping_tunings_of(staged.decoding)
    staged = staged.set_decoding(decoding, lm_path if "lm_weight" in setting else None)
    if staged.card_path.is_file():
        rows = [(r.setting, r.cer, r.ms_per_line) for r in results]
        card = staged.card_path.read_text()
        written = (staged.decoding or DecodingConfig()).to_dict()
        card = with_decoding_section(card, written, rows, tuned_on, [r.per_set for r in results])
        staged.card_path.write_text(with_header(card, staged))
    return staged
