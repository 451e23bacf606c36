"""What every reader shares: the import report, label checks and the dataset writer.

A reader walks a source in some format and hands each (image, text) it finds to a
:class:`DatasetWriter`, which checks the label against the vocabulary, writes the crop (or
references the file in place), hashes it and, at the end, assigns splits by group and saves
the manifest. Anything that cannot be used is recorded in the :class:`ImportReport` with the
file it came from and the reason, and the import carries on: one bad page never costs the
rest of a dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from PIL import Image

from quill.data.manifest import (
    IMAGE_DIR,
    REPORT_NAME,
    Manifest,
    Sample,
    Split,
    assign_splits,
    file_sha256,
)
from quill.errors import QuillError
from quill.preprocess import ImageError, load_image
from quill.vocab import Tokenizer

Kind = Literal["line", "paragraph"]
KINDS: tuple[Kind, ...] = ("line", "paragraph")

T = TypeVar("T")


class DatasetError(QuillError):
    """The source as a whole cannot be read (missing directory, no files of the format)."""

    code = "dataset_unreadable"


@dataclass(frozen=True)
class Skip:
    """One thing that was not imported: where it is and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class ImportReport:
    """What an import loaded and what it skipped, with reasons, for the user to read."""

    source: str
    loaded: Counter[str] = field(default_factory=Counter)
    skipped: list[Skip] = field(default_factory=list)
    #: What was imported but not as the source said (groups merged to keep a split clean).
    notes: list[str] = field(default_factory=list)

    def skip(self, where: str | Path, reason: str) -> None:
        self.skipped.append(Skip(str(where), reason))

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())

    def summary(self, limit: int = 20) -> list[str]:
        """Human-readable lines: counts first, then the first ``limit`` skips.

        >>> report = ImportReport("pagexml")
        >>> report.loaded["line"] += 2
        >>> report.skip("a.xml line l3", "empty label")
        >>> report.summary()
        ['loaded 2 samples (2 line)', 'skipped 1:', '  a.xml line l3: empty label']
        """
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.loaded.items()))
        lines = [f"loaded {self.total_loaded} samples" + (f" ({kinds})" if kinds else "")]
        lines.extend(f"note: {note}" for note in self.notes)
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {skip}" for skip in self.skipped[:limit])
            if len(self.skipped) > limit:
                lines.append(f"  ... and {len(self.skipped) - limit} more")
        return lines

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "loaded": dict(self.loaded),
            "skipped": [{"where": s.where, "reason": s.reason} for s in self.skipped],
            "notes": self.notes,
        }


@dataclass
class ImportResult:
    """A reader's answer: the saved manifest and the report of what happened."""

    manifest: Manifest
    report: ImportReport


def normalise_text(text: str) -> str:
    """NFC-normalise a label and trim surrounding whitespace of each line.

    Precomposed and decomposed accents must compare equal before the vocabulary check.

    >>> normalise_text("  cafe\\u0301 \\n  ok ")
    'café\\nok'
    """
    text = unicodedata.normalize("NFC", text)
    # "\n" only: splitlines would also break at U+2028, form feeds and the like, making a
    # line label with a stray control character a paragraph instead of reporting it
    return "\n".join(line.strip() for line in text.strip().split("\n"))


def label_problem(text: str, tokenizer: Tokenizer) -> str | None:
    """Why ``text`` cannot be a training label, or None if it can.

    >>> label_problem("", Tokenizer())
    'empty label'
    >>> label_problem("naïve", Tokenizer())
    "characters outside the vocabulary: 'ï' in 'naïve'"
    """
    if not text.strip():
        return "empty label"
    unknown = tokenizer.unknown_characters(text)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        return f"characters outside the vocabulary: {shown} in {text!r}"
    return None


def require_directory(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else a :class:`DatasetError` naming it."""
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} is not a directory: {path}")
    return path


def progress(items: Iterable[T], description: str, total: int | None, enabled: bool) -> Iterator[T]:
    """Iterate with a rich progress bar when ``enabled`` (the CLI), silently otherwise."""
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)


class DatasetWriter:
    """Collects the samples of one import into a dataset folder.

    Crops are written as PNG under ``out/images/``; files already on disk can instead be
    referenced in place (a path relative to ``out``), so a large source is not duplicated.
    Splits are assigned at :meth:`finish`, by group, so a page or writer never straddles
    train and test.
    """

    def __init__(
        self,
        out: Path,
        source: str,
        report: ImportReport,
        tokenizer: Tokenizer | None = None,
    ):
        self.out = Path(out)
        self.source = source
        self.report = report
        self.tokenizer = tokenizer or Tokenizer()
        #: Samples so far, each with whether its split was given (True) or is to be assigned.
        self._pending: list[tuple[Sample, bool]] = []
        self._names: set[str] = set()
        (self.out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)

    def check(self, where: str, text: str) -> str | None:
        """The normalised label, or None after recording why it is unusable."""
        text = normalise_text(text)
        problem = label_problem(text, self.tokenizer)
        if problem:
            self.report.skip(where, problem)
            return None
        return text

    def add_crop(
        self,
        name: str,
        image: Image.Image,
        text: str,
        *,
        group: str,
        kind: Kind,
        meta: dict | None = None,
        split: Split | None = None,
    ) -> None:
        """Write ``image`` as ``images/<name>.png`` and record it (``text`` already checked)."""
        relative = f"{IMAGE_DIR}/{self._unique(name)}.png"
        path = self.out / relative
        image.save(path, compress_level=1)  # level 6 is ~5x slower for ~15% smaller scans
        self._record(relative, path, text, group, kind, meta, split)

    def add_file(
        self,
        path: Path,
        text: str,
        *,
        group: str,
        kind: Kind,
        meta: dict | None = None,
        split: Split | None = None,
        copy: bool = False,
        where: str | None = None,
    ) -> None:
        """Record an existing image file, copied into the folder or referenced in place.

        The image is decoded once here so a corrupt file is reported (at ``where``, default
        its path) now, not mid-training.
        """
        try:
            load_image(path)
            if copy:
                relative = f"{IMAGE_DIR}/{self._unique(path.stem)}{path.suffix.lower()}"
                shutil.copyfile(path, self.out / relative)
            else:
                relative = Path(os.path.relpath(path.resolve(), self.out.resolve())).as_posix()
        except ImageError as exc:
            self.report.skip(where or path, str(exc))
            return
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop met by resolve()
            self.report.skip(where or path, f"image cannot be read: {exc}")
            return
        self._record(relative, path, text, group, kind, meta, split)

    def _unique(self, name: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "sample"
        candidate, number = safe, 1
        while candidate in self._names:
            number += 1
            candidate = f"{safe}-{number}"
        self._names.add(candidate)
        return candidate

    def _record(
        self,
        relative: str,
        path: Path,
        text: str,
        group: str,
        kind: Kind,
        meta: dict | None,
        split: Split | None,
    ) -> None:
        sample = Sample(
            image=relative,
            text=text,
            split=split or "train",
            source=self.source,
            sha256=file_sha256(path),
            group=group,
            kind=kind,
            meta=meta or {},
        )
        self._pending.append((sample, split is not None))
        self.report.loaded[kind] += 1

    def finish(
        self,
        splits: Mapping[str, Split] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> ImportResult:
        """Assign splits by group and save the manifest (and the report beside it).

        ``splits`` maps group -> split (e.g. IAM's official lists); groups it does not name,
        and every group when it is None, are split by :func:`assign_splits`. Samples added
        with an explicit split keep it. Groups holding a byte-identical image are kept on one
        side (:meth:`_same_image_groups`), with a note in the report.
        """
        groups = [sample.group for sample, fixed in self._pending if not fixed]
        hashed = assign_splits(groups, val_fraction=val_fraction, test_fraction=test_fraction)
        chosen = {**hashed, **(splits or {})}
        for merged in self._same_image_groups():
            split = chosen[merged[0]]
            chosen.update(dict.fromkeys(merged, split))
            self.report.notes.append(
                f"groups {', '.join(merged)} hold byte-identical images (the same page "
                f"exported twice, or a copy under another name): all are put in {split}, so "
                "no image is on both sides of the split"
            )
        samples = [
            sample if fixed else replace(sample, split=chosen[sample.group])
            for sample, fixed in self._pending
        ]
        manifest = Manifest(self.out, samples)
        manifest.save()
        report_path = self.out / REPORT_NAME
        report_path.write_text(json.dumps(self.report.to_dict(), indent=1, ensure_ascii=False))
        return ImportResult(manifest, self.report)

    def _same_image_groups(self) -> list[list[str]]:
        """Groups to split as one, sorted: those (of samples whose split is to be assigned)
        sharing a byte-identical image, directly or through a chain of groups.

        A page id names a file, not its content: the same page exported twice, or a copy of
        an image under another name, made two groups, hashed to train and test apart.
        """
        parent: dict[str, str] = {}

        def root(group: str) -> str:
            while parent.get(group, group) != group:
                group = parent[group]
            return group

        first: dict[str, str] = {}
        for sample, fixed in self._pending:
            if not fixed:
                other = first.setdefault(sample.sha256, sample.group)
                parent[root(sample.group)] = root(other)
        merged: dict[str, list[str]] = {}
        for group in sorted(parent):
            merged.setdefault(root(group), []).append(group)
        return [groups for groups in merged.values() if len(groups) > 1]
