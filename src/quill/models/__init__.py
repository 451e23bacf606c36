"""Plain nn.Module recognition models, their configs and decoders.

``build_model(name, num_classes, **config)`` is the one way training, staging and tests
create a model, so a checkpoint's ``model_name`` + ``model_config`` always rebuild it. Model
modules are imported on first use: ``import quill.models`` stays free of torch, and the
ONNX inference path can use :mod:`quill.models.decoding` without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from quill.models.config import ModelConfig

#: name -> (module, model class, config class)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "ctc_line": ("quill.models.ctc_line", "CTCLineModel", "CTCLineConfig"),
    "line_cnn_transformer": (
        "quill.models.line_cnn_transformer",
        "LineCNNTransformer",
        "LineCNNTransformerConfig",
    ),
    "resnet_transformer": (
        "quill.models.resnet_transformer",
        "ResnetTransformer",
        "ResnetTransformerConfig",
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _lookup(name: str) -> tuple[type[nn.Module], type[ModelConfig]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    module_name, model_class, config_class = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, model_class), getattr(module, config_class)


def model_config(name: str, **config: Any) -> ModelConfig:
    """The config dataclass of model ``name`` built from ``config`` (unknown keys raise).

    >>> model_config("ctc_line", hidden=128).hidden
    128
    """
    _, config_class = _lookup(name)
    return config_class.from_dict(config)


def build_model(name: str, num_classes: int, **config: Any) -> nn.Module:
    """Create model ``name`` for ``num_classes`` output tokens (``len(tokenizer)``).

    ``config`` holds fields of the model's config dataclass, e.g. the ``model_config`` dict
    of a checkpoint; ``model.config.to_dict()`` gives them back.

    >>> model = build_model("ctc_line", num_classes=10, hidden=64)
    >>> model.family, model.config.hidden
    ('ctc', 64)
    """
    model_class, config_class = _lookup(name)
    return model_class(num_classes, config_class.from_dict(config))


__all__ = ["MODEL_NAMES", "build_model", "model_config"]
