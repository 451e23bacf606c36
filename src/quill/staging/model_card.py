"""The model card shipped in every staged model: what it was trained on, how well it reads,
what it is for and where it fails. Rendered from the model's metadata
(:class:`~quill.staged_model.StagedModel`, ``quill-model.json``) so the two never disagree.

A card is a header (name, version, family) and ``## `` sections, then the maintained notes
appended at staging. A step that changes the model after staging rewrites the parts it
changed through this module: :func:`with_header` (a new version), :func:`with_decoding_section`
(``quill lm tune --write``), :func:`with_languages_section` (``quill lm language --write``),
:func:`with_metrics_section`, :func:`with_runtime_sections` (``quill model quantize``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quill.model_files import METADATA_FILE
from quill.staged_model import StagedModel


def intended_use(characters: str) -> str:
    """What the model is for; the languages follow its character set (an ASCII model spells
    English only, a Latin one the Western European languages it was trained on)."""
    languages = (
        "English handwriting"
        if characters.isascii()
        else "handwriting in Western European Latin script (the languages of its training "
        "data below)"
    )
    return (
        f"Transcribing {languages}, cursive or print, in photos and scans of single lines or "
        "of simple paragraphs with one column of horizontal lines: letters, notes, forms "
        "filled in by hand. Runs on a CPU; confidence is a geometric mean of per-frame "
        "probabilities in [0, 1] and is meant for ranking and flagging, not as a calibrated "
        "probability."
    )


LAYOUT_LIMIT = (
    "**Layouts**: a page is cut into lines by a segmenter that traces them along the ink "
    "(docs/models.md): it finds the paper on a desk, turns pages read sideways or upside "
    "down, reads columns left to right and margin notes last, but curved or diagonal "
    "lines, tables and text mixed with drawings are read out of order or missed, and on "
    "the four Hooker pages with ground truth 96% of the lines are found (the paragraph "
    "model that would read a page whole has no trained weights)."
)


def limits(characters: str) -> list[str]:
    """Where the model fails, as the card's bullet points, for a model that can output
    ``characters``.

    >>> [item.split("**")[1] for item in limits("ab")]
    ['Printed text', 'Layouts', 'Character set', 'Languages', 'Writers']
    >>> "accents" in limits("ab")[2], "accents" in limits("aé")[2]
    (True, False)
    """
    if characters.isascii():
        character_set = (
            "**Character set**: only the characters listed below can ever be output; anything "
            "else (accents, other scripts, symbols) is read as the closest known character or "
            "dropped."
        )
        languages = (
            "**Languages**: trained on English text; other Latin-script languages lose the "
            "help of learned spelling."
        )
    else:
        character_set = (
            "**Character set**: Western European Latin script, the characters listed below "
            "(accented letters, ç, œ, ß, ſ); other scripts and symbols are read as the closest "
            "known character or dropped."
        )
        languages = (
            "**Languages**: the spelling it learned (its network and its language model) is "
            "that of its training texts; other languages are read by the shapes of their "
            "letters alone, less accurately."
        )
    return [
        "**Printed text** is outside the training distribution: typed or typeset text is "
        "often read, but less accurately than a dedicated OCR engine would.",
        LAYOUT_LIMIT,
        character_set,
        languages,
        "**Writers**: accuracy varies with handwriting style; measure on your own writers "
        "before relying on it, and use the flag buttons to collect the failures.",
    ]


#: What the model card calls a model metric: error rates and losses on a split, per dataset
#: too (``val_cer``, ``test_wer``, ``val_cer_hooker``, ``best_val_cer_select``,
#: ``train_loss_epoch``). The run's other metrics describe the training process or the
#: machine (``system/*`` disk, network and memory, ``grad_norm/*``, ``lr``, throughput).
MODEL_METRIC = re.compile(r"(best_)?(train|val|test)_(cer|wer|loss)(_\w+)?")


def model_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The model metrics among a run's metrics.

    >>> sorted(model_metrics({"val_cer": 0.1, "test_wer": 0.2, "system/disk_usage_megabytes": 9,
    ...                       "grad_norm/total": 1.0, "lr": 0.001, "val_cer_hooker": 0.3}))
    ['test_wer', 'val_cer', 'val_cer_hooker']
    """
    return {k: v for k, v in metrics.items() if MODEL_METRIC.fullmatch(k)}


def _metrics_table(metrics: dict[str, float]) -> str:
    if not metrics:
        return "_No run metrics recorded (staged from a bare checkpoint file)._"
    shown = model_metrics(metrics)
    if not shown:
        return "_The run recorded no error rates or losses._"
    rows = "\n".join(f"| `{k}` | {v:.4g} |" for k, v in sorted(shown.items()))
    left_out = len(metrics) - len(shown)
    note = (
        f"\n\n{left_out} other metric(s) of the training process and the machine (system "
        "usage, gradient norms, learning rate, throughput) are in the training run."
        if left_out
        else ""
    )
    return "| metric | value |\n|---|---|\n" + rows + note


METRICS_HEADING = "## Metrics (from the training run)"


def with_metrics_section(card: str, metrics: dict[str, float]) -> str:
    """``card`` (a rendered model card, maybe edited since) with its Metrics section
    rewritten from ``metrics``, the rest untouched: how a card staged before the section
    kept model metrics only is brought up to date."""
    start = card.index(METRICS_HEADING)
    end = card.find("\n## ", start + len(METRICS_HEADING))
    end = len(card) if end < 0 else end + 1
    return f"{card[:start]}{METRICS_HEADING}\n\n{_metrics_table(metrics)}\n\n{card[end:]}"


def _parity_table(parity: dict[str, Any]) -> str:
    rows = [f"| eager PyTorch | reference | - | {parity['eager_median_ms']:.1f} |"]
    for name, b in parity["backends"].items():
        against = f" to {b['reference']}'s" if b.get("reference") else ""
        drift = f" (CER {b['drift_cer']:.2%} against them)" if b.get("drift_cer") else ""
        rows.append(
            f"| {name} | {b['identical']}/{b['total']} identical{against}{drift} | "
            f"{b['max_confidence_diff']:.2e} | {b['median_ms']:.1f} |"
        )
    return (
        "| runtime | decoded text vs eager | max confidence difference | batch time (ms) |\n"
        "|---|---|---|---|\n" + "\n".join(rows)
    )


PARITY_HEADING = "## Export parity"


def parity_section(model: StagedModel) -> str:
    """The Export parity section: how each runtime read the staging samples."""
    parity = model.parity or {"samples": 0, "eager_median_ms": 0.0, "backends": {}}
    check = parity["backends"].get("onnx-int8")
    int8 = (
        "\n\nThe int8 copy (`quill model quantize`) reads almost, not exactly, as the float\n"
        "graph does. Its row counts the samples it was checked on (read as a batch and one by\n"
        f"one), against `onnx`'s readings of them; above {check['max_drift_cer'] * 100:g}% CER "
        "it is refused."
        if check
        else ""
    )
    return f"""{PARITY_HEADING} on {parity["samples"]} fixed samples

Each export decoded the sample set as one padded batch and image by image; staging fails
unless every text matches eager PyTorch.{int8}

{_parity_table(parity)}
"""


def files_section(model: StagedModel) -> str:
    """The Files section: what the folder holds and how to load it."""
    files = ", ".join(f"`{f}`" for b in model.backends.values() for f in b.files)
    return f"""{FILES_HEADING}

{files}, `{METADATA_FILE}`.
Load with `Recognizer.from_path(...)`, serve with `quill serve --model <dir>`.
"""


def with_runtime_sections(card: str, model: StagedModel) -> str:
    """``card`` with its header, Export parity and Files sections rendered again from
    ``model``: how a runtime added after staging (``quill model quantize``) reaches it."""
    for heading, section in (
        (PARITY_HEADING, parity_section(model)),
        (FILES_HEADING, files_section(model)),
    ):
        start = card.find(f"\n{heading}") + 1
        if start > 0:
            end = card.find("\n## ", start)
            card = card[:start] + section + (card[end:] if end >= 0 else "")
    return with_header(card, model)


def _initialised_from(lineage: Any) -> str:
    started = lineage.initialised_from
    if started:
        return f"`{started}` (fine-tuned)"
    return "random initialisation" if lineage.run_id else "not recorded"


def _as_model(model: StagedModel | Mapping[str, Any]) -> StagedModel:
    """A card is rendered from a :class:`StagedModel` or the content of its JSON."""
    if isinstance(model, StagedModel):
        return model
    return StagedModel.from_dict(Path("."), model)


def _header(model: StagedModel) -> str:
    """The card's title and its version line (up to the first section)."""
    return f"""# Model card: {model.name}

Version `{model.version}` · family `{model.family}` · architecture `{model.model_name}`
({model.parameters:,} parameters) · staged {model.created_at}
with quill {model.quill_version}.
"""


def with_header(card: str, model: StagedModel | Mapping[str, Any]) -> str:
    """``card`` with its header (everything before the first section) rendered again from
    ``model``: how a new version reaches a card that was edited or tuned since staging."""
    start = card.find("\n## ")
    rest = card[start + 1 :] if start >= 0 else ""
    return f"{_header(_as_model(model))}\n{rest}"


DECODING_HEADING = "## Decoding"
LANGUAGES_HEADING = "## Other languages"
SHIFTS_HEADING = "## Shifts"
WORDS_HEADING = "## Word lists"
HELD_OUT_HEADING = "## The writer's held-out lines"
FILES_HEADING = "## Files"


#: Each row's CER on each data folder of a tuning that joined several (folder -> CER), in
#: the order of the rows; empty mappings (or none) add no columns.
PerSet = Sequence[Mapping[str, float]]


def _per_set_columns(per_set: PerSet, count: int) -> tuple[str, str, list[str]]:
    """A tuning table's CER columns per data folder, after the pooled CER: the heading's
    cells, the rule's, and each of ``count`` rows' (all empty for one folder). The card
    keeps what the choice traded between folders, e.g. one writer's letters for strangers'.

    >>> _per_set_columns([{"data/hooker": 0.2, "data/copiste": 0.1}], 1)
    (' CER hooker | CER copiste |', '---|---|', [' 0.2000 | 0.1000 |'])
    """
    names = list(per_set[0]) if per_set and per_set[0] else []
    if not names:
        return "", "", [""] * count
    heading = "".join(f" CER {Path(name).name} |" for name in names)
    cells = ["".join(f" {row.get(name, float('nan')):.4f} |" for name in names) for row in per_set]
    return heading, "---|" * len(names), cells


def decoding_section(
    decoding: Mapping[str, Any],
    rows: Sequence[tuple[Mapping[str, Any], float, float]],
    tuned_on: str,
    per_set: PerSet = (),
) -> str:
    """The Decoding section: the setting in use and what ``quill lm tune`` measured
    (``rows`` of (setting, CER, ms per line), best first; :data:`PerSet`) on ``tuned_on``."""
    settings = [(f"`{json.dumps(dict(setting))}`", cer, ms) for setting, cer, ms in rows]
    lines = [
        DECODING_HEADING,
        "",
        f"`{json.dumps(dict(decoding))}`, chosen by `quill lm tune` on "
        f"{tuned_on or 'validation data'}:",
        "",
        *_measured_table("decoding", settings, per_set),
    ]
    return "\n".join(lines) + "\n"


def with_decoding_section(
    card: str,
    decoding: Mapping[str, Any],
    rows: Sequence[tuple[Mapping[str, Any], float, float]],
    tuned_on: str,
    per_set: PerSet = (),
) -> str:
    """The card with its Decoding section (re)written, placed before the Files section."""
    section = decoding_section(decoding, rows, tuned_on, per_set)
    return _with_section(card, DECODING_HEADING, section)


def languages_section(
    decoding: Mapping[str, Any],
    rows: Sequence[tuple[Mapping[str, Any], float, float, int]],
    language: str,
    tuned_on: str,
    per_set: PerSet = (),
) -> str:
    """The Other languages section: the languages a decoding reads besides its main one, and
    what ``quill lm language`` measured for ``language`` (``rows`` of (setting, CER, ms per
    line, lines read in the language), best first; an empty setting is the model as it was;
    :data:`PerSet`) on ``tuned_on``."""
    heading, rule, cells = _per_set_columns(per_set, len(rows))
    lines = [
        LANGUAGES_HEADING,
        "",
        "Beam search decodes a line with another language's LM when that language's "
        "identifier finds the line's greedy reading more likely than the main language's "
        f"identifier (`{decoding.get('identifier')}`) does, by `identify_margin` "
        f"({decoding.get('identify_margin')}) nats per character:",
        "",
        "| language | LM | identifier | LM weight | insertion bonus |",
        "|---|---|---|---|---|",
        *(
            f"| {item['language']} | `{item['lm']}` | `{item['identifier']}` | "
            f"{item['lm_weight']} | {item['insertion_bonus']} |"
            for item in decoding.get("languages") or []
        ),
        "",
        f"`{language}` was chosen by `quill lm language` on {tuned_on or 'validation data'}:",
        "",
        f"| {language} decoding | CER |{heading} ms per line | lines read as {language} |",
        f"|---|---|{rule}---|---|",
        *(
            f"| {f'`{json.dumps(dict(setting))}`' if setting else 'the model as it was'} | "
            f"{cer:.4f} |{more} {ms:.2f} | {count} |"
            for (setting, cer, ms, count), more in zip(rows, cells, strict=True)
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def with_languages_section(card: str, section: str) -> str:
    """The card with its Other languages section (re)written, placed before Files."""
    return _with_section(card, LANGUAGES_HEADING, section)


def with_shifts_section(
    card: str,
    shifts: Sequence[int],
    rows: Sequence[tuple[Sequence[int], float, float]],
    tuned_on: str,
    per_set: PerSet = (),
) -> str:
    """The card with its Shifts section (re)written: the vertical shifts the network's outputs
    are averaged over, and what ``quill lm shifts`` measured (``rows`` of (shifts, CER, ms per
    line), best first; :data:`PerSet`) on ``tuned_on``."""
    lines = [
        SHIFTS_HEADING,
        "",
        f"Each line is read by the network shifted by {', '.join(map(str, shifts))} pixels "
        "vertically, the per-frame probabilities averaged before decoding "
        "(`quill.inference.shifts`).",
        f"Chosen by `quill lm shifts` on {tuned_on or 'validation data'}:",
        "",
        *_measured_table(
            "shifts", [(", ".join(map(str, row)), cer, ms) for row, cer, ms in rows], per_set
        ),
    ]
    return _with_section(card, SHIFTS_HEADING, "\n".join(lines) + "\n")


def with_words_section(
    card: str,
    decoding: Mapping[str, Any],
    language: str | None,
    rows: Sequence[tuple[float, float, float]],
    tuned_on: str,
    per_set: PerSet = (),
) -> str:
    """The card with its Word lists section (re)written: the word list each language's
    readings are checked against (:mod:`quill.models.lexicon`), and what ``quill lm words``
    measured for ``language`` (None: the main one) (``rows`` of (penalty, CER, ms per line),
    best first; :data:`PerSet`) on ``tuned_on``."""
    lists = [("main", decoding.get("words"), decoding.get("word_penalty"))]
    lists += [
        (item["language"], item.get("words"), item.get("word_penalty"))
        for item in decoding.get("languages") or []
    ]
    lines = [
        WORDS_HEADING,
        "",
        "Beam search ranks a reading lower by `word_penalty` for each of its words missing "
        "from the language's word list, as soon as the word ends (`quill.models.lexicon`).",
        "",
        "| language | word list | word penalty |",
        "|---|---|---|",
        *(
            f"| {name} | `{words}` | {penalty:g} |"
            for name, words, penalty in lists
            if words is not None
        ),
        "",
        f"The {language or 'main'} language's penalty was chosen by `quill lm words` on "
        f"{tuned_on or 'validation data'} (0: no word list):",
        "",
        *_measured_table("word penalty", [(f"{p:g}", cer, ms) for p, cer, ms in rows], per_set),
    ]
    return _with_section(card, WORDS_HEADING, "\n".join(lines) + "\n")


def _measured_table(
    label: str, rows: Sequence[tuple[str, float, float]], per_set: PerSet
) -> list[str]:
    """A tuning's table: each setting (as text), its CER, its CER on each data folder
    (:data:`PerSet`) and its milliseconds per line, best first."""
    heading, rule, cells = _per_set_columns(per_set, len(rows))
    return [
        f"| {label} | CER |{heading} ms per line |",
        f"|---|---|{rule}---|",
        *(
            f"| {setting} | {cer:.4f} |{more} {ms:.2f} |"
            for (setting, cer, ms), more in zip(rows, cells, strict=True)
        ),
        "",
    ]


def with_held_out_section(card: str, lines: int, before: float, after: float, runtime: str) -> str:
    """The card of a model adapted to one writer with what ``quill adapt --hold-out`` read:
    the writer's last ``lines`` lines, kept out of the adaptation, read by the base model
    (CER ``before``) and the adapted one (``after``), on ``runtime``. It goes last, after
    the notes that say what the model was adapted from."""
    section = (
        f"{HELD_OUT_HEADING}\n\n{lines} of the writer's lines were kept out of the "
        f"adaptation and read by both models ({runtime}): CER {before:.1%} with the base "
        f"model, {after:.1%} adapted. So few lines say little on their own: a writer's own "
        "lines vary, and so do its gains (docs/training.md).\n"
    )
    return _with_section(card, HELD_OUT_HEADING, section, before=None)


def _with_section(card: str, heading: str, section: str, before: str | None = FILES_HEADING) -> str:
    r"""``card`` with the section under ``heading`` replaced by ``section``, or ``section``
    put before the ``before`` section (at the end when there is none, or ``before`` is
    None).

    >>> _with_section("# M\n\n## Files\n\nx\n", "## New", "## New\n\ny\n\n")
    '# M\n\n## New\n\ny\n\n## Files\n\nx\n'
    >>> _with_section("# M\n\n## Files\n\nx\n", "## New", "## New\n\ny\n", before=None)
    '# M\n\n## Files\n\nx\n\n## New\n\ny\n'
    """
    start = card.find(heading + "\n")
    if start >= 0:
        end = card.find("\n## ", start + 1)
        return card[:start] + section + (card[end + 1 :] if end >= 0 else "")
    anchor = card.find(before + "\n") if before else -1
    return card[:anchor] + section + card[anchor:] if anchor >= 0 else card + "\n" + section


def render_model_card(model: StagedModel | Mapping[str, Any], notes: str = "") -> str:
    """Markdown model card for a staged model (or the content of its ``quill-model.json``).

    ``notes`` is maintained Markdown appended at the end (data attribution, the commands that
    produced the model, its honest status): what metadata cannot say, kept in a file in the
    repository so that staging the model again does not lose it.
    """
    model = _as_model(model)
    lineage = model.lineage
    characters = model.tokenizer.characters
    shown = characters.replace("\n", "\\n")
    limit_list = "\n".join(f"- {item}" for item in limits(characters))
    config = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(model.model_config.items()))
    preprocess = "\n".join(
        f"| `{k}` | `{v}` |" for k, v in sorted(model.preprocess.to_dict().items())
    )
    checkpoint_hash = (lineage.checkpoint_sha256 or "")[:16]
    training_data = model.training_data or "not recorded"
    return f"""{_header(model)}
## Intended use

{intended_use(characters)}

## Limits

{limit_list}

## Training data and lineage

| | |
|---|---|
| dataset version | `{lineage.dataset_version or "unknown"}` |
| training run | `{lineage.run_id or "none (staged from a file)"}` |
| checkpoint | `{lineage.checkpoint}` (sha256 `{checkpoint_hash}…`) |
| data in the run config | `{training_data}` |
| started from the weights of | {_initialised_from(lineage)} |

{METRICS_HEADING}

{_metrics_table(model.metrics)}

{parity_section(model)}
## Character set ({len(characters)} characters)

`{shown}`

## Architecture

| field | value |
|---|---|
{config}

## Input normalisation

| field | value |
|---|---|
{preprocess}

{files_section(model)}""" + (f"\n{notes.strip()}\n" if notes.strip() else "")
