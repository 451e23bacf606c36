"""The staged model folder: its metadata (typed), how it is read and written, its version.

A staged model is a self-contained folder that inference reads and nothing else (file names:
:mod:`quill.model_files`)::

    quill-model.json   metadata (:class:`StagedModel`): tokenizer, preprocessing, decoding,
                       lineage, exported files, parity, metrics
    model.onnx         CTC graph (seq2seq: encoder.onnx + decoder_step.onnx), ONNX Runtime
    model-int8.onnx    the CTC graph with int8 matrix products (optional: ``quill model
                       quantize``), the ``onnx-int8`` runtime
    model.pt           TorchScript: the torchscript runtime, the eager one's weights,
                       fine-tuning's starting weights
    lm.json            the character language model its decoding names (optional)
    identify.json      with other languages (``quill lm language``): a small LM of the main
    lm-LANG.json       language's text that recognises its lines, and per other language
    identify-LANG.json its beam-search LM and the small LM that recognises its lines
    MODEL_CARD.md      the model card (``quill.staging.model_card``)

This module sits near the bottom of the layers (it needs only the vocabulary and the
preprocessing config), so that training (``--init-from`` a staged model), the runtimes,
staging (which writes the folder) and inference (which reads it) share one definition.

**Version.** ``NAME-<12 hex>``, a SHA-256 of the weights (the ONNX files, the int8 copy
included), the preprocessing,
the vocabulary and the decoding (with the language model files it uses): a model that reads
differently gets another version. :meth:`StagedModel.set_decoding` (``quill lm tune
--write``) gives a new version when the decoding changes. Loading never recomputes the
version: a folder keeps the one it records (the shipped models' versions were recorded when
the version hashed the ONNX file alone).

**Strict.** ``quill-model.json`` is parsed strictly: a key this Quill does not know (a typo, or
a folder written by a newer format) is a :class:`ModelLoadError` naming it, never silently
dropped; so is a decoding setting that is not one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quill.errors import ConfigError, QuillError
from quill.model_files import IDENTIFIER_FILE, LM_FILE, METADATA_FILE, MODEL_CARD_FILE
from quill.preprocess import PreprocessConfig
from quill.strict_dict import strict_from_dict, unknown_key_message
from quill.vocab import Tokenizer

#: ``format_version`` of the metadata this code writes and reads.
FORMAT_VERSION = 1
FAMILIES = ("ctc", "seq2seq")


class ModelLoadError(QuillError, RuntimeError):
    """A staged model's files are missing or unreadable; the message names the file."""

    code = "model_load_failed"


@dataclass(frozen=True)
class LanguageDecoding:
    """One more language a CTC model's beam search reads (``quill lm language``): the LM file
    its lines are decoded with and that LM's weights, and the small LM file that recognises
    its lines (:class:`quill.models.decoding.LanguageOption`). Files are relative to the
    model folder."""

    language: str
    lm: str
    identifier: str
    lm_weight: float
    insertion_bonus: float
    #: The language's word list file and what a word missing from it costs (``quill lm
    #: words``; :mod:`quill.models.lexicon`).
    words: str | None = None
    word_penalty: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LanguageDecoding:
        try:
            return strict_from_dict(cls, data, where)
        except (ConfigError, TypeError) as exc:
            raise ModelLoadError(str(exc)) from exc


#: ``with_decoding_method``'s name for the model's own decoding read from one network pass.
SINGLE_PASS = "single-pass"
#: The largest vertical shift a decoding may ask for, in pixels of the model's input (an
#: eighth of a 64-pixel line): a letter moved further is cut off at the window's edge.
MAX_SHIFT = 8


def check_shifts(shifts: Any) -> tuple[int, ...]:
    """A decoding's ``shifts`` as a tuple, or a ValueError saying what is wrong with them.

    >>> check_shifts([0, -2, 2])
    (0, -2, 2)
    """
    if not isinstance(shifts, list | tuple) or not shifts:
        raise ValueError("shifts must be a list of at least one shift (0: the image as it is)")
    for value in shifts:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"shifts must be whole pixels, got {value!r}")
        if abs(value) > MAX_SHIFT:
            raise ValueError(f"a shift of {value} pixels is more than the {MAX_SHIFT} allowed")
    if len(set(shifts)) != len(shifts):
        raise ValueError(f"shifts {list(shifts)} repeat a shift")
    return tuple(shifts)


def _given(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without those left out (None)."""
    return {key: value for key, value in settings.items() if value is not None}


def model_file_problem(name: object) -> str | None:
    """Why ``name`` cannot name a file of the model folder (None if it can, or is absent): a
    decoding names its LM files by their names in the folder, and a path out of it
    ("../../etc/passwd") was read as a language model.

    >>> model_file_problem("lm-fr.json") is None, model_file_problem("../lm.json")
    (True, "'../lm.json' is not a file name in the model folder")
    """
    if name is None:
        return None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        return f"{name!r} is not a file name in the model folder"
    return None


@dataclass(frozen=True)
class DecodingConfig:
    """A CTC model's ``decoding`` section: how its frames become text (``quill lm tune``).

    A setting left out (None) takes :class:`quill.models.decoding.CTCDecoder`'s default;
    ``lm`` is a file name relative to the model folder.

    >>> DecodingConfig.from_dict({"method": "beam", "lm": "lm.json"}).to_dict()
    {'method': 'beam', 'lm': 'lm.json'}
    """

    method: str | None = None
    beam_width: int | None = None
    prune_log_prob: float | None = None
    lm_weight: float | None = None
    insertion_bonus: float | None = None
    rank_gap: float | None = None
    lm: str | None = None
    #: Other languages (``quill lm language``): the small LM file that recognises the main
    #: language's lines, the margin another language must win by, and those languages.
    identifier: str | None = None
    identify_margin: float | None = None
    languages: tuple[LanguageDecoding, ...] | None = None
    #: Vertical shifts in pixels of the line image whose network outputs are averaged before
    #: decoding (``quill lm shifts``; :mod:`quill.inference.shifts`); None reads one pass.
    shifts: tuple[int, ...] | None = None
    #: The main language's word list file and what a word of a reading missing from it costs
    #: (``quill lm words``; :mod:`quill.models.lexicon`). ``quill lm tune --write`` leaves
    #: it out: its weights were measured without it.
    words: str | None = None
    word_penalty: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "decoding") -> DecodingConfig:
        """Strict: a key that is not a setting is a :class:`ModelLoadError`."""
        if not isinstance(data, Mapping):
            raise ModelLoadError(f"{where}: the decoding section must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelLoadError(f"{where}: unknown decoding settings {unknown}")
        values = dict(data)
        if values.get("languages") is not None:
            if not isinstance(values["languages"], list | tuple):
                raise ModelLoadError(f"{where}: 'languages' must be a list")
            values["languages"] = tuple(
                LanguageDecoding.from_dict(item, f"{where}.languages[{i}]")
                for i, item in enumerate(values["languages"])
            )
        if values.get("languages") and values.get("identifier") is None:
            raise ModelLoadError(f"{where}: other languages need an 'identifier' file")
        files = {key: values.get(key) for key in ("lm", "identifier", "words")}
        for i, item in enumerate(values.get("languages") or ()):
            files |= {f"languages[{i}].lm": item.lm, f"languages[{i}].identifier": item.identifier}
            files |= {f"languages[{i}].words": item.words}
        for key, name in files.items():
            problem = model_file_problem(name)
            if problem:
                raise ModelLoadError(f"{where}.{key}: {problem}")
        if values.get("shifts") is not None:
            try:
                values["shifts"] = check_shifts(values["shifts"])
            except (TypeError, ValueError) as exc:
                raise ModelLoadError(f"{where}.shifts: {exc}") from exc
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The settings given (None left out), in field order, as JSON holds them."""
        return (
            _given(dataclasses.asdict(self))
            | (
                {"languages": [_given(dataclasses.asdict(item)) for item in self.languages]}
                if self.languages is not None
                else {}
            )
            | ({"shifts": list(self.shifts)} if self.shifts is not None else {})
        )

    def decoder_settings(self) -> dict[str, Any]:
        """Keyword arguments of ``CTCDecoder`` (all but the LM and word list files, the
        languages and the shifts, which are the network's)."""
        others = ("lm", "identifier", "languages", "shifts", "words")
        return {k: v for k, v in self.to_dict().items() if k not in others}

    def files(self) -> list[str]:
        """Every language model and word list file the decoding reads (beam search only),
        in order."""
        if self.method != "beam":
            return []
        names = [self.lm, self.identifier, self.words]
        for language in self.languages or ():
            names += [language.lm, language.identifier, language.words]
        return [name for name in names if name is not None]

    def word_lists(self) -> list[str]:
        """The word list files among :meth:`files` (the rest are language models)."""
        words = [self.words, *(language.words for language in self.languages or ())]
        return [name for name in words if name is not None and name in self.files()]

    def keeping_tunings_of(self, other: DecodingConfig | None) -> DecodingConfig:
        """This decoding (a re-tuned main LM) with what the other tunings chose in ``other``:
        its shifts (``quill lm shifts``), which the tuning read the network with, when this
        one names none; its languages (``quill lm language``), when this one names none and
        is a beam search weighing an LM."""
        if other is None:
            return self
        kept = self if self.shifts is not None else dataclasses.replace(self, shifts=other.shifts)
        if kept.languages is not None or kept.method != "beam" or kept.lm_weight is None:
            return kept
        return dataclasses.replace(
            kept,
            identifier=other.identifier,
            identify_margin=other.identify_margin,
            languages=other.languages,
        )

    @property
    def uses_lm(self) -> bool:
        """Whether decoding reads the language model file (beam search naming one)."""
        return self.method == "beam" and self.lm is not None


@dataclass(frozen=True)
class Lineage:
    """Where a staged model came from: its training run, checkpoint and data."""

    run_id: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    dataset_version: str | None = None
    #: The weights the run started from, when it was fine-tuned (``--init-from``).
    initialised_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BackendFiles:
    """What one export wrote (file names in the folder) and how (exporter, opset, ...)."""

    files: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> BackendFiles:
        files = data.get("files") if isinstance(data, Mapping) else None
        if not isinstance(files, list | tuple) or not all(isinstance(f, str) for f in files):
            raise ModelLoadError(f"{where}: expected a list of file names under 'files'")
        return cls(tuple(files), {k: v for k, v in data.items() if k != "files"})

    def to_dict(self) -> dict[str, Any]:
        return {"files": list(self.files), **self.details}


@dataclass(frozen=True)
class StagedModel:
    """A staged model folder: ``path`` and the typed content of its ``quill-model.json``.

    Read with :meth:`load`; write with :meth:`save` (``quill stage``) or
    :meth:`set_decoding` (``quill lm tune --write``). Field order is the JSON's key order.
    """

    path: Path
    name: str
    version: str
    family: str
    model_name: str
    model_config: dict[str, Any]
    tokenizer: Tokenizer
    preprocess: PreprocessConfig
    backends: dict[str, BackendFiles]
    parameters: int = 0
    lineage: Lineage = field(default_factory=Lineage)
    #: The ``data`` section of the training run's config (a dict, or a description).
    training_data: str | dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    quill_version: str = "unknown"
    runtime_versions: dict[str, str] = field(default_factory=dict)
    #: A seq2seq model's longest output, in tokens.
    max_output_length: int | None = None
    #: ``quill.staging.parity.ParityReport.to_dict()``: how each export compared with eager.
    parity: dict[str, Any] | None = None
    #: A CTC model's decoding; None: greedy.
    decoding: DecodingConfig | None = None
    format_version: int = FORMAT_VERSION

    # -- reading ----------------------------------------------------------------------------
    @staticmethod
    def is_staged(path: str | Path) -> bool:
        """Whether ``path`` is a folder with a ``quill-model.json``."""
        return (Path(path) / METADATA_FILE).is_file()

    @classmethod
    def load(cls, path: str | Path) -> StagedModel:
        """Read the folder's ``quill-model.json``; :class:`ModelLoadError` if it is missing,
        corrupt or not this format."""
        path = Path(path)
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise ModelLoadError(f"{path} is not a staged model: {METADATA_FILE} is missing")
        try:
            data = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{meta_path} is corrupt: {exc}") from exc
        return cls.from_dict(path, data)

    @classmethod
    def from_dict(cls, path: str | Path, data: Mapping[str, Any]) -> StagedModel:
        """The model at ``path`` described by ``data`` (the JSON's content), strictly."""
        path = Path(path)
        where = str(path / METADATA_FILE)
        if not isinstance(data, Mapping):
            raise ModelLoadError(f"{where} is corrupt: expected a JSON object")
        # a newer format's keys are unknown here: its version is what to say first
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ModelLoadError(
                f"{where} has format_version {version!r}; this Quill reads {FORMAT_VERSION}"
            )
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "path"]
        unknown = [str(key) for key in data if key not in allowed]
        if unknown:
            raise ModelLoadError(
                f"{where}: " + unknown_key_message(METADATA_FILE, unknown, allowed)
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ModelLoadError(f"{where} lacks {', '.join(map(repr, missing))}")
        if data["family"] not in FAMILIES:
            raise ModelLoadError(f"{path}: unknown model family {data['family']!r}")
        try:
            tokenizer = Tokenizer.from_dict(data["tokenizer"])
            preprocess = PreprocessConfig.from_dict(data["preprocess"], f"{where}: preprocess")
            lineage = strict_from_dict(Lineage, data.get("lineage") or {}, f"{where}: lineage")
        except (ConfigError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{where}: {exc}") from exc
        backends = data["backends"]
        if not isinstance(backends, Mapping):
            raise ModelLoadError(f"{where}: 'backends' must map runtimes to their files")
        try:
            return cls._built(path, data, tokenizer, preprocess, lineage, backends, where)
        except (TypeError, ValueError) as exc:  # e.g. "parameters": "lots", "metrics": [1]
            raise ModelLoadError(f"{where}: a value of the wrong type: {exc}") from exc

    @classmethod
    def _built(
        cls,
        path: Path,
        data: Mapping[str, Any],
        tokenizer: Tokenizer,
        preprocess: PreprocessConfig,
        lineage: Lineage,
        backends: Mapping[str, Any],
        where: str,
    ) -> StagedModel:
        """:meth:`from_dict`'s model, its sections already read; the plain values converted
        here raise TypeError or ValueError for a value of the wrong type."""
        decoding = data.get("decoding")
        max_length = data.get("max_output_length")
        return cls(
            path=path,
            name=str(data["name"]),
            version=str(data["version"]),
            family=data["family"],
            model_name=str(data["model_name"]),
            model_config=dict(data["model_config"]),
            tokenizer=tokenizer,
            preprocess=preprocess,
            backends={
                name: BackendFiles.from_dict(spec, f"{where}: backends.{name}")
                for name, spec in backends.items()
            },
            parameters=int(data.get("parameters", 0)),
            lineage=lineage,
            training_data=data.get("training_data"),
            metrics=dict(data.get("metrics") or {}),
            created_at=str(data.get("created_at", "")),
            quill_version=str(data.get("quill_version", "unknown")),
            runtime_versions=dict(data.get("runtime_versions") or {}),
            max_output_length=None if max_length is None else int(max_length),
            parity=data.get("parity"),
            decoding=None
            if decoding is None
            else DecodingConfig.from_dict(decoding, f"{where}: decoding"),
            format_version=FORMAT_VERSION,
        )

    def to_dict(self) -> dict[str, Any]:
        """The content of ``quill-model.json`` (what :meth:`from_dict` reads back)."""
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "family": self.family,
            "model_name": self.model_name,
            "model_config": self.model_config,
            "parameters": self.parameters,
            "tokenizer": self.tokenizer.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "backends": {name: spec.to_dict() for name, spec in self.backends.items()},
            "lineage": self.lineage.to_dict(),
            "training_data": self.training_data,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "quill_version": self.quill_version,
            "runtime_versions": self.runtime_versions,
        }
        if self.max_output_length is not None:
            data["max_output_length"] = self.max_output_length
        if self.parity is not None:
            data["parity"] = self.parity
        if self.decoding is not None:
            data["decoding"] = self.decoding.to_dict()
        return data

    # -- the folder's files -----------------------------------------------------------------
    @property
    def metadata_path(self) -> Path:
        return self.path / METADATA_FILE

    @property
    def card_path(self) -> Path:
        return self.path / MODEL_CARD_FILE

    def files_of(self, backend: str) -> list[Path]:
        """The files runtime ``backend`` (``onnx``, ``onnx-int8`` or ``torchscript``) reads;
        [] if none."""
        spec = self.backends.get(backend)
        return [self.path / name for name in spec.files] if spec else []

    def runs_on(self, backend: str) -> bool:
        """Whether the folder holds every file runtime ``backend`` reads (a copy of the
        folder may have lost some)."""
        files = self.files_of(backend)
        return bool(files) and all(path.is_file() for path in files)

    def weight_files(self) -> list[Path]:
        """The files whose bytes the version hashes: the ONNX export (all of its files) and
        its int8 copy where there is one (``auto`` may serve with either)."""
        return sorted(self.files_of("onnx")) + self.files_of("onnx-int8")

    @property
    def lm_path(self) -> Path | None:
        """The language model file the decoding reads, if it reads one."""
        if self.decoding is None or not self.decoding.uses_lm or self.decoding.lm is None:
            return None
        return self.path / self.decoding.lm

    # -- version ------------------------------------------------------------------------------
    def content_version(self) -> str:
        """``NAME-<12 hex>`` of the weights, preprocessing, vocabulary and decoding (with its
        language model file): what this model's version is when it is (re)written."""
        digest = hashlib.sha256()
        for path in self.weight_files():
            _hash_file(digest, path)
        digest.update(self._decoding_digest().encode())
        return f"{self.name}-{digest.hexdigest()[:12]}"

    def _decoding_digest(self) -> str:
        """A digest of how the frames become text: preprocessing and vocabulary (what the
        frames mean) and the decoding, with the bytes of the LM file it uses."""
        digest = hashlib.sha256()
        described = {
            "preprocess": self.preprocess.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "decoding": {"method": "greedy", **(self.decoding or DecodingConfig()).to_dict()},
        }
        digest.update(json.dumps(described, sort_keys=True).encode())
        for path in self.decoding_files():
            if path.is_file():
                _hash_file(digest, path)
        return digest.hexdigest()

    def decoding_files(self) -> list[Path]:
        """Every language model and word list file the decoding reads: the main LM and word
        list, and with other languages the identifiers and their LMs and lists (greedy
        decoding reads none)."""
        if self.decoding is None:
            return []
        return [self.path / name for name in self.decoding.files()]

    # -- writing ------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write ``quill-model.json`` (atomically: readers see the old or the new file)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        _write_atomic(self.metadata_path, text)
        return self.metadata_path

    def set_decoding(self, decoding: DecodingConfig, lm: Path | None = None) -> StagedModel:
        """Make ``decoding`` this folder's decoding and return the model as now saved.

        ``lm`` (a language model file for a beam search that uses one) is copied in as
        ``lm.json`` and the decoding names it. The version changes when the model now decodes
        differently (other settings, or another LM file); writing the same decoding again
        keeps it.
        """
        before = self._decoding_digest()
        if lm is not None:
            decoding = dataclasses.replace(decoding, lm=self._copy_in(lm, LM_FILE))
        return self._saved_with(decoding, before)

    def set_languages(
        self,
        identifier: Path,
        margin: float,
        languages: list[tuple[LanguageDecoding, Path, Path]],
    ) -> StagedModel:
        """Make beam search read other languages too and return the model as now saved.

        ``identifier`` (a small LM of the main language's text) is copied in as
        ``identify.json``; each language's ``(settings, LM file, identifier file)`` as
        ``lm-LANG.json`` and ``identify-LANG.json``. A language the decoding reads already
        is replaced, others are kept. Needs a beam search with an LM (``quill lm tune``).
        """
        decoding = self.decoding
        if decoding is None or not decoding.uses_lm:
            raise ModelLoadError(
                f"{self.path}: other languages need a beam search with a language model "
                "first (quill lm tune --write)"
            )
        before = self._decoding_digest()
        kept = {item.language: item for item in decoding.languages or ()}
        for language, lm, language_identifier in languages:
            name = language.language
            kept[name] = dataclasses.replace(
                language,
                lm=self._copy_in(lm, f"lm-{name}.json"),
                identifier=self._copy_in(language_identifier, f"identify-{name}.json"),
            )
        decoding = dataclasses.replace(
            decoding,
            identifier=self._copy_in(identifier, IDENTIFIER_FILE),
            identify_margin=margin,
            languages=tuple(kept[name] for name in sorted(kept)),
        )
        return self._saved_with(decoding, before)

    def set_words(
        self, words: Path | None, penalty: float, language: str | None = None
    ) -> StagedModel:
        """Make beam search check its readings of ``language`` (None: the main one) against
        the word list ``words``, copied in as ``words.txt`` (``words-LANG.txt``), each word
        missing from it costing ``penalty``; None (or a penalty of 0) reads without a list.
        Returns the model as now saved."""
        decoding = self.decoding
        if decoding is None or decoding.method != "beam":
            raise ModelLoadError(
                f"{self.path}: a word list checks beam search's readings; give the model a beam "
                "search first (quill lm tune --write)"
            )
        before = self._decoding_digest()
        name = None
        if words is not None and penalty > 0:
            name = self._copy_in(
                words, "words.txt" if language is None else f"words-{language}.txt"
            )
        kept = None if name is None else penalty
        if language is None:
            return self._saved_with(
                dataclasses.replace(decoding, words=name, word_penalty=kept), before
            )
        others = {item.language: item for item in decoding.languages or ()}
        if language not in others:
            raise ModelLoadError(
                f"{self.path} reads no language {language!r} (it reads {sorted(others) or 'none'} "
                "besides its main one): add it first (quill lm language --write)"
            )
        others[language] = dataclasses.replace(others[language], words=name, word_penalty=kept)
        languages = tuple(others[name] for name in sorted(others))
        return self._saved_with(dataclasses.replace(decoding, languages=languages), before)

    def _copy_in(self, source: Path, name: str) -> str:
        """Copy ``source`` into the folder as ``name`` (nothing to copy when it is that file
        already) and return ``name``, for the decoding to refer to."""
        if source.resolve() != (self.path / name).resolve():
            shutil.copyfile(source, self.path / name)
        return name

    def _saved_with(self, decoding: DecodingConfig, before: str) -> StagedModel:
        """This model decoding with ``decoding``, saved: a new version when it reads otherwise
        than ``before`` (the decoding digest taken before any file was copied in), the same
        version when it reads the same."""
        updated = dataclasses.replace(self, decoding=decoding)
        if updated._decoding_digest() != before:
            updated = dataclasses.replace(updated, version=updated.content_version())
        updated.save()
        return updated

    def with_decoding_method(self, method: str) -> StagedModel:
        """In memory only: this model decoding with ``method`` (``greedy`` or ``beam``) and
        its other decoding settings, or (``single-pass``) its own decoding of one network
        pass instead of its shifts, for a caller that overrides how to decode."""
        decoding = self.decoding or DecodingConfig()
        if method == SINGLE_PASS:
            decoding = dataclasses.replace(decoding, shifts=None)
        else:
            decoding = dataclasses.replace(decoding, method=method)
        return dataclasses.replace(self, decoding=decoding)


_REQUIRED = (
    "name",
    "version",
    "family",
    "model_name",
    "model_config",
    "tokenizer",
    "preprocess",
    "backends",
)


def _hash_file(digest: Any, path: Path) -> None:
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)


def _write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
