"""``quill evaluate --candidate A --current B``: a report card, and the promotion rule.

Both models read the same images in the same pass (batch by batch, interleaved, so machine
load hits them alike). The card has CER/WER of both on every evaluation set and slice,
latency, the 95% interval of each CER difference (a paired bootstrap over the samples'
groups: pages, writers; :mod:`quill.evaluation.bootstrap`), and a pass/fail verdict from
``configs/evaluation.yaml``: no overall regression
beyond a tolerance, no regression on a *protected* slice (say, the feedback set users
corrected, or light-on-dark images), and no large latency increase. ``quill model promote``
reads the card through :func:`check_promotion` (staging's gate,
:mod:`quill.staging.promotion`, re-exported here).

Scoring is :mod:`quill.evaluation`'s, the same as ``quill bench accuracy``'s: corpus CER/WER
of normalised texts (NFC, whitespace runs collapsed, blank lines dropped) over the whole
set and over each ``key=value`` slice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from quill import evaluation
from quill.data.manifest import Manifest, Sample
from quill.monitoring import projections as proj
from quill.monitoring.baseline import Predictor
from quill.monitoring.drift import polarity_label
from quill.preprocess import ImageError, load_image
from quill.staging.promotion import PromotionRefused as PromotionRefused
from quill.staging.promotion import check_promotion as check_promotion

DEFAULT_CONFIG = Path("configs/evaluation.yaml")
CHECKOUT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "evaluation.yaml"
SLICE_KEYS = ("dataset", "source", "kind", "polarity", "length")
CARD_FORMAT = 1
DEFAULT_RULES = {
    "max_cer_regression": 0.0,
    "max_wer_regression": 0.01,
    "protected_max_regression": 0.005,
    "max_latency_ratio": 1.5,
}


@dataclass
class EvalSet:
    name: str
    path: Path
    split: str = "test"


@dataclass
class EvaluationConfig:
    version: int | str = 1
    datasets: list[EvalSet] = field(default_factory=list)
    slices: list[str] = field(default_factory=lambda: list(SLICE_KEYS))
    min_slice_samples: int = 5
    rules: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RULES))
    protected: list[str] = field(default_factory=list)
    source: str = "built-in defaults"

    @classmethod
    def load(cls, path: str | Path | None = None) -> EvaluationConfig:
        if path is None:
            path = next((p for p in (DEFAULT_CONFIG, CHECKOUT_CONFIG) if p.is_file()), None)
            if path is None:
                return cls()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"evaluation config not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a readable YAML file: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        known = {"version", "datasets", "slices", "min_slice_samples", "rules", "protected"}
        if set(raw) - known:
            raise ValueError(f"{path}: unknown key(s) {sorted(set(raw) - known)}")
        unknown_rules = set(raw.get("rules") or {}) - set(DEFAULT_RULES)
        if unknown_rules:
            raise ValueError(f"{path}: unknown rule(s) {sorted(unknown_rules)}")
        bad_slices = set(raw.get("slices") or []) - set(SLICE_KEYS)
        if bad_slices:
            raise ValueError(f"{path}: unknown slice(s) {sorted(bad_slices)}; use {SLICE_KEYS}")
        datasets = []
        for number, item in enumerate(raw.get("datasets") or [], 1):
            if not isinstance(item, dict) or "path" not in item:
                raise ValueError(f"{path}: datasets[{number}] needs a path: {item!r}")
            item_path = Path(item["path"])
            datasets.append(
                EvalSet(item.get("name", item_path.name), item_path, item.get("split", "test"))
            )
        return cls(
            version=raw.get("version", 1),
            datasets=datasets,
            slices=list(raw.get("slices") or SLICE_KEYS),
            min_slice_samples=int(raw.get("min_slice_samples", 5)),
            rules={**DEFAULT_RULES, **(raw.get("rules") or {})},
            protected=list(raw.get("protected") or []),
            source=str(path),
        )


@dataclass
class Outcome:
    """One model's answer on one sample."""

    text: str
    latency_ms: float


@dataclass
class Item:
    """One evaluation sample with its slices and both models' outcomes."""

    label: str
    slices: dict[str, str]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    #: The unit the bootstrap resamples: the sample's group (its page, its writer).
    group: str = ""


def length_bucket(text: str) -> str:
    """
    >>> length_bucket("Kew"), length_bucket("Dear Sir, I thank you"), length_bucket("x" * 40)
    ('short', 'medium', 'long')
    """
    return "short" if len(text) < 10 else "medium" if len(text) < 40 else "long"


def run_models(
    models: dict[str, Predictor],
    sets: Sequence[tuple[EvalSet, Manifest]],
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Item], list[str]]:
    """Every model on every sample of every set (same images, same pass). Returns the
    items and notes on samples that could not be read."""
    items: list[Item] = []
    notes: list[str] = []
    for spec, manifest in sets:
        samples = [s for s in manifest if spec.split in ("all", s.split)]
        if not samples:
            notes.append(f"{spec.name}: no samples in split {spec.split!r}")
        for start in range(0, len(samples), batch_size):
            batch = _load(manifest, samples[start : start + batch_size], spec.name, notes)
            for key, model in models.items():
                begin = time.perf_counter()
                predictions = model.predict([image for _, image in batch], kind="auto")
                per_image = (time.perf_counter() - begin) * 1000 / max(len(batch), 1)
                for (item, _), prediction in zip(batch, predictions, strict=True):
                    timings = getattr(prediction, "timings", None) or {}
                    item.outcomes[key] = Outcome(prediction.text, timings.get("total", per_image))
            items += [item for item, _ in batch]
            if progress:
                progress(len(batch))
    return items, notes


def _load(manifest: Manifest, samples: list[Sample], name: str, notes: list[str]) -> list:
    loaded = []
    for sample in samples:
        try:
            image = load_image(manifest.path_of(sample))
        except (ImageError, OSError) as exc:
            notes.append(f"{name}: {sample.image}: {exc}")
            continue
        polarity = proj.polarity(proj.ProjectionInput("", image=image))
        slices = {
            "dataset": name,
            "source": sample.source,
            "kind": sample.kind,
            "polarity": polarity_label(polarity),
            "length": length_bucket(sample.text),
        }
        loaded.append((Item(sample.text, slices, group=sample.group or sample.image), image))
    return loaded


def _slice_rows(
    items: Sequence[Item], keys: Sequence[str], model: str
) -> list[evaluation.SliceScore]:
    """``model``'s score on all ``items``, then on every ``key=value`` slice of ``keys``
    (a slice holding every item included: a protected slice must be judged)."""
    scored = [evaluation.Item(i.label, i.outcomes[model].text, i.slices) for i in items]
    return evaluation.score_slices(scored, keys, repeat_whole=True)


def _item_edits(items: Sequence[Item], model: str) -> list[evaluation.ErrorCounts]:
    """Each item's character edits and reference characters for ``model``, of normalised
    texts as the card's CER counts them."""
    return [
        evaluation.ErrorCounts.of(
            [evaluation.normalise(item.outcomes[model].text)], [evaluation.normalise(item.label)]
        )
        for item in items
    ]


def _delta_interval(
    items: Sequence[Item],
    members: Sequence[int],
    edits: dict[str, list[evaluation.ErrorCounts]],
) -> list[float]:
    """95% interval of candidate - current CER on ``members``, resampling their groups."""
    low, high = evaluation.paired_interval(
        [edits["candidate"][i].char_edits for i in members],
        [edits["current"][i].char_edits for i in members],
        [edits["current"][i].chars for i in members],
        [items[i].group or str(i) for i in members],
    )
    return [round(low, 5), round(high, 5)]


def _scores(items: Sequence[Item], row: evaluation.SliceScore, model: str) -> dict[str, float]:
    """CER, WER and median latency of ``model`` on the members of ``row``."""
    latencies = [items[i].outcomes[model].latency_ms for i in row.members]
    latency = float(np.median(latencies)) if latencies else 0.0
    return {"cer": row.score.cer, "wer": row.score.wer, "latency_p50_ms": latency}


def report_card(
    items: Sequence[Item],
    config: EvaluationConfig,
    candidate: dict[str, Any],
    current: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The card as a JSON-able dict; ``candidate``/``current`` describe the two models."""
    if not items:
        raise ValueError("no evaluation samples could be read: " + "; ".join(notes))
    rules = config.rules
    whole, *candidate_rows = _slice_rows(items, config.slices, "candidate")
    whole_current, *current_rows = _slice_rows(items, config.slices, "current")
    edits = {model: _item_edits(items, model) for model in ("candidate", "current")}
    overall: dict[str, Any] = {
        "candidate": _scores(items, whole, "candidate"),
        "current": _scores(items, whole_current, "current"),
        "delta_cer_interval": _delta_interval(items, whole.members, edits),
        "groups": len({items[i].group for i in whole.members}),
    }
    slices: list[dict[str, Any]] = []
    pairs = sorted(zip(candidate_rows, current_rows, strict=True), key=lambda pair: pair[0].name)
    for candidate_row, current_row in pairs:
        name, n = candidate_row.name, len(candidate_row.members)
        cand = _scores(items, candidate_row, "candidate")
        cur = _scores(items, current_row, "current")
        judged = n >= config.min_slice_samples
        protected = name in config.protected
        regressed = (
            protected and judged and (cand["cer"] - cur["cer"] > rules["protected_max_regression"])
        )
        slices.append(
            {
                "slice": name,
                "n": n,
                "candidate": cand,
                "current": cur,
                "delta_cer": cand["cer"] - cur["cer"],
                "delta_cer_interval": _delta_interval(items, candidate_row.members, edits),
                "groups": len({items[i].group for i in candidate_row.members}),
                "protected": protected,
                "judged": judged,
                "regressed": regressed,
            }
        )
    c, b = overall["candidate"], overall["current"]
    latency_ratio = c["latency_p50_ms"] / b["latency_p50_ms"] if b["latency_p50_ms"] else 1.0
    checks = [
        _check(
            "max_cer_regression",
            c["cer"] - b["cer"] <= rules["max_cer_regression"],
            f"CER {c['cer']:.4f} vs {b['cer']:.4f} (allowed +{rules['max_cer_regression']:g})",
        ),
        _check(
            "max_wer_regression",
            c["wer"] - b["wer"] <= rules["max_wer_regression"],
            f"WER {c['wer']:.4f} vs {b['wer']:.4f} (allowed +{rules['max_wer_regression']:g})",
        ),
        _check(
            "max_latency_ratio",
            latency_ratio <= rules["max_latency_ratio"],
            f"latency p50 {c['latency_p50_ms']:.1f} ms vs {b['latency_p50_ms']:.1f} ms "
            f"(x{latency_ratio:.2f}, allowed x{rules['max_latency_ratio']:g})",
        ),
    ]
    for s in slices:
        if s["protected"]:
            checks.append(
                _check(
                    f"protected:{s['slice']}",
                    not s["regressed"],
                    f"CER {s['candidate']['cer']:.4f} vs {s['current']['cer']:.4f} on "
                    f"{s['n']} samples"
                    + ("" if s["judged"] else f" (< {config.min_slice_samples}: not judged)"),
                )
            )
    found = {row.name for row in candidate_rows}
    missing = [p for p in config.protected if p not in found]
    notes = [*notes, *(f"protected slice {p} has no samples in these sets" for p in missing)]
    return {
        "format": CARD_FORMAT,
        "rules_version": config.version,
        "rules_source": config.source,
        "rules": rules,
        "candidate": candidate,
        "current": current,
        "samples": len(items),
        "overall": overall,
        "slices": slices,
        "checks": checks,
        "passed": all(check["passed"] for check in checks),
        "notes": list(notes),
    }


def _check(rule: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"rule": rule, "passed": bool(passed), "detail": detail}


def render_markdown(card: dict[str, Any]) -> str:
    """The card for people: verdict, checks, then the per-slice table."""
    verdict = "PASS" if card["passed"] else "FAIL"
    cand, cur = card["candidate"], card["current"]
    lines = [
        f"# Report card: {cand['version']} vs {cur['version']} — {verdict}",
        "",
        f"{card['samples']} samples; rules v{card['rules_version']} ({card['rules_source']}).",
        "",
        "| check | result | detail |",
        "|---|---|---|",
        *(
            f"| {c['rule']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |"
            for c in card["checks"]
        ),
        "",
        "| slice | n | groups | CER candidate | CER current | Δ CER | 95% interval of Δ "
        "| WER candidate | WER current | protected |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [{"slice": "**all**", "n": card["samples"], **card["overall"], "protected": False}]
    for s in rows + card["slices"]:
        delta = s["candidate"]["cer"] - s["current"]["cer"]
        mark = " ⚠" if s.get("regressed") else ""
        low, high = s.get("delta_cer_interval") or (delta, delta)
        lines.append(
            f"| {s['slice']}{mark} | {s['n']} | {s.get('groups', '')} | "
            f"{s['candidate']['cer']:.4f} | {s['current']['cer']:.4f} | {delta:+.4f} | "
            f"{low:+.4f} to {high:+.4f} | {s['candidate']['wer']:.4f} | "
            f"{s['current']['wer']:.4f} | {'yes' if s['protected'] else ''} |"
        )
    lines += [
        "",
        "The interval resamples the samples' groups (pages, writers) with replacement, both "
        "models together: an interval holding 0 means these samples cannot tell the two "
        "models apart on that slice.",
    ]
    if card["notes"]:
        lines += ["", "Notes:", *(f"- {n}" for n in card["notes"])]
    return "\n".join(lines) + "\n"


def write_card(card: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``report-card.json`` and ``report-card.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report-card.json", out / "report-card.md"
    json_path.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text(render_markdown(card), encoding="utf-8")
    return json_path, md_path
