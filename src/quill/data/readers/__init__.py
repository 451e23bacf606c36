"""Readers that turn real ground truth into Quill datasets (images + ``manifest.jsonl``).

Each reader takes a source in its format and an output folder, and returns an
:class:`~quill.data.readers.common.ImportResult`: the saved manifest and a report of what was
loaded and what was skipped, and why. Formats: ``folder`` (images + ``labels.tsv``),
``pagexml``, ``alto`` and ``iam`` (the original forms + XML layout).
"""

from __future__ import annotations

from collections.abc import Callable

from quill.data.readers.alto import read_alto
from quill.data.readers.common import DatasetError, ImportReport, ImportResult
from quill.data.readers.folder import read_folder
from quill.data.readers.iam import read_iam
from quill.data.readers.pagexml import read_pagexml

READERS: dict[str, Callable[..., ImportResult]] = {
    "folder": read_folder,
    "pagexml": read_pagexml,
    "alto": read_alto,
    "iam": read_iam,
}

__all__ = ["READERS", "DatasetError", "ImportReport", "ImportResult"]
