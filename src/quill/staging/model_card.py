"""The model card shipped in every staged model: what it was trained on, how well it reads,
what it is for and where it fails. Rendered from ``quill-model.json`` so the two never
disagree."""

from __future__ import annotations

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


def _metrics_table(metrics: dict[str, float]) -> str:
    if not metrics:
        return "_No run metrics recorded (staged from a bare checkpoint file)._"
    rows = "\n".join(f"| `{k}` | {v:.4g} |" for k, v in sorted(metrics.items()))
    return "| metric | value |\n|---|---|\n" + rows


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

## Metrics (from the training run)

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
