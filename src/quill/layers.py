"""The layers of Quill's packages, bottom first: the one statement of who may import whom.

A module may import from its own package and from the packages of lower floors, never from
a higher floor, and never from another package of its own floor (the packages of one floor
are independent of each other). Imports inside functions and under ``TYPE_CHECKING`` count
too. ``tests/core/test_layers.py`` reads every module's syntax tree and fails on an import
against this order, naming the file and line; docs/architecture.md explains each floor.

Data flows up the floors: a dataset (``data``) trains a network (``models``, ``training``),
which staging exports into a staged model folder (``staged_model``, run by ``runtimes``) that
inference loads, serving answers with and monitoring watches; annotation turns what
monitoring collected back into data. A dependency that would run down this list (staging
needing monitoring's promotion gate, the runtimes needing staging's parity timer) means the
code is in the wrong floor: move it down, not the import.
"""

from __future__ import annotations

#: Floors, bottom first. Each name is a package (``quill/NAME/``) or a module
#: (``quill/NAME.py``) directly under ``quill``.
LAYERS: tuple[tuple[str, ...], ...] = (
    # foundations: exceptions and exit codes, the staged folder's file names, this list,
    # the compiled part of the paper estimate (C, no imports); the cores this process may use;
    # whether a server can listen on a host and port; short digests naming cached things
    ("errors", "model_files", "layers", "_paper", "cores", "ports", "digest"),
    # strict config dicts; the character set and tokenizer
    ("strict_dict", "vocab"),
    # image normalisation shared by training and inference; CER/WER and slices
    ("preprocess", "evaluation"),
    # the staged model folder's metadata and version
    ("staged_model",),
    # networks, decoders, export graphs; datasets, readers, synthetic data
    ("models", "data"),
    # training runs and checkpoints; the ONNX/TorchScript/eager runtimes of a staged model
    ("training", "runtimes"),
    # checkpoint -> staged model: export, parity, model card, registry, promotion gate
    ("staging",),
    # Recognizer.predict, quill predict, the language model tools
    ("inference",),
    # prediction store, drift, report card, shadow runs
    ("monitoring",),
    # REST API, Lambda, web app; Label Studio round trip
    ("serving", "annotation"),
    # benchmarks against other systems, over every layer
    ("bench",),
    # the quill command, which loads every layer's commands
    ("cli",),
)


def floor_of(name: str) -> int:
    """The floor (0 = bottom) of a top-level package or module name, e.g. ``staging``.

    >>> floor_of("runtimes") < floor_of("staging") < floor_of("inference")
    True
    """
    for index, floor in enumerate(LAYERS):
        if name in floor:
            return index
    raise KeyError(f"quill.{name} is in no floor of quill.layers.LAYERS")


def may_import(importer: str, imported: str) -> bool:
    """Whether top-level package ``importer`` may import from ``imported``.

    >>> may_import("inference", "runtimes"), may_import("runtimes", "inference")
    (True, False)
    >>> may_import("models", "data"), may_import("staging", "staging")
    (False, True)
    """
    return importer == imported or floor_of(imported) < floor_of(importer)
