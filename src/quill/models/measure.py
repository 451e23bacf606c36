"""Size and CPU latency of every registered model: ``python -m quill.models.measure``.

Numbers for choosing an architecture before training it (weights are random, so seq2seq
models are forced to decode a fixed number of tokens: EOS is disabled). Reports, per model and
intra-op thread count: parameters, megabytes, median/p90 wall latency and median CPU time at
batch 1; for ``ctc_line``
also ONNX Runtime vs eager, and for seq2seq models cached vs uncached greedy decoding.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from quill.model_files import ONNX_FILE
from quill.models import MODEL_NAMES, build_model
from quill.models.generation import greedy_uncached
from quill.vocab import Tokenizer


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median and 90th-percentile wall time and median process CPU time, in ms, after one
    warm-up call. On a shared machine wall time includes waiting for a core; CPU time does
    not (with one thread it approximates the latency on an idle core)."""
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    wall.sort()
    p90 = wall[min(len(wall) - 1, int(0.9 * len(wall)))]
    return statistics.median(wall), p90, statistics.median(cpu)


def _input_for(name: str, line_width: int) -> torch.Tensor:
    if name == "resnet_transformer":
        return torch.rand(1, 1, 576, 640)  # the default paragraph canvas
    return torch.rand(1, 1, 64, line_width)


def measure(
    names: tuple[str, ...], threads: tuple[int, ...], line_width: int, tokens: int, repeats: int
) -> list[dict]:
    """One row per (model, threads, variant)."""
    rows = []
    num_classes = len(Tokenizer())
    for name in names:
        torch.manual_seed(0)
        # Any: the families' own methods (encode, decoder.generate_greedy) are called below.
        model: Any = build_model(name, num_classes).eval()
        params = sum(p.numel() for p in model.parameters())
        images = _input_for(name, line_width)
        base = {"model": name, "params": params, "MB": params * 4 / 2**20}
        base["input"] = "x".join(str(s) for s in images.shape[2:])
        # Called without arguments; the lambdas bind the loop's model and inputs as defaults.
        variants: dict[str, Callable[..., object]] = {}
        if model.family == "ctc":
            variants["eager"] = lambda m=model, x=images: m(x)
            variants.update(_onnx_variant(model, images))
        else:
            with torch.no_grad():
                model.decoder.classifier.bias[Tokenizer.eos_id] = -1e4  # decode all `tokens`
            memory = lambda m=model, x=images: m.encode(x)  # noqa: E731
            variants[f"encode+{tokens} cached"] = lambda m=model, f=memory: (
                m.decoder.generate_greedy(f(), tokens)
            )
            variants[f"encode+{tokens} uncached"] = lambda m=model, f=memory: greedy_uncached(
                m.decoder, f(), tokens
            )
        for count in threads:
            torch.set_num_threads(count)
            for variant, function in variants.items():
                with torch.inference_mode():
                    p50, p90, cpu = timed(function, repeats)
                rows.append(
                    {**base, "threads": count, "variant": variant, "p50": p50, "p90": p90}
                    | {"cpu": cpu}
                )
    return rows


def _onnx_variant(model: torch.nn.Module, images: torch.Tensor) -> dict:
    import onnxruntime as ort

    from quill.models.onnx_export import export_ctc_onnx

    directory = Path(tempfile.mkdtemp(prefix="quill-measure-"))
    onnx_file = export_ctc_onnx(model, directory / ONNX_FILE, height=images.shape[2]).files[0]
    sessions = {}
    for count in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = count
        options.inter_op_num_threads = 1
        sessions[count] = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
    feed = {"images": images.numpy()}
    # The ORT thread count follows torch's setting at call time, so rows line up.
    return {"onnxruntime": lambda: sessions[torch.get_num_threads()].run(None, feed)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--line-width", type=int, default=512, help="line input width (px)")
    parser.add_argument("--tokens", type=int, default=40, help="greedy steps for seq2seq")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    rows = measure(
        tuple(args.models), tuple(args.threads), args.line_width, args.tokens, args.repeats
    )
    from rich.console import Console
    from rich.table import Table

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    table = Table(
        title=f"Quill models: size and CPU latency (batch 1, random weights; load {load} "
        f"on {os.cpu_count()} cores)"
    )
    columns = ("model", "params", "MB", "input", "threads", "variant", "p50 ms", "p90 ms")
    for column in (*columns, "cpu ms"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for row in rows:
        table.add_row(
            row["model"],
            f"{row['params']:,}",
            f"{row['MB']:.1f}",
            row["input"],
            str(row["threads"]),
            row["variant"],
            f"{row['p50']:.1f}",
            f"{row['p90']:.1f}",
            f"{row['cpu']:.1f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
