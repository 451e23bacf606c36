"""``quill lm fit|tune|shifts|language``: a character language model for CTC beam search.

``quill lm fit`` counts the train split of any number of datasets (Quill dataset folders, or
folders with ``labels.tsv`` split as ``quill data import folder`` splits them), text files and
Austen's novels, under the character set of a staged model (``--model``) or a named one
(``--vocabulary latin``), so one LM can cover English and French. Characters outside that set
are reported with their counts, never dropped silently. ``quill lm language`` adds another
language's LM, used for the lines that read as that language. The word list commands
(``quill lm wordlist|words``) are :mod:`quill.inference.words_cli`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from quill.errors import check_output, fail
from quill.staged_model import ModelLoadError, StagedModel

if TYPE_CHECKING:
    from quill.data.manifest import Split
    from quill.vocab import Tokenizer

#: What ``quill lm language --language`` accepts: it names the files copied into the model.
LANGUAGE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

#: Options of the commands that tune on a dataset's lines (``tune``, ``language``).
TuningSplit = Annotated[str, typer.Option(help="Split to tune on (never tune on test).")]
LinesLimit = Annotated[
    int, typer.Option(min=0, help="Use at most this many lines of each dataset (0: all).")
]
MaxMs = Annotated[
    float | None,
    typer.Option(
        help="Choose the best setting that reads a line within this many milliseconds "
        "(as measured by this run) (default: no limit).",
        show_default=False,
    ),
]
CerTolerance = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Choose the fastest setting whose CER is within this many points (0.05 = "
        "0.05%) of the best one's, instead of the best one.",
    ),
]

lm_app = typer.Typer(
    help="Character language model for CTC beam search: fit it on text, tune it on val data.",
    no_args_is_help=True,
)


def _floats(
    text: str,
    option: str,
    wanted: str = "finite numbers",
    allowed: Callable[[float], bool] = math.isfinite,
) -> list[float]:
    """The comma-separated numbers of ``option``, at least one, each ``allowed`` (``wanted``
    says which in the error). Parsed before the model runs over the data, so a bad value
    costs nothing."""
    refused = typer.BadParameter(
        f"expected {wanted}, comma-separated, got {text!r}", param_hint=option
    )
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise refused from exc
    if not values or not all(allowed(value) for value in values):
        raise refused
    return values


def _lm_weights(text: str) -> list[float]:
    """LM weights: finite and not negative (a negative weight would favour what the LM finds
    unlikely; 0 is beam search that ignores the LM)."""
    return _floats(
        text, "--weights", "numbers of at least 0", lambda w: math.isfinite(w) and w >= 0
    )


def _beam_widths(text: str) -> list[int]:
    widths = _floats(
        text,
        "--beam",
        "whole numbers of at least 2",
        lambda w: math.isfinite(w) and w >= 2 and w == int(w),
    )
    return [int(w) for w in widths]


def _prunes(text: str) -> list[float]:
    """Prune thresholds: per-frame log-probabilities, so below 0 (at 0 or above, no
    character could be tried and every line would read empty); -inf tries every class."""
    return _floats(text, "--prunes", "negative numbers", lambda p: p < 0)


def _rank_gaps(text: str) -> list[float | None]:
    """``none`` (the whole beam kept) or positive numbers, comma-separated."""
    refused = typer.BadParameter(
        f"rank gaps must be 'none' or positive numbers, got {text!r}", param_hint="--rank-gaps"
    )
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    try:
        gaps = [None if part == "none" else float(part) for part in parts]
    except ValueError as exc:
        raise refused from exc
    if not gaps or any(gap is not None and not gap > 0 for gap in gaps):
        raise refused
    return gaps


def split_texts(folder: Path, split: Split, tokenizer: Tokenizer) -> tuple[list[str], list[str]]:
    """The transcriptions of ``split`` in a Quill dataset folder (``manifest.jsonl``) or a
    folder with ``labels.tsv``, and why rows were left out (the latter only).

    A ``labels.tsv`` folder is read by the same reader as ``quill data import folder``, with
    its default split, so the LM counts exactly the train lines a model trained on. The reader
    is given a vocabulary that admits every character of the file: characters outside
    ``tokenizer`` then reach :meth:`CharNGramLM.fit`, which counts them for the report, rather
    than making the reader skip their whole lines.
    """
    from quill.data.manifest import MANIFEST_NAME, Manifest
    from quill.data.readers import READERS
    from quill.vocab import Tokenizer

    if (folder / MANIFEST_NAME).is_file():
        return [sample.text for sample in Manifest.load(folder).split(split)], []
    labels = folder if folder.is_file() else folder / "labels.tsv"
    if not labels.is_file():
        raise ValueError(f"{folder} is neither a Quill dataset (manifest.jsonl) nor has labels.tsv")
    raw = unicodedata.normalize("NFC", labels.read_text(encoding="utf-8-sig", errors="replace"))
    extra = "".join(sorted(set(raw) - set(tokenizer.characters) - {"\t"}))
    admitting = Tokenizer(characters=tokenizer.characters + extra)
    with tempfile.TemporaryDirectory(prefix="quill-lm-") as scratch:
        result = READERS["folder"](labels, Path(scratch), tokenizer=admitting)
        texts = [sample.text for sample in result.manifest.split(split)]
    skipped = [f"{item.where}: {item.reason}" for item in result.report.skipped]
    return texts, skipped


def _describe_unknown(unknown: Counter[str], vocabulary: str) -> str:
    """``12 characters outside the latin vocabulary (3 distinct) ...: 'ſ' ×9, ...``"""
    shown = ", ".join(f"{char!r} ×{count}" for char, count in unknown.most_common(12))
    more = f", and {len(unknown) - 12} more" if len(unknown) > 12 else ""
    return (
        f"{sum(unknown.values()):,} characters outside the {vocabulary} "
        f"({len(unknown)} distinct) were not counted, each ending its context: {shown}{more}"
    )


def _fit_tokenizer(model: Path | None, vocabulary: str | None) -> tuple[Tokenizer, str]:
    """The tokenizer an LM is fitted with and how to name it: a staged model's, or a named
    vocabulary's (ascii when neither is given)."""
    from quill.vocab import Tokenizer

    if model is not None and vocabulary is not None:
        raise typer.BadParameter("give --model or --vocabulary, not both", param_hint="--model")
    if model is None:
        name = vocabulary or "ascii"
        try:
            return Tokenizer.named(name), f"{name} vocabulary"
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--vocabulary") from exc
    try:
        tokenizer = StagedModel.load(model).tokenizer
    except ModelLoadError as exc:
        raise typer.BadParameter(
            f"{model} is not a staged model with a tokenizer ({exc})", param_hint="--model"
        ) from exc
    return tokenizer, f"vocabulary of {model}"


@lm_app.command("fit")
def fit(
    out: Annotated[Path, typer.Argument(help="Where to write the model (JSON, e.g. lm.json).")],
    text: Annotated[
        list[Path] | None, typer.Option(help="UTF-8 text file(s), one line per line of text.")
    ] = None,
    dataset: Annotated[
        list[Path] | None,
        typer.Option(
            help="Dataset folder(s), a Quill dataset (manifest.jsonl) or a folder with labels.tsv "
            "(split as `quill data import folder` splits it): their train split's transcriptions."
        ),
    ] = None,
    corpus: Annotated[
        bool, typer.Option(help="Also count Jane Austen's novels (the synthetic data's corpus).")
    ] = True,
    order: Annotated[
        int,
        typer.Option(
            min=1, max=12, help="Characters of context + 1 (6: lowest Hooker val perplexity)."
        ),
    ] = 6,
    evaluate: Annotated[
        list[Path] | None,
        typer.Option(
            help="Dataset folder(s) (as --dataset) whose val split's perplexity to report."
        ),
    ] = None,
    vocabulary: Annotated[
        str | None,
        typer.Option(
            help="Character set to fit with: ascii or latin (Western European) (default: ascii).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Fit with the character set of this staged model (instead of --vocabulary)."
        ),
    ] = None,
) -> None:
    """Count character n-grams and write the language model."""
    from rich.console import Console
    from rich.markup import escape

    from quill.data.synth.corpus import load_corpus
    from quill.models.language_model import CharNGramLM

    text, dataset, evaluate = text or [], dataset or [], evaluate or []
    console = Console(stderr=True, soft_wrap=True)
    missing = [str(p) for p in [*text, *dataset, *evaluate] if not p.exists()]
    if missing:
        raise fail(f"not found: {', '.join(missing)}")
    check_output(out, folder=False, option="OUT")
    if StagedModel.is_staged(out.parent):
        raise fail(
            f"{out} is in the staged model {out.parent}: a new LM there would change what the "
            "model reads under the same model version. Write it elsewhere, then stage a model "
            "with it (docs/models.md, 'More than one language')."
        )
    tokenizer, vocabulary_name = _fit_tokenizer(model, vocabulary)
    # read before the long count, so that a bad --evaluate folder fails before OUT is written
    held_out = {folder: _split_texts_or_exit(folder, "val", tokenizer)[0] for folder in evaluate}
    texts = [line for path in text for line in _text_lines(path)]
    for folder in dataset:
        lines, skipped = _split_texts_or_exit(folder, "train", tokenizer)
        console.print(f"{folder}: {len(lines):,} train lines")
        if skipped:
            console.print(
                f"[yellow]{folder}: {len(skipped)} rows not read[/], e.g. {escape(skipped[0])}"
            )
        texts += lines
    if corpus:
        texts += load_corpus().paragraphs
    texts = [line for line in texts if line.strip()]  # blank lines teach nothing
    if not texts:
        given = (
            "the --text and --dataset given hold no line"
            if (text or dataset)
            else "--no-corpus, and no --text or --dataset given"
        )
        raise fail(f"no text to fit: {given} (give --text, --dataset or keep --corpus)")
    with console.status(f"counting {order}-grams over {sum(map(len, texts)):,} characters"):
        lm = CharNGramLM.fit(texts, order=order, tokenizer=tokenizer)
        out.parent.mkdir(parents=True, exist_ok=True)
        lm.save(out)
    if lm.unknown_characters:
        console.print(
            f"[yellow]{escape(_describe_unknown(lm.unknown_characters, vocabulary_name))}[/]"
        )
    size = out.stat().st_size / 1e6
    characters = len(tokenizer.characters)
    console.print(
        f"wrote {out}: {len(lm.counts):,} contexts, {size:.1f} MB; the {vocabulary_name} "
        f"({characters} characters)"
    )
    for folder, val in held_out.items():
        console.print(f"perplexity on {folder} val ({len(val)} lines): {lm.perplexity(val):.2f}")


def _text_lines(path: Path) -> list[str]:
    """The lines of a ``--text`` file, which must be UTF-8: decoding anything else with
    replacement characters would fit the LM to noise (a binary file, another encoding)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise fail(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); give a UTF-8 file, one "
            "line of text per line"
        ) from exc
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from exc


def _split_texts_or_exit(
    folder: Path, split: Split, tokenizer: Tokenizer
) -> tuple[list[str], list[str]]:
    """:func:`split_texts`, or a clear error and exit code 2."""
    try:
        return split_texts(folder, split, tokenizer)
    except ValueError as exc:
        raise fail(str(exc)) from exc


@lm_app.command("tune")
def tune(
    model: Annotated[Path, typer.Argument(help="Staged CTC model directory.")],
    data: Annotated[
        list[Path],
        typer.Option(
            help="Dataset folder with a manifest (line samples); repeat to tune on several at "
            "once (e.g. one writer's pages and writer-split multi-writer sets)."
        ),
    ],
    lm: Annotated[
        Path | None, typer.Option(help="Language model from `quill lm fit` (none: beam only).")
    ] = None,
    split: TuningSplit = "val",
    weights: Annotated[str, typer.Option(help="LM weights to try.")] = "0.2,0.4,0.6,0.8,1.0",
    bonuses: Annotated[
        str, typer.Option(help="Per-character insertion bonuses to try.")
    ] = "0,0.5,1,2",
    beam: Annotated[str, typer.Option(help="Beam widths to try.")] = "8",
    prunes: Annotated[
        str,
        typer.Option(
            help="Per-frame log-probabilities at or below which a character is not tried, to try "
            "(higher is faster and may cost accuracy; -8 and -5 are worth measuring)."
        ),
    ] = "-12",
    rank_gaps: Annotated[
        str,
        typer.Option(
            help="Rank gaps to try: a prefix ranked more than this below the best one is dropped "
            "even when the beam has room ('none' keeps the whole beam; 10 is worth measuring)."
        ),
    ] = "none",
    max_ms: MaxMs = None,
    cer_tolerance: CerTolerance = 0.0,
    limit: LinesLimit = 0,
    write: Annotated[
        bool,
        typer.Option(help="Store the best setting in the model's decoding section (LM copied in)."),
    ] = False,
) -> None:
    """Compare greedy, beam and beam+LM decoding on one model run; optionally keep the best."""
    from rich.console import Console

    from quill.inference import decoding_tuning
    from quill.models.language_model import CharNGramLM

    # every option is checked before the model runs over the data, which takes minutes
    grid = (
        _lm_weights(weights),
        _floats(bonuses, "--bonuses"),
        _beam_widths(beam),
        _prunes(prunes),
        _rank_gaps(rank_gaps),
    )
    console = Console(stderr=True, soft_wrap=True)
    try:
        language = CharNGramLM.load(lm) if lm else None
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    recognizer, batches, texts, names, sets = _record(model, data, split, limit, console, "greedy")
    if language is not None:
        try:
            language.check_tokenizer(recognizer.tokenizer)
        except ValueError as exc:
            raise fail(str(exc)) from exc
    results = decoding_tuning.tune(
        batches,
        texts,
        recognizer.tokenizer.decode,
        language,
        *grid,
        progress=_trying(console),
        sets=sets,
    )
    print(f"{model} on {names} {split}: {len(texts)} lines, best first")
    _print_results(results, sets, "decoding", lambda result: json.dumps(result.setting))
    best = decoding_tuning.best_within(results, max_ms, cer_tolerance / 100)
    budget = f" within {max_ms:g} ms per line" if max_ms is not None else ""
    if cer_tolerance:
        budget += f", the fastest within {cer_tolerance:g} CER points of the best"
    print(f"best{budget}: {json.dumps(best.setting)}")
    if write:
        tuned_on = f"{len(texts)} {split} lines of `{names}`{budget}"
        staged = decoding_tuning.attach(model, lm, best.setting, results, tuned_on)
        console.print(
            f"wrote decoding {best.setting} to {staged.metadata_path}: version {staged.version}"
        )


def _trying(console: Any) -> Callable[[str], None]:
    """A tuner's progress callback: each setting it tries, dimmed on ``console``."""
    return lambda setting: console.print(f"trying {setting}", style="dim")


def _record(
    model: Path, data: list[Path], split: str, limit: int, console: Any, decoding: str | None
) -> tuple[Any, list[tuple[Any, Any]], list[str], str, list[str]]:
    """Load ``model`` (``decoding`` overriding its method, or None for its own decoding) and
    run it once over the ``split`` line samples of ``data``: (recognizer, recorded
    log-probabilities, reference texts, the folders' names joined by " + ", each line's
    folder). Fails with a clear message on a bad model, folder or split."""
    from rich.progress import Progress

    from quill.inference import decoding_tuning

    recognizer, paths, texts, names, sets = _tuning_lines(model, data, split, limit, decoding)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("running the model", total=len(paths))
        try:
            batches = decoding_tuning.record_log_probs(
                recognizer, paths, lambda: progress.advance(task)
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
    return recognizer, batches, texts, names, sets


def _tuning_lines(
    model: Path, data: list[Path], split: str, limit: int, decoding: str | None
) -> tuple[Any, list[Path], list[str], str, list[str]]:
    """Load ``model`` and list the ``split`` line samples of ``data``: (recognizer, image
    paths, reference texts, the folders' names joined by " + ", each line's folder)."""
    from quill.data.manifest import Manifest
    from quill.inference.recognizer import Recognizer

    try:
        recognizer = Recognizer.from_path(model, decoding=decoding)
        manifests = [Manifest.load(folder) for folder in data]
    except (ModelLoadError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    paths, texts, sets = [], [], []
    for folder, manifest in zip(data, manifests, strict=True):
        # An unknown split name reads no samples, refused just below.
        wanted = cast("Split", split)
        samples = [s for s in manifest.split(wanted) if s.kind == "line"][: limit or None]
        if not samples:
            raise fail(f"{folder} has no {split!r} line samples")
        paths += [manifest.path_of(s) for s in samples]
        texts += [s.text for s in samples]
        sets += [str(folder)] * len(samples)
    return recognizer, paths, texts, " + ".join(str(folder) for folder in data), sets


def _per_set_header(sets: list[str]) -> str:
    """The per-folder CER columns' heading (none for one folder), each named by its folder's
    last part: a tuning set that joins writers' sets shows what each setting does to each."""
    labels = list(dict.fromkeys(sets))
    return "".join(f" {Path(label).name[:10]:>10}" for label in labels) if len(labels) > 1 else ""


def _per_set_cells(result: Any) -> str:
    """A result's per-folder CERs, under :func:`_per_set_header`."""
    return "".join(f" {cer:10.4f}" for cer in result.per_set.values())


def _print_results(
    results: list[Any], sets: list[str], heading: str, setting: Callable[[Any], str]
) -> None:
    """A tuning's results on stdout, best first: CER, each folder's CER, milliseconds per
    line, and the setting as ``setting`` writes it under ``heading``."""
    print(f"{'CER':>8}{_per_set_header(sets)} {'ms/line':>8}  {heading}")
    for result in results:
        print(
            f"{result.cer:8.4f}{_per_set_cells(result)} {result.ms_per_line:8.2f}  "
            f"{setting(result)}"
        )


@lm_app.command("shifts")
def shifts(
    model: Annotated[Path, typer.Argument(help="Staged CTC model directory.")],
    data: Annotated[
        list[Path], typer.Option(help="Dataset folder with a manifest (line samples); repeat.")
    ],
    candidates: Annotated[
        list[str] | None,
        typer.Option(
            "--shifts",
            help="Vertical shifts in pixels to average the network over, comma-separated, "
            "e.g. 0,-2,2 (repeat to compare several; 0 alone is one pass) "
            "(default: 0 and 0,-2,2).",
            show_default=False,
        ),
    ] = None,
    split: TuningSplit = "val",
    max_ms: MaxMs = None,
    # every shift is one more pass of the network: a tie goes to the fewer passes
    cer_tolerance: CerTolerance = 0.05,
    limit: LinesLimit = 0,
    write: Annotated[
        bool, typer.Option(help="Store the best shifts in the model's decoding section.")
    ] = False,
) -> None:
    """Compare reading each line once with averaging the network over vertical shifts of it
    (test-time augmentation), each with the model's own decoding; optionally keep the best."""
    from rich.console import Console

    from quill.inference import decoding_tuning
    from quill.inference.shifts import ONE_PASS
    from quill.staged_model import DecodingConfig, check_shifts
    from quill.staging.model_card import with_header, with_shifts_section

    console = Console(stderr=True, soft_wrap=True)
    try:
        options = [check_shifts([int(v) for v in text.split(",")]) for text in candidates or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shifts") from exc
    recognizer, paths, texts, names, sets = _tuning_lines(model, data, split, limit, None)
    if recognizer.model.family != "ctc":
        raise fail(f"{model} is not a CTC model: shifts average a CTC network's outputs")
    results = decoding_tuning.measure_shifts(
        recognizer, paths, texts, options or [ONE_PASS, (0, -2, 2)], _trying(console), sets
    )
    print(f"{model} on {names} {split}: {len(texts)} lines, best first")
    _print_results(results, sets, "shifts", lambda result: str(result.setting["shifts"]))
    best = decoding_tuning.best_within(results, max_ms, cer_tolerance / 100)
    print(f"best: {best.setting['shifts']}")
    if write:
        staged = recognizer.model
        chosen = tuple(best.setting["shifts"])
        decoding = dataclasses.replace(
            staged.decoding or DecodingConfig(), shifts=None if chosen == ONE_PASS else chosen
        )
        staged = staged.set_decoding(decoding)
        if staged.card_path.is_file():
            rows = [(r.setting["shifts"], r.cer, r.ms_per_line) for r in results]
            tuned_on = (
                f"{len(texts)} {split} lines of `{names}`, the fastest within "
                f"{cer_tolerance:g} CER points of the best"
            )
            per_set = [r.per_set for r in results]
            card = with_shifts_section(
                staged.card_path.read_text(), chosen, rows, tuned_on, per_set
            )
            staged.card_path.write_text(with_header(card, staged))
        console.print(f"wrote shifts {list(chosen)} to {staged.metadata_path}: {staged.version}")


@lm_app.command("language")
def language(
    model: Annotated[
        Path, typer.Argument(help="Staged CTC model directory that beam-searches with an LM.")
    ],
    name: Annotated[str, typer.Option("--language", help="The language's name, e.g. fr.")],
    lm: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Its language model (`quill lm fit` on its texts alone).",
        ),
    ],
    identify: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A small LM of its texts alone that recognises its lines (`quill lm fit "
            "--order 4`).",
        ),
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            help="Dataset folders to tune on, of this language and of the model's main one "
            "(repeat), so that a line wrongly read as this language costs what it costs."
        ),
    ],
    identify_main: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A small LM of the main language's texts (order 4, like --identify) "
            "(default: the one the model has).",
            show_default=False,
        ),
    ] = None,
    split: TuningSplit = "val",
    weights: Annotated[str, typer.Option(help="Weights of its LM to try.")] = "0.3,0.5,0.8",
    bonuses: Annotated[str, typer.Option(help="Insertion bonuses to try.")] = "1,2",
    margins: Annotated[
        str,
        typer.Option(
            help="Identification margins to try: how much more likely per character (natural "
            "log) a line's greedy reading must be under --identify than under the main "
            "language's identifier to be decoded in this language."
        ),
    ] = "0.3,0.5,0.7",
    limit: LinesLimit = 0,
    write: Annotated[
        bool,
        typer.Option(help="Store the best setting in the model's decoding (LM files copied in)."),
    ] = False,
) -> None:
    """Let beam search read one more language with its own LM, each image (a line or a page)
    in the language its lines look like; tune its weights and the identification margin on
    val data, optionally keep the best (only if it beats the model's decoding as it is)."""
    from rich.console import Console

    from quill.inference import decoding_tuning
    from quill.models.decoding import CTCDecoder, LanguageOption
    from quill.models.language_model import CharNGramLM
    from quill.staged_model import DecodingConfig, LanguageDecoding
    from quill.staging.model_card import languages_section, with_header, with_languages_section

    if not LANGUAGE_NAME.fullmatch(name):
        raise typer.BadParameter(
            "a language's name is letters, digits, '-' or '_' (it names files)",
            param_hint="--language",
        )
    # every option is checked before the model runs over the data, which takes minutes
    grid = (_lm_weights(weights), _floats(bonuses, "--bonuses"), _floats(margins, "--margins"))
    console = Console(stderr=True, soft_wrap=True)
    recognizer, batches, texts, names, sets = _record(model, data, split, limit, console, None)
    main = recognizer.runtime.decoder
    if not isinstance(main, CTCDecoder) or main.method != "beam" or main.lm is None:
        raise fail(
            f"{model} does not beam-search with a language model: give it one first "
            "(quill lm tune --lm ... --write)"
        )
    staged = recognizer.model  # as loaded, its own decoding
    if identify_main is not None:
        main_identifier = identify_main
    elif staged.decoding is not None and staged.decoding.identifier is not None:
        main_identifier = model / staged.decoding.identifier
    else:
        raise fail(f"{model} has no identifier of its main language yet: give --identify-main")
    loaded = {}
    for path in (lm, identify, main_identifier):
        try:
            loaded[path] = CharNGramLM.load(path)
            loaded[path].check_tokenizer(recognizer.tokenizer)
        except (ValueError, FileNotFoundError) as exc:
            raise fail(f"{path}: {exc}") from exc
    option = LanguageOption(name, loaded[identify], loaded[lm], 0.0, 0.0)
    results = decoding_tuning.tune_language(
        batches,
        texts,
        recognizer.tokenizer.decode,
        main,
        loaded[main_identifier],
        option,
        *grid,
        progress=_trying(console),
        sets=sets,
    )
    print(f"{model} reading {name} too, on {names} {split}: {len(texts)} lines, best first")
    print(f"{'CER':>8}{_per_set_header(sets)} {'ms/line':>8} {'lines':>6}  {name} decoding")
    for result in results:
        setting = json.dumps(result.setting) if result.setting else "(the model as it is)"
        print(
            f"{result.cer:8.4f}{_per_set_cells(result)} {result.ms_per_line:8.2f} "
            f"{result.lines_in_language:6d}  {setting}"
        )
    best = results[0]
    if not best.setting:
        if any(other.language == name for other in main.languages):
            print(f"no setting tried reads better than the {name} the model reads now: kept")
        else:
            print(f"reading {name} with its own LM does not help here: nothing to keep")
        return
    print(f"best: {json.dumps(best.setting)}")
    if write:
        chosen = LanguageDecoding(
            name, lm.name, identify.name, best.setting["lm_weight"], best.setting["insertion_bonus"]
        )
        updated = staged.set_languages(
            main_identifier, best.setting["identify_margin"], [(chosen, lm, identify)]
        )
        if updated.card_path.is_file():
            rows = [(r.setting, r.cer, r.ms_per_line, r.lines_in_language) for r in results]
            tuned_on = f"{len(texts)} {split} lines of `{names}`"
            written = (updated.decoding or DecodingConfig()).to_dict()
            section = languages_section(written, rows, name, tuned_on, [r.per_set for r in results])
            card = with_languages_section(updated.card_path.read_text(), section)
            updated.card_path.write_text(with_header(card, updated))
        console.print(
            f"wrote {name} to the decoding of {updated.metadata_path}: version {updated.version}"
        )
