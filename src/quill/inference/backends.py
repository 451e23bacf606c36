"""Runtimes that execute a staged model: ONNX Runtime, TorchScript and eager PyTorch.

Every runtime answers one question, ``decode(images (B,1,H,W) float32, widths (B,) int64)
-> [(token ids, confidence)]``, for both model families:

* CTC: one graph ``(images, widths) -> (log_probs, lengths)``, then the model's
  :class:`~quill.models.decoding.CTCDecoder`: best path, or beam search with the character
  language model its ``decoding`` section names.
* seq2seq: ONNX runs ``encoder.onnx`` once and ``decoder_step.onnx`` per token with a KV
  cache, the loop in NumPy; TorchScript and eager call the model's own cached ``generate``.

``auto`` times each available serving runtime on the same probe batch and keeps the fastest:
the winner depends on the machine, the thread count and the model, so it is measured where
the model runs rather than assumed, once: :mod:`quill.inference.cache` remembers it per model,
threads and machine, so later starts load only the winner (ONNX Runtime without torch).

torch is imported only by the torch runtimes, inside them: an ONNX start never pays for it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quill.inference import cache
from quill.models.decoding import CTCDecoder, Decoded, seq2seq_greedy_decode
from quill.models.language_model import CharNGramLM
from quill.vocab import Tokenizer

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "torchscript", "eager")
#: What ``auto`` compares: eager is the reference, not a serving runtime.
AUTO_CANDIDATES = ("onnx", "torchscript")
FAMILIES = ("ctc", "seq2seq")


class ModelLoadError(RuntimeError):
    """A staged model's files are missing or unreadable; the message names the file."""


class Backend(Protocol):
    name: str

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        """(B,1,H,W) float32 images and their (B,) true widths -> ids and confidence each."""
        ...


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort  # lazy: a TorchScript-only start does not load it

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc


def ctc_decoder(model_dir: Path, meta: dict[str, Any]) -> CTCDecoder:
    """The decoder a staged CTC model's ``decoding`` section asks for (greedy if none).

    ``{"method": "beam", "beam_width": 8, "lm": "lm.json", "lm_weight": 0.5,
    "insertion_bonus": 1.0, "prune_log_prob": -8.0}``; the language model file is relative to
    the model directory.
    """
    spec = dict(meta.get("decoding") or {})
    lm_file = spec.pop("lm", None)
    unknown = set(spec) - {f.name for f in fields(CTCDecoder)}
    if unknown:
        raise ModelLoadError(f"{model_dir}: unknown decoding settings {sorted(unknown)}")
    lm = _load_lm(model_dir / lm_file) if lm_file and spec.get("method") == "beam" else None
    if lm is not None:
        try:
            lm.check_tokenizer(Tokenizer.from_dict(meta["tokenizer"]))
        except ValueError as exc:
            raise ModelLoadError(f"{model_dir / lm_file}: {exc}") from exc
    try:
        return CTCDecoder(lm=lm, **spec)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{model_dir}: bad decoding settings {spec}: {exc}") from exc


@lru_cache(maxsize=4)
def _load_lm(path: Path) -> CharNGramLM:
    """A language model file, read once per process (``auto`` opens several runtimes), from
    its compiled form in the user cache when that is there (milliseconds instead of the
    second or more that reading the JSON and computing the tables takes)."""
    if not path.is_file():
        raise ModelLoadError(f"{path.parent} has no {path.name} (its decoding section names it)")
    compiled = cache.compiled_lm_path(path)
    if compiled is not None and compiled.is_dir():
        try:
            return CharNGramLM.load_compiled(compiled, source=path)
        except ValueError as exc:  # a damaged copy: compile again
            log.info("%s", exc)
            shutil.rmtree(compiled, ignore_errors=True)
    try:
        lm = CharNGramLM.load(path)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    if compiled is not None and cache.write_atomic(compiled, lm.save_compiled):
        cache.prune(compiled.parent, cache.MAX_COMPILED_LMS)
    return lm


class OnnxCTC:
    name = "onnx"

    def __init__(self, model_dir: Path, meta: dict[str, Any], threads: int | None = None):
        self.session = _session(model_dir / "model.onnx", threads)
        self.decoder = ctc_decoder(model_dir, meta)

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        log_probs, lengths = self.session.run(None, {"images": images, "widths": widths})
        return self.decoder(log_probs, lengths)  # log_probs (B, T, C)


class OnnxSeq2Seq:
    name = "onnx"

    def __init__(self, model_dir: Path, meta: dict[str, Any], threads: int | None = None):
        self.encoder = _session(model_dir / "encoder.onnx", threads)
        self.step = _session(model_dir / "decoder_step.onnx", threads)
        self.session = self.encoder  # what thread-setting checks inspect
        self.max_length = int(meta["max_output_length"])

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        cross_keys, cross_values = self.encoder.run(None, {"images": images})

        def step(tokens: np.ndarray, keys: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
            feeds = {
                "tokens": tokens,
                "self_keys": keys,
                "self_values": values,
                "cross_keys": cross_keys,
                "cross_values": cross_values,
            }
            return self.step.run(None, feeds)

        return seq2seq_greedy_decode(step, cross_keys, self.max_length)


class TorchModuleRuntime:
    """A torch module (scripted or eager) speaking the exported interface of its family."""

    name = "torch"

    def __init__(
        self, module: Any, family: str, max_length: int = 0, decoder: CTCDecoder | None = None
    ):
        self.module = module
        self.family = family
        self.max_length = max_length
        self.decoder = decoder or CTCDecoder()

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        import torch  # lazy: torch takes seconds to import; ONNX starts never need it

        batch = torch.from_numpy(images)
        with torch.inference_mode():
            if self.family == "ctc":
                log_probs, lengths = self.module(batch, torch.from_numpy(widths))
                return self.decoder(log_probs, lengths)
            ids, scores = self.module.generate(batch, self.max_length)  # (B, L), (B,)
        return [
            (row, float(score)) for row, score in zip(ids.tolist(), scores.tolist(), strict=True)
        ]


def _set_torch_threads(threads: int | None) -> None:
    import torch  # lazy: torch takes seconds to import; ONNX starts never need it

    if threads:
        torch.set_num_threads(threads)  # process-wide: torch has no per-module setting


def _load_script(path: Path) -> Any:
    import torch  # lazy: torch takes seconds to import; ONNX starts never need it

    if not path.is_file():
        raise ModelLoadError(f"{path.parent} has no {path.name}")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot load TorchScript model {path}: {exc}") from exc


class TorchScriptRuntime(TorchModuleRuntime):
    name = "torchscript"

    def __init__(self, model_dir: Path, meta: dict[str, Any], threads: int | None = None):
        _set_torch_threads(threads)
        script = _load_script(model_dir / "model.pt")
        super().__init__(script, meta["family"], *_torch_decoding(model_dir, meta))


class EagerRuntime(TorchModuleRuntime):
    """The network rebuilt from its config with the weights of the TorchScript file.

    The reference runtime for benchmarks and debugging; needs ``quill.models`` and torch.
    """

    name = "eager"

    def __init__(self, model_dir: Path, meta: dict[str, Any], threads: int | None = None):
        # lazy: the network's code needs torch, which ONNX starts never import
        from quill.models import build_model
        from quill.staging.export import export_interface

        _set_torch_threads(threads)
        num_classes = len(Tokenizer.from_dict(meta["tokenizer"]))
        model = build_model(meta["model_name"], num_classes, **meta["model_config"])
        module = export_interface(model)
        # A scripted module also saves non-persistent buffers (e.g. positional tables),
        # which the rebuilt module recomputes: load only the keys it persists.
        expected = module.state_dict().keys()
        scripted = _load_script(model_dir / "model.pt").state_dict()
        module.load_state_dict({k: v for k, v in scripted.items() if k in expected})
        super().__init__(module.eval(), meta["family"], *_torch_decoding(model_dir, meta))


def _torch_decoding(model_dir: Path, meta: dict[str, Any]) -> tuple[int, CTCDecoder | None]:
    """(seq2seq length limit, CTC decoder) of a staged model for the torch runtimes."""
    decoder = ctc_decoder(model_dir, meta) if meta["family"] == "ctc" else None
    return int(meta.get("max_output_length", 0)), decoder


_RUNTIMES: dict[tuple[str, str], type] = {
    ("ctc", "onnx"): OnnxCTC,
    ("seq2seq", "onnx"): OnnxSeq2Seq,
    ("ctc", "torchscript"): TorchScriptRuntime,
    ("seq2seq", "torchscript"): TorchScriptRuntime,
    ("ctc", "eager"): EagerRuntime,
    ("seq2seq", "eager"): EagerRuntime,
}


def load_backend(name: str, model_dir: Path, meta: dict[str, Any], threads: int | None) -> Backend:
    """Open runtime ``name`` for the staged model in ``model_dir``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    family = meta.get("family")
    if family not in FAMILIES:
        raise ModelLoadError(f"{model_dir}: unknown model family {family!r}")
    source = "torchscript" if name == "eager" else name
    for file in meta.get("backends", {}).get(source, {}).get("files", []):
        if not (model_dir / file).is_file():
            raise ModelLoadError(f"{model_dir} has no {file} for the {name} backend")
    return _RUNTIMES[(family, name)](model_dir, meta, threads)


def choose_backend(
    model_dir: Path, meta: dict[str, Any], threads: int | None, probe: tuple[np.ndarray, np.ndarray]
) -> tuple[Backend, dict[str, float]]:
    """The fastest of the available serving runtimes on ``probe``, and every time measured."""
    # lazy: measuring is rare (its result is cached), and parity pulls in image drawing
    from quill.staging.parity import median_decode_ms

    timings: dict[str, float] = {}
    loaded: dict[str, Backend] = {}
    for name in AUTO_CANDIDATES:
        files = meta.get("backends", {}).get(name, {}).get("files", [])
        if not files or not all((model_dir / f).is_file() for f in files):
            continue
        try:
            loaded[name] = load_backend(name, model_dir, meta, threads)
        except ImportError:
            continue  # e.g. an image without torch serves with ONNX Runtime alone
        timings[name] = median_decode_ms(loaded[name], *probe)
    if not loaded:
        raise ModelLoadError(f"{model_dir} has no ONNX or TorchScript file to run")
    best = min(timings, key=timings.__getitem__)
    return loaded[best], timings


def auto_backend(
    model_dir: Path,
    meta: dict[str, Any],
    threads: int | None,
    probe: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[Backend, dict[str, float], bool]:
    """``auto``: the runtime measured fastest for this model, threads and machine, and the
    timings of that measurement; measured now (on ``probe()``) unless the cache remembers it.
    The third value says whether the choice came from the cache."""
    key = cache.backend_choice_key(model_dir, meta, threads, AUTO_CANDIDATES)
    remembered = cache.read_backend_choice(key)
    if remembered is not None and remembered["backend"] in AUTO_CANDIDATES:
        try:
            backend = load_backend(remembered["backend"], model_dir, meta, threads)
            return backend, dict(remembered["timings_ms"]), True
        except (ImportError, ModelLoadError) as exc:  # e.g. torch uninstalled since: measure
            log.info("cached backend choice %s unusable: %s", remembered["backend"], exc)
    backend, timings = choose_backend(model_dir, meta, threads, probe())
    cache.write_backend_choice(
        key, backend.name, timings, model_version=meta.get("version"), threads=threads
    )
    return backend, timings, False
