"""Runtimes that execute a staged model: ONNX Runtime (float32, or int8 where the model has
an int8 copy), TorchScript and eager PyTorch.

Every runtime answers one question, ``decode(images (B,1,H,W) float32, widths (B,) int64)
-> [(token ids, confidence)]``, for both model families:

* CTC: one graph ``(images, widths) -> (log_probs, lengths)`` (``forward``, which a caller
  choosing one language for a page's lines runs apart), then the model's
  :class:`~quill.models.decoding.CTCDecoder` (``decoder``): best path, or beam search with the
  character language models its ``decoding`` section names.
* seq2seq: ONNX runs ``encoder.onnx`` once and ``decoder_step.onnx`` per token with a KV
  cache, the loop in NumPy; TorchScript and eager call the model's own cached ``generate``.

``auto`` times each available serving runtime on the same probe batch and keeps the faster of
ONNX Runtime's files unless TorchScript is clearly faster (:data:`AUTO_MARGIN`): the winner
depends on the machine (int8 matrix products gain most where the CPU has int8 dot-product
instructions), the thread count and the model, so it is measured where the model runs
rather than assumed, once: :mod:`quill.runtimes.cache` remembers it per model, threads and
machine, so later starts load only the winner (ONNX Runtime without torch).

Every runtime reads a :class:`~quill.staged_model.StagedModel`. Staging runs them for its
parity check and inference for every prediction, so they sit below both.

torch is imported only by the torch runtimes, inside them: an ONNX start never pays for it
(torch takes seconds to import; a container may serve with ONNX Runtime alone).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quill.model_files import DECODER_STEP_FILE, ENCODER_FILE, TORCHSCRIPT_FILE
from quill.models.decoding import CTCDecoder, Decoded, LanguageOption, seq2seq_greedy_decode
from quill.models.language_model import CharNGramLM
from quill.models.lexicon import WordLexicon
from quill.runtimes import cache
from quill.staged_model import ModelLoadError, StagedModel
from quill.vocab import Tokenizer

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "onnx-int8", "torchscript", "eager")
#: What a ``--backend`` option takes: a runtime, or ``auto`` (:func:`auto_backend`).
BACKEND_CHOICES = ("auto", *BACKENDS)
#: What ``auto`` compares: eager is the reference, not a serving runtime.
AUTO_CANDIDATES = ("onnx", "onnx-int8", "torchscript")
#: The runtimes that run on ONNX Runtime alone: ``auto`` keeps the fastest of them, whose
#: readings the model's parity record vouches for (int8's: ``quill model quantize``).
ONNX_RUNTIMES = ("onnx", "onnx-int8")
#: ``auto`` keeps ONNX Runtime unless TorchScript takes at most this share of its time
#: on the probe. ONNX starts without importing torch (about 1.5 s of every cold start), and
#: the choice is remembered for good: on a busy machine one disturbed probe once kept
#: TorchScript at 0.74x of ONNX's time for the default model, which ONNX runs in 0.63x of
#: TorchScript's on a quieter one (best of 7 rounds each), and every `quill predict` then
#: paid torch's import (1.8 s instead of 0.3 s).
AUTO_MARGIN = 0.7
#: Rounds of the probe ``auto`` times, the runtimes taking turns; each keeps its best round
#: (the least disturbed by other work).
AUTO_ROUNDS = 5
#: How ``auto`` chooses, part of the remembered choice's key: a choice made by another rule
#: is measured again.
AUTO_RULE = (
    f"fastest of {'/'.join(ONNX_RUNTIMES)} unless torchscript <= {AUTO_MARGIN}x, "
    f"best of {AUTO_ROUNDS} rounds in turn"
)


class Decodes(Protocol):
    """Anything that decodes a batch: a runtime, or a module staging compares with one."""

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        """(B,1,H,W) float32 images and their (B,) true widths -> ids and confidence each."""
        ...


class Backend(Decodes, Protocol):
    """A runtime of a staged model, named as ``--backend`` names it."""

    name: str


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


def ctc_decoder(model: StagedModel) -> CTCDecoder:
    """The decoder a staged CTC model's ``decoding`` section asks for (greedy if none).

    ``{"method": "beam", "beam_width": 8, "lm": "lm.json", "lm_weight": 0.5,
    "insertion_bonus": 1.0, "prune_log_prob": -8.0}``, and with other languages
    ``"identifier": "identify.json", "identify_margin": 0.7, "languages": [{"language": "fr",
    "lm": "lm-fr.json", "identifier": "identify-fr.json", "lm_weight": 0.5,
    "insertion_bonus": 2.0}]``; language model files are relative to the model directory.
    """
    decoding = model.decoding
    if decoding is None:
        return CTCDecoder()
    settings = decoding.decoder_settings()
    lm_path = model.lm_path
    lm = _checked_lm(model, lm_path) if lm_path is not None else None
    others: dict[str, Any] = {}
    if decoding.method == "beam" and decoding.words is not None:
        others["words"] = _word_list(model, decoding.words)
    if decoding.uses_lm and decoding.languages and decoding.identifier is not None:
        others["identifier"] = _checked_lm(model, model.path / decoding.identifier)
        others["languages"] = tuple(
            LanguageOption(
                language.language,
                _checked_lm(model, model.path / language.identifier),
                _checked_lm(model, model.path / language.lm),
                language.lm_weight,
                language.insertion_bonus,
                None if language.words is None else _word_list(model, language.words),
                language.word_penalty or 0.0,
            )
            for language in decoding.languages
        )
    try:
        return CTCDecoder(lm=lm, **settings, **others)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{model.path}: bad decoding settings {settings}: {exc}") from exc


def _word_list(model: StagedModel, name: str) -> WordLexicon:
    """A word list file of ``model``'s decoding, read for its tokenizer."""
    path = model.path / name
    if not path.is_file():
        raise ModelLoadError(f"{model.path} has no {name} (its decoding section names it)")
    state = path.stat()
    try:
        return _load_words(path, state.st_mtime_ns, state.st_size, model.tokenizer)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc


@lru_cache(maxsize=8)
def _load_words(path: Path, mtime_ns: int, size: int, tokenizer: Tokenizer) -> WordLexicon:
    """A word list file as one version of it reads (``mtime_ns``, ``size``), read once per
    process (``auto`` opens several runtimes, each decoding with the same lists), its letters
    from the user cache when they are there (:func:`quill.runtimes.cache.read_words_path`)."""
    return cache.kept_or_made(
        cache.read_words_path(path),
        lambda kept: WordLexicon.from_letters(np.load(kept, allow_pickle=False), tokenizer),
        lambda: WordLexicon.load(path, tokenizer),
        lambda lexicon, new: _save_array(new, lexicon.letters),
        cache.MAX_READ_WORD_LISTS,
    )


def _save_array(path: Path, array: np.ndarray) -> None:
    """``array`` as an ``.npy`` file at exactly ``path`` (``np.save`` would add a suffix)."""
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _checked_lm(model: StagedModel, path: Path) -> CharNGramLM:
    """A language model file of ``model``'s decoding, loaded and checked against its
    character set."""
    lm = _load_lm(path)
    try:
        lm.check_tokenizer(model.tokenizer)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    return lm


@lru_cache(maxsize=8)
def _load_lm(path: Path) -> CharNGramLM:
    """A language model file, read once per process (``auto`` opens several runtimes, each
    reading up to four with other languages), from its compiled form in the user cache when
    that is there (milliseconds instead of the seconds that reading the JSON and computing
    the tables take)."""
    if not path.is_file():
        raise ModelLoadError(f"{path.parent} has no {path.name} (its decoding section names it)")
    try:
        return cache.kept_or_made(
            cache.compiled_lm_path(path),
            lambda kept: CharNGramLM.load_compiled(kept, source=path),
            lambda: CharNGramLM.load(path),
            lambda lm, new: lm.save_compiled(new),
            cache.MAX_COMPILED_LMS,
        )
    except ValueError as exc:  # the JSON itself cannot be read (a kept copy is made again)
        raise ModelLoadError(str(exc)) from exc


def _check_classes(model: StagedModel, classes: Any, source: Path) -> None:
    """Refuse a network whose output classes are not the staged character set's: a
    ``quill-model.json`` from another model would read every character as another one."""
    expected = len(model.tokenizer)
    if isinstance(classes, int) and classes != expected:
        raise ModelLoadError(
            f"{source} reads {classes} classes, and the character set in "
            f"{model.metadata_path} has {expected}: the network and its metadata come from "
            "different models (stage the model again)"
        )


def _script_classes(script: Any) -> int | None:
    """Output classes of a scripted network: the rows of its classifier's weight."""
    weights = [v for k, v in script.state_dict().items() if k.endswith("classifier.weight")]
    return int(weights[0].shape[0]) if weights else None


class OnnxCTC:
    """A CTC model's graph on ONNX Runtime: ``model.onnx``, or its int8 copy as
    ``onnx-int8``."""

    def __init__(self, model: StagedModel, threads: int | None = None, name: str = "onnx"):
        self.name = name
        path = model.files_of(name)[0]
        self.session = _session(path, threads)
        _check_classes(model, self.session.get_outputs()[0].shape[-1], path)  # (B, T, C)
        self.decoder = ctc_decoder(model)

    def forward(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network alone: (log_probs (B, T, C), lengths (B,)) for ``decoder``."""
        log_probs, lengths = self.session.run(None, {"images": images, "widths": widths})
        return log_probs, lengths

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        return self.decoder(*self.forward(images, widths))


class OnnxSeq2Seq:
    name = "onnx"

    def __init__(self, model: StagedModel, threads: int | None = None):
        self.encoder = _session(model.path / ENCODER_FILE, threads)
        self.step = _session(model.path / DECODER_STEP_FILE, threads)
        self.session = self.encoder  # what thread-setting checks inspect
        if model.max_output_length is None:
            raise ModelLoadError(f"{model.metadata_path} lacks a seq2seq max_output_length")
        self.max_length = model.max_output_length

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        cross_keys, cross_values = self.encoder.run(None, {"images": images})

        def step(
            tokens: np.ndarray, keys: np.ndarray, values: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            feeds = {
                "tokens": tokens,
                "self_keys": keys,
                "self_values": values,
                "cross_keys": cross_keys,
                "cross_values": cross_values,
            }
            logits, new_keys, new_values = self.step.run(None, feeds)
            return logits, new_keys, new_values

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

    def forward(self, images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A CTC module's network alone: (log_probs (B, T, C), lengths (B,)) for ``decoder``."""
        import torch  # lazy: torch takes seconds to import; ONNX starts never need it

        if self.family != "ctc":
            raise ValueError(f"forward() is for CTC models; this one is {self.family}")
        with torch.inference_mode():
            log_probs, lengths = self.module(torch.from_numpy(images), torch.from_numpy(widths))
        return log_probs.float().numpy(), lengths.numpy()

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]:
        import torch  # lazy: torch takes seconds to import; ONNX starts never need it

        if self.family == "ctc":
            return self.decoder(*self.forward(images, widths))
        with torch.inference_mode():
            ids, scores = self.module.generate(torch.from_numpy(images), self.max_length)
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

    def __init__(self, model: StagedModel, threads: int | None = None):
        _set_torch_threads(threads)
        path = model.path / TORCHSCRIPT_FILE
        script = _load_script(path)
        _check_classes(model, _script_classes(script), path)
        super().__init__(script, model.family, *_torch_decoding(model))


class EagerRuntime(TorchModuleRuntime):
    """The network rebuilt from its config with the weights of the TorchScript file.

    The reference runtime for benchmarks and debugging; needs ``quill.models`` and torch.
    """

    name = "eager"

    def __init__(self, model: StagedModel, threads: int | None = None):
        # lazy: the network's code needs torch, which ONNX starts never import
        from quill.models import build_model
        from quill.models.onnx_export import export_interface

        _set_torch_threads(threads)
        network = build_model(model.model_name, len(model.tokenizer), **model.model_config)
        module = export_interface(network)
        # A scripted module also saves non-persistent buffers (e.g. positional tables),
        # which the rebuilt module recomputes: load only the keys it persists.
        expected = module.state_dict().keys()
        path = model.path / TORCHSCRIPT_FILE
        script = _load_script(path)
        _check_classes(model, _script_classes(script), path)
        scripted = script.state_dict()
        try:
            module.load_state_dict({k: v for k, v in scripted.items() if k in expected})
        except RuntimeError as exc:  # the weights of another network size
            raise ModelLoadError(
                f"{path} does not fit the network {model.metadata_path} describes: "
                f"{str(exc).splitlines()[-1].strip()}"
            ) from exc
        super().__init__(module.eval(), model.family, *_torch_decoding(model))


def _torch_decoding(model: StagedModel) -> tuple[int, CTCDecoder | None]:
    """(seq2seq length limit, CTC decoder) of a staged model for the torch runtimes."""
    decoder = ctc_decoder(model) if model.family == "ctc" else None
    return model.max_output_length or 0, decoder


_RUNTIMES: dict[tuple[str, str], Callable[..., Backend]] = {
    ("ctc", "onnx"): OnnxCTC,
    ("ctc", "onnx-int8"): partial(OnnxCTC, name="onnx-int8"),
    ("seq2seq", "onnx"): OnnxSeq2Seq,
    ("ctc", "torchscript"): TorchScriptRuntime,
    ("seq2seq", "torchscript"): TorchScriptRuntime,
    ("ctc", "eager"): EagerRuntime,
    ("seq2seq", "eager"): EagerRuntime,
}


def load_backend(name: str, model: StagedModel, threads: int | None) -> Backend:
    """Open runtime ``name`` for the staged ``model``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    source = "torchscript" if name == "eager" else name
    if (model.family, name) not in _RUNTIMES or (name == "onnx-int8" and not model.files_of(name)):
        raise ModelLoadError(
            f"{model.path} has no int8 copy (make one with `quill model quantize {model.path}`)"
            if model.family == "ctc"
            else f"the {name} backend runs CTC models only; {model.path} is {model.family}"
        )
    for path in model.files_of(source):
        if not path.is_file():
            raise ModelLoadError(f"{model.path} has no {path.name} for the {name} backend")
    return _RUNTIMES[(model.family, name)](model, threads)


def median_decode_ms(
    runtime: Decodes, batch: np.ndarray, widths: np.ndarray, repeats: int = 3
) -> float:
    """Median milliseconds of ``repeats`` decodes of one batch, after a warm-up decode."""
    runtime.decode(batch, widths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.decode(batch, widths)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def best_decode_ms(
    runtimes: dict[str, Decodes], batch: np.ndarray, widths: np.ndarray, rounds: int
) -> dict[str, float]:
    """Each runtime's fastest of ``rounds`` decodes of one batch, after a warm-up decode each.

    The runtimes take turns round by round, so a change in the machine's load hits them
    alike, and each keeps its least disturbed round: on a shared machine the median of
    runs one after the other once ranked two runtimes the wrong way round.
    """
    for runtime in runtimes.values():
        runtime.decode(batch, widths)
    best = dict.fromkeys(runtimes, math.inf)
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.decode(batch, widths)
            best[name] = min(best[name], (time.perf_counter() - start) * 1000)
    return best


def preferred(timings: dict[str, float]) -> str:
    """The runtime ``auto`` keeps among those timed: the fastest ONNX Runtime file, unless
    another runtime takes at most :data:`AUTO_MARGIN` of its time (then the fastest).

    >>> preferred({"onnx": 20.0, "torchscript": 15.0})
    'onnx'
    >>> preferred({"onnx": 20.0, "torchscript": 13.0})
    'torchscript'
    >>> preferred({"onnx": 20.0, "onnx-int8": 17.0, "torchscript": 15.0})
    'onnx-int8'
    >>> preferred({"torchscript": 30.0})
    'torchscript'
    """
    fastest = min(timings, key=timings.__getitem__)
    onnx = [name for name in ONNX_RUNTIMES if name in timings]
    if not onnx:
        return fastest
    best_onnx = min(onnx, key=timings.__getitem__)
    return fastest if timings[fastest] <= AUTO_MARGIN * timings[best_onnx] else best_onnx


def choose_backend(
    model: StagedModel, threads: int | None, probe: tuple[np.ndarray, np.ndarray]
) -> tuple[Backend, dict[str, float]]:
    """The serving runtime ``auto`` keeps (:func:`preferred`) among those available, and
    every time measured on ``probe`` (:func:`best_decode_ms`)."""
    loaded: dict[str, Backend] = {}
    broken: dict[str, ModelLoadError] = {}
    for name in AUTO_CANDIDATES:
        if not model.runs_on(name):
            continue
        if (model.family, name) not in _RUNTIMES:
            continue  # e.g. a seq2seq model's int8 copy: only CTC models have an int8 runtime
        try:
            loaded[name] = load_backend(name, model, threads)
        except ImportError:
            continue  # e.g. an image without torch serves with ONNX Runtime alone
        except ModelLoadError as exc:  # e.g. a truncated int8 copy beside a sound model.onnx
            broken[name] = exc
    if not loaded:
        if broken:
            raise next(iter(broken.values()))  # all alike when what fails is the decoding's
        raise ModelLoadError(f"{model.path} has no ONNX or TorchScript file to run")
    for name, problem in broken.items():
        log.warning("auto leaves out the %s runtime: %s", name, problem)
    timings = best_decode_ms(dict(loaded), *probe, rounds=AUTO_ROUNDS)
    return loaded[preferred(timings)], timings


def auto_backend(
    model: StagedModel,
    threads: int | None,
    probe: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[Backend, dict[str, float], bool]:
    """``auto``: the runtime measured fastest for this model, threads and machine, and the
    timings of that measurement; measured now (on ``probe()``) unless the cache remembers it.
    The third value says whether the choice came from the cache."""
    remembered = remembered_choice(model, threads)
    if remembered is not None:
        try:
            backend = load_backend(remembered["backend"], model, threads)
            return backend, dict(remembered["timings_ms"]), True
        except (ImportError, ModelLoadError) as exc:  # e.g. torch uninstalled since: measure
            log.info("cached backend choice %s unusable: %s", remembered["backend"], exc)
    backend, timings = choose_backend(model, threads, probe())
    cache.write_backend_choice(
        _choice_key(model, threads),
        backend.name,
        timings,
        model_version=model.version,
        threads=threads,
    )
    return backend, timings, False


def _choice_key(model: StagedModel, threads: int | None) -> str:
    """Where the cache keeps ``auto``'s choice for ``model`` at ``threads`` on this machine."""
    return cache.backend_choice_key(model, threads, AUTO_CANDIDATES, AUTO_RULE)


def remembered_choice(model: StagedModel, threads: int | None) -> dict[str, Any] | None:
    """What ``auto`` chose for ``model`` at ``threads`` on this machine, if the cache keeps it:
    ``{"backend", "timings_ms", "measured_at", ...}``."""
    remembered = cache.read_backend_choice(_choice_key(model, threads))
    return remembered if remembered and remembered["backend"] in AUTO_CANDIDATES else None
