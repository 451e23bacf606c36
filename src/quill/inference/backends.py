"""Runtimes that execute a staged model: ONNX Runtime, TorchScript and eager PyTorch.

All three run the same exported interface, ``(images (B,1,H,W) float32, widths (B,) int64)
-> (log_probs (B,T,C), lengths (B,))``, so the recognizer does not care which one it holds.
``auto`` times each available runtime on the same probe batch at load time and keeps the
fastest: the winner depends on the machine, the thread count and the model, so it is
measured where the model runs rather than assumed.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BACKENDS = ("onnx", "torchscript", "eager")
#: What ``auto`` compares: eager is the reference, not a serving runtime.
AUTO_CANDIDATES = ("onnx", "torchscript")


class ModelLoadError(RuntimeError):
    """A staged model's files are missing or unreadable; the message names the file."""


class Backend(Protocol):
    name: str

    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,1,H,W) float32 images, (B,) int64 widths -> (B,T,C) log-probs, (B,) lengths."""
        ...


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc

    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, lengths = self.session.run(None, {"images": images, "widths": widths})
        return log_probs, lengths


class _TorchBackend:
    """Shared call path of the TorchScript and eager runtimes."""

    name = "torch"
    module: Any

    def run(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            log_probs, lengths = self.module(torch.from_numpy(images), torch.from_numpy(widths))
        return log_probs.numpy(), lengths.numpy()


def _set_torch_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)  # process-wide: torch has no per-module setting


def _load_script(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot load TorchScript model {path}: {exc}") from exc


class TorchScriptBackend(_TorchBackend):
    name = "torchscript"

    def __init__(self, path: Path, threads: int | None = None):
        _set_torch_threads(threads)
        self.module = _load_script(path)


class EagerBackend(_TorchBackend):
    """The network rebuilt from its config with the weights of the TorchScript file.

    The reference runtime for benchmarks and debugging; needs ``quill.models`` and torch.
    """

    name = "eager"

    def __init__(self, path: Path, meta: dict[str, Any], threads: int | None = None):
        from quill.models import build_model
        from quill.staging.export import export_interface

        _set_torch_threads(threads)
        model = build_model(meta["model_name"], _num_classes(meta), **meta["model_config"])
        module = export_interface(model)
        # A scripted module also saves non-persistent buffers (e.g. positional tables),
        # which the rebuilt module recomputes: load only the keys it persists.
        expected = module.state_dict().keys()
        weights = {k: v for k, v in _load_script(path).state_dict().items() if k in expected}
        module.load_state_dict(weights)
        self.module = module.eval()


def _num_classes(meta: dict[str, Any]) -> int:
    from quill.vocab import Tokenizer

    return len(Tokenizer.from_dict(meta["tokenizer"]))


def load_backend(name: str, model_dir: Path, meta: dict[str, Any], threads: int | None) -> Backend:
    """Open runtime ``name`` for the staged model in ``model_dir``."""
    files = {"onnx": "model.onnx", "torchscript": "model.pt", "eager": "model.pt"}
    if name not in files:
        raise ValueError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    path = model_dir / files[name]
    if not path.is_file():
        raise ModelLoadError(f"{model_dir} has no {files[name]} for the {name} backend")
    if name == "onnx":
        return OnnxBackend(path, threads)
    if name == "torchscript":
        return TorchScriptBackend(path, threads)
    return EagerBackend(path, meta, threads)


def time_backend(
    backend: Backend, images: np.ndarray, widths: np.ndarray, repeats: int = 3
) -> float:
    """Median milliseconds of ``repeats`` runs after one warm-up run."""
    backend.run(images, widths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.run(images, widths)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def choose_backend(
    model_dir: Path, meta: dict[str, Any], threads: int | None, probe: tuple[np.ndarray, np.ndarray]
) -> tuple[Backend, dict[str, float]]:
    """The fastest of the available serving runtimes on ``probe``, and every time measured."""
    timings: dict[str, float] = {}
    loaded: dict[str, Backend] = {}
    for name in AUTO_CANDIDATES:
        files = meta.get("backends", {}).get(name, {}).get("files", [])
        if not files or not (model_dir / files[0]).is_file():
            continue
        try:
            loaded[name] = load_backend(name, model_dir, meta, threads)
        except ImportError:
            continue  # e.g. an image without torch serves with ONNX Runtime alone
        timings[name] = time_backend(loaded[name], *probe)
    if not loaded:
        raise ModelLoadError(f"{model_dir} has no ONNX or TorchScript file to run")
    best = min(timings, key=timings.__getitem__)
    return loaded[best], timings
