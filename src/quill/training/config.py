"""Run configuration: YAML files under ``configs/`` + ``key=value`` overrides -> one dict.

A config file may name a parent with ``extends: other.yaml`` (relative to the file), so the
tiny test config and sweep configs restate only what differs. Everything is merged over
:data:`DEFAULTS`, so a resolved config always has every key the trainer reads; the resolved
config is what a run records and what a checkpoint stores, so a run can be repeated from it.

Overrides use dotted keys and YAML values (``optim.lr=3e-4``, ``trainer.devices=2``,
``model.config.channels=[32,64]``). Overriding a key that does not exist is an error naming
the closest known keys, because a typo that silently does nothing wastes a training run; a
leading ``+`` (``+model.config.extra=1``) adds a new key on purpose. The sections that are
config dataclasses (:data:`SCHEMA_SECTIONS`: ``data.preprocess``, ``data.augment``,
``model.config``) know every field of their class, so ``data.preprocess.max_width=1024``
needs no ``+`` even though the config only lists the fields it changes; in a file, a key
such a class does not have (``data.preprocess.hieght``) is an error naming the allowed ones.

The values a run cannot start without are checked too (:data:`VALUE_RULES`, ``model.name``),
so ``optim.lr=fast`` or ``data.batch_size: eight`` is a one-line error naming the key when the
config is resolved, not a traceback from torch or Lightning after a run was opened.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quill.errors import ConfigError
from quill.preprocess import PreprocessConfig
from quill.strict_dict import field_names, strict_from_dict, unknown_key_message

#: Every key the training code reads, with its default. Config files override these.
DEFAULTS: dict[str, Any] = {
    "seed": 1234,
    # intra-op CPU threads (None: torch's default); set 1 per process on a busy machine
    "threads": None,
    # init_from: a .ckpt or staged model directory whose weights the run starts from;
    # vocabulary: the character set (quill.vocab.VOCABULARIES: ascii, latin)
    "model": {"name": "ctc_line", "config": {}, "init_from": None, "vocabulary": "ascii"},
    "data": {
        # each source: {path: DIR, weight: W}; weights mix sources within an epoch
        "sources": [],
        "preprocess": {"kind": "line", "height": 64},
        "batch_size": 16,
        # validation/test batch size (None: batch_size)
        "eval_batch_size": None,
        # loader processes; None: one per core but one, at most 4
        "num_workers": None,
        # true (default distortions), false, or a mapping of AugmentConfig fields
        "augment": True,
        # training samples drawn per epoch (None: as many as the train splits hold)
        "epoch_size": None,
        # line images through their ink cache, computed once per dataset version
        "cache": True,
        # where ink caches live (None: a .ink-cache folder inside each dataset)
        "cache_dir": None,
        # where cached batches are augmented: auto (the GPU when training on one), loader,
        # device
        "augment_on": "auto",
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        # warmup steps (int) or fraction of all steps (float < 1)
        "warmup": 0.05,
        # cosine | onecycle | constant
        "schedule": "cosine",
        "min_lr_ratio": 0.01,
        # seq2seq only: cross-entropy label smoothing
        "label_smoothing": 0.0,
    },
    # max_length None: the model's own max_output_length
    "decode": {"max_length": None, "beam_size": 1},
    "trainer": {
        "max_epochs": 20,
        "max_steps": -1,
        "max_time": None,
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",
        "num_nodes": 1,
        # auto: bf16-mixed on a GPU that supports it, 16-mixed on other GPUs, 32 on CPU
        "precision": "auto",
        "gradient_clip_val": 1.0,
        "accumulate_grad_batches": 1,
        "log_every_n_steps": 10,
        "check_val_every_n_epoch": 1,
        "val_check_interval": None,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "limit_test_batches": None,
        "overfit_batches": 0.0,
        "fast_dev_run": False,
        "deterministic": False,
        "enable_progress_bar": True,
    },
    "checkpoint": {"monitor": "val_cer", "mode": "min", "save_top_k": 3, "save_last": True},
    "early_stopping": {"enabled": True, "monitor": "val_cer", "mode": "min", "patience": 10},
    "tracking": {
        # mlflow | tensorboard | wandb | csv
        "logger": "mlflow",
        # None: $QUILL_TRACKING_URI, else an SQLite store under the project's mlruns/
        "tracking_uri": None,
        "experiment": "quill",
        "run_name": None,
        "tags": {},
        "system_metrics": True,
        "system_metrics_interval_s": 10.0,
        "prediction_table_every_n_epochs": 1,
        "prediction_table_samples": 16,
        "norms_every_n_steps": 50,
        # test the best checkpoint on the test split after fitting
        "test_after_fit": True,
    },
    "profile": {"enabled": False, "wait": 2, "warmup": 2, "active": 5},
    # teacher: a CTC .ckpt or staged model writing the run's characters, at its line height
    # and frame stride, whose reading at `shifts` (averaged) the run also learns, with
    # `weight` of the loss (quill.training.distill); None: labels only
    "distill": {"teacher": None, "shifts": [0, -2, 2], "weight": 0.5},
    # where checkpoints and run outputs go before they are uploaded as artifacts
    "output_dir": "outputs/runs",
}


#: Sections whose keys are the fields of a config dataclass (see :func:`schema_class`).
SCHEMA_SECTIONS = (("data", "preprocess"), ("data", "augment"), ("model", "config"))


@dataclass(frozen=True)
class NumberRule:
    """What a numeric value of the config must be: a whole number (a count) or any finite
    number, positive or at least 0, or one of ``also`` (a value that means "not set" or "no
    limit", e.g. null or Lightning's -1)."""

    whole: bool
    positive: bool
    also: tuple[Any, ...] = ()

    def problem(self, key: str, value: Any) -> str | None:
        """Why ``value`` cannot be ``key``'s (the one-line error), or None if it can.

        >>> NumberRule(whole=True, positive=True).problem("data.batch_size", "eight")
        "data.batch_size must be a whole number, got 'eight'"
        >>> NumberRule(whole=False, positive=True).problem("optim.lr", -0.01)
        'optim.lr must be a positive finite number, got -0.01'
        """
        if value in self.also:
            return None
        kind = "whole number" if self.whole else "number"
        alternatives = "".join(f" or {json.dumps(v)}" for v in self.also)
        # bool is an int to Python, but `batch_size: yes` is no count
        if isinstance(value, bool) or not isinstance(value, int if self.whole else int | float):
            return f"{key} must be a {kind}{alternatives}, got {value!r}"
        sign_ok = value > 0 if self.positive else value >= 0
        if not (math.isfinite(value) and sign_ok):
            size = "positive" if self.positive else "zero or positive"
            finite = "" if self.whole else " finite"
            return f"{key} must be a {size}{finite} {kind}{alternatives}, got {value!r}"
        return None


#: A count of things (at least 1), a rate (above 0) and an amount (0 or more).
COUNT = NumberRule(whole=True, positive=True)
RATE = NumberRule(whole=False, positive=True)
AMOUNT = NumberRule(whole=False, positive=False)

#: The numeric settings a run needs right, by dotted key: checked by :func:`check_values`
#: when a config is resolved, before any data is read or any run is opened.
VALUE_RULES: dict[str, NumberRule] = {
    "optim.lr": RATE,
    "optim.weight_decay": AMOUNT,
    # warmup steps (>= 1) or a fraction of all steps (< 1)
    "optim.warmup": AMOUNT,
    "optim.min_lr_ratio": AMOUNT,
    "data.batch_size": COUNT,
    "data.preprocess.height": NumberRule(whole=True, positive=True, also=(None,)),
    "data.eval_batch_size": NumberRule(whole=True, positive=True, also=(None,)),
    "data.epoch_size": NumberRule(whole=True, positive=True, also=(None,)),
    "trainer.max_epochs": NumberRule(whole=True, positive=True, also=(-1, None)),
    "trainer.max_steps": NumberRule(whole=True, positive=True, also=(-1,)),
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.num_nodes": COUNT,
    "trainer.gradient_clip_val": NumberRule(whole=False, positive=False, also=(None,)),
    "seed": NumberRule(whole=True, positive=False),
    "threads": NumberRule(whole=True, positive=True, also=(None,)),
    "data.num_workers": NumberRule(whole=True, positive=False, also=(None,)),
    # null: validate by val_check_interval alone
    "trainer.check_val_every_n_epoch": NumberRule(whole=True, positive=True, also=(None,)),
    # -1: keep every checkpoint; 0: none
    "checkpoint.save_top_k": NumberRule(whole=True, positive=False, also=(-1,)),
    # 0: stop at the first validation that does not improve
    "early_stopping.patience": NumberRule(whole=True, positive=False),
    "tracking.system_metrics_interval_s": RATE,
    "tracking.prediction_table_every_n_epochs": COUNT,
    "tracking.prediction_table_samples": NumberRule(whole=True, positive=False),
    "tracking.norms_every_n_steps": COUNT,
    "profile.wait": NumberRule(whole=True, positive=False),
    "profile.warmup": NumberRule(whole=True, positive=False),
    "profile.active": COUNT,
    "distill.weight": AMOUNT,
}


#: Settings with a fixed set of values, by dotted key: checked with :data:`VALUE_RULES`.
CHOICES: dict[str, tuple[Any, ...]] = {
    "optim.schedule": ("cosine", "onecycle", "constant"),
    "trainer.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    # "auto": bf16-mixed where the GPU supports it, else 32-true; the rest are Lightning's
    "trainer.precision": (
        "auto",
        "32-true",
        "16-mixed",
        "bf16-mixed",
        "16-true",
        "bf16-true",
        "64-true",
        "32",
        "16",
        "bf16",
        "64",
        32,
        16,
        64,
    ),  # fmt: skip
    "checkpoint.mode": ("min", "max"),
    "early_stopping.mode": ("min", "max"),
}

#: Switches the training code reads with ``bool()``, where any string (``false`` misspelt
#: ``flase``) would mean true: checked with :data:`VALUE_RULES`.
SWITCHES = (
    "checkpoint.save_last",
    "early_stopping.enabled",
    "tracking.system_metrics",
    "tracking.test_after_fit",
    "profile.enabled",
    "data.cache",
)

#: What every validation epoch logs, whatever the data (``HTRModule._evaluate``).
VALIDATION_METRICS = ("val_cer", "val_wer", "val_loss")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, recursing into nested dicts; lists are replaced whole.

    >>> deep_merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": 3}, "d": [2]})
    {'a': {'b': 3, 'c': 2}, 'd': [2]}
    """
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, following ``extends:`` chains (cycles are an error)."""
    return _read_yaml(Path(path), seen=())


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {[str(p) for p in seen]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return deep_merge(_read_yaml(path.parent / parent, (*seen, path)), data)


def parse_override(text: str) -> tuple[list[str], Any, bool]:
    """Split ``[+]a.b.c=value`` into (keys, YAML-parsed value, adds_new_key).

    >>> parse_override("optim.lr=3e-4")
    (['optim', 'lr'], 0.0003, False)
    >>> parse_override("+model.config.channels=[32, 64]")
    (['model', 'config', 'channels'], [32, 64], True)
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=3e-4)")
    adds = key.startswith("+")
    keys = key.lstrip("+").strip().split(".")
    if any(not k for k in keys):
        raise ConfigError(f"override {text!r} has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    # YAML 1.1 reads "1e-3" as a string; a number is what anyone typing it means.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if value.lower() not in ("nan", "inf", "-inf") else value
    return keys, value, adds


def did_you_mean(word: str, known: Iterable[Any]) -> str:
    """``"; did you mean lr?"``: the known names closest to a misspelt ``word``, or "".

    >>> did_you_mean("lrr", ["lr", "weight_decay"]), did_you_mean("zzz", ["lr"])
    ('; did you mean lr?', '')
    """
    close = difflib.get_close_matches(word, [str(k) for k in known], n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def set_dotted(config: dict[str, Any], keys: list[str], value: Any, *, add: bool = False) -> None:
    """Set ``config[k1][k2]... = value``; unknown keys are an error unless ``add``."""
    node = config
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if key not in node and not add:
            where = ".".join(keys[: depth + 1])
            hint = did_you_mean(key, node)
            raise ConfigError(
                f"unknown config key {where!r}{hint} (prefix the override with '+' to add it)"
            )
        if last:
            node[key] = value
        else:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(keys[: depth + 1])} is a value, not a section")
            node = child


def resolve_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """DEFAULTS <- config file (with its ``extends`` chain) <- overrides, as one dict.

    >>> cfg = resolve_config(overrides=["optim.lr=0.01", "trainer.max_epochs=2"])
    >>> cfg["optim"]["lr"], cfg["trainer"]["max_epochs"], cfg["optim"]["schedule"]
    (0.01, 2, 'cosine')
    """
    config = deep_merge(DEFAULTS, base or {})
    if path is not None:
        file_config = read_yaml(path)
        _check_known(file_config, config, str(path))
        config = deep_merge(config, file_config)
    for text in overrides:
        keys, value, add = parse_override(text)
        if not add and _is_schema_field(config, keys):
            _open_section(config, keys[:-1])
            add = True
        set_dotted(config, keys, value, add=add)
    check_values(config)
    return config


def check_values(config: Mapping[str, Any]) -> None:
    """Refuse a ``model.name`` no model is registered under, a value of :data:`VALUE_RULES`
    of the wrong type or sign, one not among its :data:`CHOICES`, and a ``data.augment`` or
    ``data.sources`` of the wrong shape, naming the key: found here, they cost nothing; found
    by torch or Lightning, after the data was read and a run opened.
    """
    from quill.models import MODEL_NAMES, model_config

    _check_sections(config, DEFAULTS)
    flat = flatten(config)
    name = flat.get("model.name")
    if name not in MODEL_NAMES:
        raise ConfigError(
            f"model.name {name!r} is not a model{did_you_mean(str(name), MODEL_NAMES)} "
            f"(known: {', '.join(MODEL_NAMES)})"
        )
    check_rules(flat, VALUE_RULES)
    try:
        model_config(name, **(config["model"].get("config") or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model.config does not fit model {name}: {exc} (a model.config written for "
            f"another model? give {name}'s own)"
        ) from exc
    for key, allowed in CHOICES.items():
        value = flat.get(key)
        if value not in allowed or isinstance(value, bool):
            shown = ", ".join(str(choice) for choice in allowed if isinstance(choice, str))
            raise ConfigError(f"{key} must be one of {shown}, got {value!r}")
    augment = config["data"].get("augment")
    if not isinstance(augment, bool | Mapping | None):
        raise ConfigError(f"data.augment must be true, false or a mapping, got {augment!r}")
    for key in SWITCHES:
        if not isinstance(flat.get(key), bool):
            raise ConfigError(f"{key} must be true or false, got {flat.get(key)!r}")
    sources = config["data"].get("sources")
    if not isinstance(sources, list):
        raise ConfigError(
            f"data.sources must be a list such as [{{path: DIR, weight: 1.0}}], got {sources!r}"
        )
    _check_monitor("checkpoint.monitor", config)
    _check_monitor("early_stopping.monitor", config)
    _check_distill(config["distill"])


def _check_distill(distill: Mapping[str, Any]) -> None:
    """A loss share beyond 1 would weigh the labels negatively; a shift is whole pixels."""
    if not 0 <= distill["weight"] <= 1:
        raise ConfigError(f"distill.weight must be between 0 and 1, got {distill['weight']!r}")
    shifts = distill["shifts"]
    if not isinstance(shifts, list) or not shifts:
        raise ConfigError(f"distill.shifts must be a list of pixel shifts, got {shifts!r}")
    for shift in shifts:
        if isinstance(shift, bool) or not isinstance(shift, int):
            raise ConfigError(f"distill.shifts must be whole numbers of pixels, got {shift!r}")


def _check_sections(
    config: Mapping[str, Any], defaults: Mapping[str, Any], prefix: str = ""
) -> None:
    """Refuse a section given as a value (``optim: 3``), naming it: the rules of its keys
    would otherwise report the first of them missing ("optim.lr must be a number, got
    None"), and code reading the section would fail on it."""
    for key, default in defaults.items():
        if not isinstance(default, Mapping):
            continue
        value = config.get(key)
        name = f"{prefix}{key}"
        if not isinstance(value, Mapping):
            keys = f" of {', '.join(default)}" if default else " of names to values"
            raise ConfigError(f"{name} must be a mapping{keys}, got {value!r}")
        _check_sections(value, default, f"{name}.")


def _check_monitor(key: str, config: Mapping[str, Any]) -> None:
    """Refuse a monitored metric that no validation logs: Lightning said so only after a
    whole epoch had trained, leaving a FAILED run."""
    monitor = flatten(config).get(key)
    if monitor in VALIDATION_METRICS:
        return  # logged whatever the sources (reading them is only needed for the others)
    known = logged_metrics(config)
    if monitor not in known:
        raise ConfigError(
            f"{key} {monitor!r} is not logged by training{did_you_mean(str(monitor), known)} "
            f"(it logs {', '.join(known)})"
        )


def logged_metrics(config: Mapping[str, Any]) -> list[str]:
    """The validation metrics a run of ``config`` logs each epoch (``HTRModule``):
    :data:`VALIDATION_METRICS`, ``val_cer_<source>`` per source, ``val_cer_unseen`` with an
    unseen-writers source and ``val_cer_select`` with a real (seen or unseen) one.

    The data and module layers are imported here, on first need: they bring torch, and
    resolving a config must stay quick.
    """
    from quill.data.datamodule import SourceSpec
    from quill.training.module import metric_key

    try:
        sources = [SourceSpec.parse(item) for item in config["data"]["sources"]]
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"data.sources: {exc}") from exc
    roles = {source.role for source in sources}
    return [
        *VALIDATION_METRICS,
        *(f"val_cer_{metric_key(source.name)}" for source in sources),
        *(["val_cer_unseen"] if "unseen" in roles else []),
        *(["val_cer_select"] if roles & {"seen", "unseen"} else []),
    ]


def check_rules(flat: Mapping[str, Any], rules: Mapping[str, NumberRule]) -> None:
    """Refuse the first value of a flattened config (:func:`flatten`) that breaks its rule,
    naming its key."""
    for key, rule in rules.items():
        problem = rule.problem(key, flat.get(key))
        if problem:
            raise ConfigError(problem)


def schema_class(config: Mapping[str, Any], section: tuple[str, ...]) -> type | None:
    """The config dataclass behind ``section`` of ``config`` (one of
    :data:`SCHEMA_SECTIONS`), or None for a free-form section or an unknown model name.

    The augmentation and model classes are imported here, on first need, not at the top:
    they bring scipy and torch, and resolving a config must stay quick.

    >>> schema_class({}, ("data", "preprocess")).__name__
    'PreprocessConfig'
    """
    if section == ("data", "preprocess"):
        return PreprocessConfig
    if section == ("data", "augment"):
        from quill.data.augment import AugmentConfig

        return AugmentConfig
    if section == ("model", "config"):
        from quill.models import MODEL_NAMES, model_config

        name = config.get("model", {}).get("name")
        return type(model_config(name)) if name in MODEL_NAMES else None
    return None


def _is_schema_field(config: Mapping[str, Any], keys: list[str]) -> bool:
    """Whether ``keys`` names a field of a dataclass section (``data.preprocess.height``),
    which may be overridden without ``+`` though the config does not list it; a key the
    class lacks is an error naming the allowed ones (``+`` still adds one on purpose)."""
    section = tuple(keys[:-1])
    if section not in SCHEMA_SECTIONS:
        return False
    node: Any = config
    for key in section:  # a field the config already holds needs no schema
        node = node.get(key) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping) and keys[-1] in node:
        return False
    schema = schema_class(config, section)
    if schema is None:
        return False
    fields = field_names(schema)
    if keys[-1] not in fields:
        where = f"override of {'.'.join(section)}"
        raise ConfigError(unknown_key_message(where, [keys[-1]], fields))
    return True


def _open_section(config: dict[str, Any], section: list[str]) -> None:
    """Make ``section`` a mapping a field can be set in: ``data.augment: true`` (default
    distortions) becomes ``{}`` (the same defaults); ``false`` stays an error, as turning
    augmentation on should be said, not implied by one field."""
    parent = config
    for key in section[:-1]:
        parent = parent.setdefault(key, {})
    current = parent.get(section[-1])
    if current is True:
        parent[section[-1]] = {}
    elif not isinstance(current, dict):
        name, shown = ".".join(section), yaml.safe_dump(current).splitlines()[0]
        raise ConfigError(
            f"{name} is {shown}: set {name}=true or {name}={{FIELD: VALUE}} to override "
            "one of its fields"
        )


def _check_known(data: Mapping[str, Any], known: Mapping[str, Any], where: str) -> None:
    """Reject sections and keys no code reads, and fields the ``data.preprocess`` and
    ``data.augment`` classes lack; ``model.config`` is checked by the model's own config class
    when the model is built (its fields depend on ``model.name``)."""
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3)
            raise ConfigError(f"{where}: unknown section {key!r}; known: {close or list(known)}")
        if not (isinstance(value, Mapping) and isinstance(known[key], Mapping)):
            continue
        for sub in value:
            if sub not in known[key]:
                hint = did_you_mean(str(sub), known[key])
                raise ConfigError(f"{where}: unknown key {key}.{sub}{hint}")
    data_section = data.get("data")
    for sub in ("preprocess", "augment"):
        value = data_section.get(sub) if isinstance(data_section, Mapping) else None
        if isinstance(value, Mapping):
            schema = schema_class(data, ("data", sub))
            if schema is not None:
                strict_from_dict(schema, value, f"{where}: data.{sub}")


def save_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write the resolved config as YAML (key order kept) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values, the form trackers store parameters in.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': 1, 'a.c': [1, 2], 'd': None}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
