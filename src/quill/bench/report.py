"""Benchmark reports: a JSON file with everything, a Markdown file with the tables to read.

The JSON keeps every slice, every timed call and the machine, so numbers can be re-derived;
the Markdown is what goes into the README: a summary with the peer-to-Quill CER ratios, per
dataset slice tables, and the speed table with speed-ups over eager PyTorch. An accuracy run
lists the unseen-writers pool first (the test lines of every dataset split by writer, scored
as one corpus), then each dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from quill.bench.accuracy import ALL, UNSEEN_WRITERS, DatasetResult
from quill.bench.datasets import BenchDataset
from quill.bench.machine import describe_machine
from quill.bench.speed import SpeedRun, batch_gains, int8_verdict, peer_ratios, speedups

#: Slice keys with more values than this are left out of the Markdown (kept in the JSON).
MAX_SLICE_VALUES = 30


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def percent(value: float) -> str:
    """A rate as a percentage with one decimal.

    >>> percent(0.0734), percent(1.5)
    ('7.3%', '150.0%')
    """
    return f"{100 * value:.1f}%"


def ratio(peer: float, quill: float) -> str:
    """How many times higher a peer's CER is than Quill's.

    >>> ratio(0.6, 0.1), ratio(0.5, 0.0)
    ('6.0x', 'inf')
    """
    return "inf" if quill == 0 else f"{peer / quill:.1f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table.

    >>> print("\\n".join(table(["a", "b"], [[1, "x"]])))
    | a | b |
    |---|---|
    | 1 | x |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def write(out: Path, stem: str, payload: dict, markdown: list[str]) -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.md`` into ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    md_path.write_text("\n".join(markdown) + "\n")
    return json_path, md_path


# ---------------------------------------------------------------- accuracy


def accuracy_payload(
    results: Sequence[DatasetResult],
    systems: Mapping[str, dict],
    unavailable: Mapping[str, str],
    machine: dict,
    quill: str | None,
    unseen: DatasetResult | None = None,
    empty: Sequence[BenchDataset] = (),
) -> dict:
    """The JSON document of an accuracy run (``quill``: Quill's system name, None if absent).

    ``unseen`` (the pooled unseen-writers result) leads ``datasets``; ``empty`` are datasets
    with no samples in the split read (listed with the reason, not scored).
    """
    return {
        "benchmark": "accuracy",
        "created": now(),
        "machine": machine,
        "quill_system": quill,
        "systems": dict(systems),
        "unavailable": dict(unavailable),
        "unseen_writers": list(unseen.dataset.pooled) if unseen else [],
        "datasets": [result.to_dict() for result in ([unseen] if unseen else []) + list(results)],
        "empty_datasets": [dataset.describe() for dataset in empty],
    }


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    """``records`` as JSON lines (UTF-8, not escaped) into ``path``, its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def write_predictions(path: Path, results: Sequence[DatasetResult]) -> Path:
    """One JSON line per sample: its reference and what every system read (error analysis)."""
    return write_jsonl(
        path,
        (
            {
                "dataset": result.dataset.name,
                "image": str(sample.image),
                "kind": sample.kind,
                "slices": sample.slices,
                "reference": sample.text,
                "predictions": {n: r.texts[index] for n, r in result.readings.items()},
                "failures": {
                    n: r.failures[index] for n, r in result.readings.items() if index in r.failures
                },
            }
            for result in results
            for index, sample in enumerate(result.dataset.samples)
        ),
    )


def accuracy_markdown(payload: dict) -> list[str]:
    """The Markdown tables of an accuracy run (from its JSON document)."""
    quill = payload["quill_system"]
    systems = list(payload["systems"])
    # Ratio columns: how many times Quill's CER each peer's is (only when Quill ran).
    peers = [name for name in systems if name != quill] if quill in systems else []
    lines = [
        "# Quill accuracy benchmark",
        "",
        f"{payload['created']} · {describe_machine(payload['machine'])}",
        "",
        "Character error rate (CER) and word error rate (WER), lower is better; *ci* = "
        "case-insensitive. Every system read the same images in the same run.",
        "",
    ]
    for name, info in payload["systems"].items():
        settings = ", ".join(f"{k}={v}" for k, v in info.items())
        lines.append(f"- **{name}**: {settings}")
    for name, reason in payload["unavailable"].items():
        lines.append(f"- **{name}**: skipped ({reason})")
    for dataset in payload.get("empty_datasets", []):
        lines.append(f"- **{dataset['name']}**: not scored ({dataset.get('note', 'no samples')})")
    if payload.get("unseen_writers"):
        lines += [
            "",
            f"*{UNSEEN_WRITERS}*: the {payload['datasets'][0]['split']} lines of the datasets "
            f"split by writer ({', '.join(payload['unseen_writers'])}), hands that no train "
            "line of their dataset has, pooled: total edits / total reference characters.",
        ]
    lines += ["", "## Summary (CER, case-sensitive)", ""]
    summary = []
    for dataset in payload["datasets"]:
        overall = _overall(dataset["results"])
        label = dataset["name"]
        if dataset.get("pooled"):
            label = f"**{label}** ({' + '.join(dataset['pooled'])})"
        row = [label, dataset["split"], dataset["samples"]]
        row += [percent(overall[name]["cer"]) if name in overall else "—" for name in systems]
        row += [
            ratio(overall[peer]["cer"], overall[quill]["cer"])
            if peer in overall and quill in overall
            else "—"
            for peer in peers
        ]
        summary.append(row)
    header = ["dataset", "split", "samples", *systems, *(f"{peer} / {quill}" for peer in peers)]
    lines += table(header, summary)
    for dataset in payload["datasets"]:
        lines += ["", *_dataset_section(dataset)]
    return lines


def _overall(results: list[dict]) -> dict[str, dict]:
    return {row["system"]: row for row in results if row["key"] == ALL}


def _dataset_section(dataset: dict) -> list[str]:
    """Two pivoted tables (CER, WER): one row per slice, one column per system."""
    if dataset.get("pooled"):
        where = f"The `{dataset['split']}` lines of {', '.join(dataset['pooled'])}, pooled"
    else:
        where = f"`{dataset['path']}` ({dataset['format']}), split `{dataset['split']}`"
        if dataset.get("split_by") == "writer":
            where += " (split by writer)"
    lines = [
        f"## {dataset['name']}",
        "",
        f"{where}, {dataset['samples']} samples, dataset version `{dataset['version']}`.",
    ]
    if dataset["import_skipped"]:
        lines.append(f"The import left out {len(dataset['import_skipped'])} samples (see JSON).")
    values: dict[str, set[str]] = {}
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for row in dataset["results"]:
        values.setdefault(row["key"], set()).add(row["value"])
        cells.setdefault((row["key"], row["value"]), {})[row["system"]] = row
    hidden = sorted(key for key, seen in values.items() if len(seen) > MAX_SLICE_VALUES)
    if hidden:
        lines.append(f"Slices by {', '.join(hidden)} have too many values to list (see JSON).")
    failed = {r["system"]: r["failures"] for r in dataset["results"] if r["key"] == ALL}
    if any(failed.values()):
        shown = ", ".join(f"{name} {count}" for name, count in failed.items() if count)
        lines.append(f"Images a system failed on (scored as empty readings): {shown}.")
    systems = list(dict.fromkeys(row["system"] for row in dataset["results"]))
    shown_slices = [(k, v) for (k, v) in cells if k not in hidden]
    for metric, title in (("cer", "CER"), ("wer", "WER")):
        rows = []
        for key, value in shown_slices:
            by_system = cells[key, value]
            first = next(iter(by_system.values()))
            rows.append(
                [
                    key if key == ALL else f"{key}={value}",
                    first["n"],
                    *(_pair(by_system[n], metric) if n in by_system else "—" for n in systems),
                ]
            )
        lines += ["", f"{title} (case-sensitive / case-insensitive):", ""]
        lines += table(["slice", "n", *systems], rows)
    if dataset.get("writers"):
        lines += ["", *_writers_table(dataset["writers"])]
    return lines


def _writers_table(spread: Mapping[str, dict]) -> list[str]:
    """The CER of each system over the writers (:func:`~quill.bench.accuracy.writer_spread`):
    median, 90th percentile and worst writer, and how many writers it reads better than each
    other system.

    >>> spread = {"quill": {"writers": 3, "median_cer": 0.1, "p90_cer": 0.3, "worst_cer": 0.3,
    ...                     "better_than": {"peer": 2}},
    ...           "peer": {"writers": 3, "median_cer": 0.2, "p90_cer": 0.4, "worst_cer": 0.5,
    ...                    "better_than": {"quill": 1}}}
    >>> print("\\n".join(_writers_table(spread)[2:]))
    | system | writers | median writer | 90th percentile | worst | reads better than |
    |---|---|---|---|---|---|
    | quill | 3 | 10.0% | 30.0% | 30.0% | peer for 2 of 3 |
    | peer | 3 | 20.0% | 40.0% | 50.0% | quill for 1 of 3 |
    """
    rows = [
        [
            system,
            row["writers"],
            percent(row["median_cer"]),
            percent(row["p90_cer"]),
            percent(row["worst_cer"]),
            ", ".join(f"{o} for {n} of {row['writers']}" for o, n in row["better_than"].items())
            or "—",
        ]
        for system, row in spread.items()
    ]
    header = ["system", "writers", "median writer", "90th percentile", "worst"]
    return [
        "CER per writer (each writer's lines scored together):",
        "",
        *table([*header, "reads better than"], rows),
    ]


def _pair(row: dict, metric: str) -> str:
    """``"cs / ci"`` for one metric of one result row.

    >>> _pair({"cer": 0.1, "cer_nocase": 0.05}, "cer")
    '10.0% / 5.0%'
    """
    return f"{percent(row[metric])} / {percent(row[metric + '_nocase'])}"


# ---------------------------------------------------------------- speed


def speed_payload(
    run: SpeedRun, unavailable: Mapping[str, str], machine: dict, inputs: dict, baseline: str
) -> dict:
    """The JSON document of a speed run."""
    ratios = speedups(run.timings, baseline)
    against_peers = peer_ratios(run.timings)
    gains = batch_gains(run.timings)
    return {
        "benchmark": "speed",
        "created": now(),
        "machine": machine,
        "inputs": inputs,
        "baseline": baseline,
        "systems": dict(run.systems),
        "unavailable": dict(unavailable),
        "failures": dict(run.failures),
        "accuracy_on_inputs": {name: dict(cers) for name, cers in run.accuracy.items()},
        "int8": int8_verdict(run.accuracy),
        "timings": [
            {
                **timing.to_dict(),
                "speedup_vs_baseline": ratios.get(index),
                "peers_p50_over_this": against_peers.get(index),
                "throughput_vs_batch_1": gains.get(index),
            }
            for index, timing in enumerate(run.timings)
        ],
    }


def _stage(timing: dict, stage: str) -> str:
    value = timing["stage_ms_per_image"].get(stage)
    return "—" if value is None else f"{value:.1f}"


def speed_markdown(payload: dict) -> list[str]:
    """The Markdown tables of a speed run (from its JSON document)."""
    inputs = payload["inputs"]
    pages = (
        f", and {inputs['page']} whole pages from `{inputs['page_source']}` (one page per "
        "call, each system finding the lines itself)"
        if inputs.get("page")
        else ""
    )
    lines = [
        "# Quill speed benchmark",
        "",
        f"{payload['created']} · {describe_machine(payload['machine'])}",
        "",
        f"Inputs: {inputs['line']} lines and {inputs['paragraph']} paragraphs from "
        f"`{inputs['source']}`{pages}; {inputs['warmup']} warm-up calls, then "
        f"{inputs['calls']} timed calls per row. Latency is per image (call time / batch "
        "size); *preprocess* and "
        "*model* split Quill's mean time per image between image handling and the network; "
        f"speed-up is the p50 of `{payload['baseline']}` over the row's p50 under the same "
        "kind, batch and threads.",
        "",
    ]
    for name, reason in payload["unavailable"].items():
        lines.append(f"- **{name}**: skipped ({reason})")
    for row, reason in payload["failures"].items():
        lines.append(f"- **{row}**: failed ({reason})")
    rows = [
        [
            *_timing_cells(t),
            f"{t['p95_ms']:.1f}",
            f"{t['p99_ms']:.1f}",
            f"{t['throughput_per_s']:.1f}",
            *(_stage(t, stage) for stage in ("preprocess", "model")),
            "—" if t["speedup_vs_baseline"] is None else f"{t['speedup_vs_baseline']:.2f}x",
        ]
        for t in payload["timings"]
    ]
    header = ["kind", "batch", "threads", "system", "p50 ms", "p95 ms", "p99 ms", "images/s"]
    header += ["preprocess ms", "model ms"]
    lines += [*table([*header, f"vs {payload['baseline']}"], rows), ""]
    lines += _quill_against_peers(payload["timings"])
    kinds = ["line", "paragraph", *(["page"] if inputs.get("page") else [])]
    lines += ["CER of each system on the timed inputs (the same images):", ""]
    cer_rows = [
        [name, *(percent(cers[kind]) if kind in cers else "—" for kind in kinds)]
        for name, cers in payload["accuracy_on_inputs"].items()
    ]
    lines += table(["system", *kinds], cer_rows)
    verdict = payload["int8"]
    if verdict:
        kept = [
            f"{kind} {percent(v['int8'])} vs {percent(v['fp32'])} "
            f"({'kept' if v['kept'] else 'NOT kept'})"
            for kind, v in sorted(verdict.items())
            if kind != "tolerance"
        ]
        lines += [
            "",
            f"int8 vs float32 ONNX CER (kept = within {100 * verdict['tolerance']:.1f} points): "
            + "; ".join(kept)
            + ".",
        ]
    return [*lines, ""]  # sections appended after (cold starts) start on a new paragraph


def _timing_cells(timing: dict) -> list:
    """The first cells of a speed row: what was timed (kind, batch, threads, system), p50."""
    return [
        timing["kind"],
        timing["batch"],
        timing["threads"],
        timing["system"],
        f"{timing['p50_ms']:.1f}",
    ]


def _quill_against_peers(timings: list[dict]) -> list[str]:
    """Each Quill row beside the peers of its kind, batch and threads: p50, mean, each peer's
    p50 over Quill's, and the throughput gained over batch 1."""
    peers = sorted({p for t in timings for p in t.get("peers_p50_over_this") or {}})
    rows = [
        [
            *_timing_cells(t),
            f"{t['mean_ms']:.1f}",
            *(
                f"{t['peers_p50_over_this'][p]:.2f}x" if p in t["peers_p50_over_this"] else "—"
                for p in peers
            ),
            "—" if t["throughput_vs_batch_1"] is None else f"{t['throughput_vs_batch_1']:.2f}x",
        ]
        for t in timings
        if t.get("peers_p50_over_this") is not None
    ]
    if not rows:
        return []
    header = ["kind", "batch", "threads", "system", "p50 ms", "mean ms"]
    header += [f"{p} p50 / quill's" for p in peers] + ["images/s vs batch 1"]
    intro = (
        "Quill against the peers: each peer's p50 over Quill's under the same kind, batch and "
        "threads (above 1: Quill is faster), and the throughput a batch gains over batch 1."
    )
    return [intro, "", *table(header, rows), ""]
