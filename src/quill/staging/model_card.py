"""The model card shipped in every staged model: what it was trained on, how well it reads,
what it is for and where it fails. Rendered from ``quill-model.json`` so the two never
disagree."""

from __future__ import annotations

import re
from typing import Any

INTENDED_USE = (
    "Transcribing English handwriting (cursive or print) in photos and scans of single lines "
    "or of simple paragraphs with one column of horizontal lines: letters, notes, forms "
    "filled in by hand. Runs on a CPU; confidence is a geometric mean of per-frame "
    "probabilities in [0, 1] and is meant for ranking and flagging, not as a calibrated "
    "probability."
)

LIMITS = (
    "**Printed text** is outside the training distribution: typed or typeset text is often "
    "read, but less accurately than a dedicated OCR engine would.",
    "**Layouts**: a paragraph is split into lines by horizontal ink projections, so multiple "
    "columns, tables, marginal notes, strongly curved or rotated lines (beyond a few "
    "degrees) and text mixed with drawings are read out of order or missed.",
    "**Character set**: only the characters listed below can ever be output; anything else "
    "(accents, other scripts, symbols) is read as the closest known character or dropped.",
    "**Languages**: trained on English text; other Latin-script languages lose the help of "
    "learned spelling.",
    "**Writers**: accuracy varies with handwriting style; measure on your own writers before "
    "relying on it, and use the flag buttons to collect the failures.",
)


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
        rows.append(
            f"| {name} | {b['identical']}/{b['total']} identical | "
            f"{b['max_confidence_diff']:.2e} | {b['median_ms']:.1f} |"
        )
    return (
        "| runtime | decoded text vs eager | max confidence difference | batch time (ms) |\n"
        "|---|---|---|---|\n" + "\n".join(rows)
    )


def _initialised_from(lineage: dict[str, Any]) -> str:
    started = lineage.get("initialised_from")
    if started:
        return f"`{started}` (fine-tuned)"
    return "random initialisation" if lineage.get("run_id") else "not recorded"


def render_model_card(meta: dict[str, Any], notes: str = "") -> str:
    """Markdown model card for a staged model's metadata (``quill-model.json`` content).

    ``notes`` is maintained Markdown appended at the end (data attribution, the commands that
    produced the model, its honest status): what metadata cannot say, kept in a file in the
    repository so that staging the model again does not lose it.
    """
    lineage = meta["lineage"]
    characters = meta["tokenizer"]["characters"]
    shown = characters.replace("\n", "\\n")
    limits = "\n".join(f"- {item}" for item in LIMITS)
    config = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(meta["model_config"].items()))
    preprocess = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(meta["preprocess"].items()))
    checkpoint_hash = (lineage.get("checkpoint_sha256") or "")[:16]
    training_data = meta.get("training_data") or "not recorded"
    return f"""# Model card: {meta["name"]}

Version `{meta["version"]}` · family `{meta["family"]}` · architecture `{meta["model_name"]}`
({meta["parameters"]:,} parameters) · staged {meta["created_at"]}
with quill {meta["quill_version"]}.

## Intended use

{INTENDED_USE}

## Limits

{limits}

## Training data and lineage

| | |
|---|---|
| dataset version | `{lineage.get("dataset_version") or "unknown"}` |
| training run | `{lineage.get("run_id") or "none (staged from a file)"}` |
| checkpoint | `{lineage.get("checkpoint")}` (sha256 `{checkpoint_hash}…`) |
| data in the run config | `{training_data}` |
| started from the weights of | {_initialised_from(lineage)} |

{METRICS_HEADING}

{_metrics_table(meta.get("metrics") or {})}

## Export parity on {meta["parity"]["samples"]} fixed samples

Each export decoded the sample set as one padded batch and image by image; staging fails
unless every text matches eager PyTorch.

{_parity_table(meta["parity"])}

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

## Files

{", ".join(f"`{f}`" for b in meta["backends"].values() for f in b["files"])}, `quill-model.json`.
Load with `Recognizer.from_path(...)`, serve with `quill serve --model <dir>`.
""" + (f"\n{notes.strip()}\n" if notes.strip() else "")
