"""``checkpoint -> staged model directory``: rebuild, export, check parity, describe.

The staged directory is self-contained (:mod:`quill.staged_model`: ``quill-model.json``,
``model.onnx``, ``model.pt``, ``MODEL_CARD.md``): inference reads nothing else, so it can be
committed, copied into a container image or fetched back from the registry.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import torch

from quill.errors import QuillError, output_problem
from quill.model_files import METADATA_FILE
from quill.models.onnx_export import export_interface
from quill.preprocess import ImageSource, batch_images
from quill.runtimes.backends import TorchModuleRuntime, load_backend
from quill.staged_model import FORMAT_VERSION, Lineage, StagedModel
from quill.staging.export import ExportResult, export_onnx, export_torchscript
from quill.staging.model_card import render_model_card
from quill.staging.parity import check_parity, sample_inputs
from quill.training.checkpoint import CheckpointSource, LoadedCheckpoint, load_checkpoint

#: Called with a short description of each step, for progress display.
Progress = Callable[[str], None]


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


class StagingTargetError(QuillError, ValueError):
    """The folder a staged model would be written to holds something that must not be lost."""

    code = "staging_target_invalid"


def check_target(out_dir: Path, keep: Sequence[Path] = ()) -> None:
    """Refuse ``out_dir`` as the place of a staged model unless it is new, empty or a staged
    model, none of ``keep`` (what staging reads from) is it or inside it, and it is not inside
    a folder of ``keep``: staging replaces a folder whole, so ``models/`` or a home folder
    given by mistake would be lost, and a model inside its base model with the base.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise StagingTargetError(f"{out_dir} is a file, not a folder for a staged model")
    target = out_dir.resolve()
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise StagingTargetError(
            f"{out_dir} is the current folder or holds it: staging replaces its folder whole "
            "(`--out .` inside a model deleted it). Give the folder's path from outside it."
        )
    for path in keep:
        held = path.resolve()
        if held.is_dir() and held in target.parents:
            raise StagingTargetError(
                f"{out_dir} is inside {path}, which staging reads from: staging or fetching "
                f"{path} again would replace it whole, and this model with it. Give a folder "
                "outside it."
            )
        if held == target or target in held.parents:
            raise StagingTargetError(
                f"{out_dir} holds {path}, which staging reads from: writing the staged model "
                "there would replace it. Give another folder."
            )
    # the model is written in a temporary folder beside out_dir, then moved into place
    problem = output_problem(out_dir, folder=True) or output_problem(out_dir.parent, folder=True)
    if problem:
        raise StagingTargetError(f"{out_dir}: {problem}")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / METADATA_FILE).is_file():
        raise StagingTargetError(
            f"{out_dir} is not empty and is not a staged model (no {METADATA_FILE}): staging "
            "replaces its folder whole. Give a new or empty folder, or a staged model's."
        )


def replace_folder(target: Path, new: Path) -> None:
    """Put the folder ``new`` (beside ``target``, on its filesystem) in ``target``'s place:
    the old folder goes whole and the new one is renamed in, never copied file by file over
    it, which left a mix of two models."""
    if target.exists():
        shutil.rmtree(target)
    new.rename(target)


def stage_checkpoint(
    source: CheckpointSource,
    out_dir: Path,
    name: str,
    samples: Sequence[ImageSource] = (),
    progress: Progress = lambda _: None,
    card_notes: str = "",
) -> StagedModel:
    """Write the staged model of ``source`` to ``out_dir`` (replaced only if staging succeeds).

    ``card_notes`` (Markdown) is appended to the generated model card.

    Raises ``ParityError`` (and leaves ``out_dir`` untouched) if an export reads differently
    from eager PyTorch, :class:`StagingTargetError` (before any work) for an ``out_dir``
    that :func:`check_target` refuses.
    """
    check_target(out_dir, [source.path])
    progress(f"rebuilding the network from {source.path}")
    loaded = load_checkpoint(source.path)
    module = export_interface(loaded.model)
    inputs = sample_inputs(loaded.preprocess, samples)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Built beside out_dir and renamed into place: readers never see a half-written model.
    target = out_dir.resolve()  # "a/.." has the parent "a", which the swap would remove
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        progress("exporting ONNX")
        # Two samples (a batch of 1 would freeze the batch dimension): (2, 1, H, W).
        example = torch.from_numpy(batch_images((inputs * 2)[:2])[0])
        onnx = export_onnx(module, example, work)
        progress("exporting TorchScript")
        script = export_torchscript(module, work)
        staged = _describe(loaded, source, name, work, [onnx, script])
        progress("checking parity with eager PyTorch")
        exports = {b: load_backend(b, staged, threads=None) for b in ("onnx", "torchscript")}
        eager = TorchModuleRuntime(module, loaded.family, staged.max_output_length or 0)
        parity = check_parity(eager, exports, inputs, loaded.tokenizer)
        parity.raise_for_failure()
        staged = dataclasses.replace(staged, parity=parity.to_dict())
        staged.save()
        staged.card_path.write_text(render_model_card(staged, card_notes))
        progress(f"writing {out_dir}")
        work.chmod(0o755)  # mkdtemp made it private (0700)
        replace_folder(target, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dataclasses.replace(staged, path=out_dir)


def _describe(
    loaded: LoadedCheckpoint,
    source: CheckpointSource,
    name: str,
    work: Path,
    exports: list[ExportResult],
) -> StagedModel:
    """The metadata of the model exported into ``work``, its version computed from the files
    (:meth:`StagedModel.content_version`)."""
    data = loaded.config.get("data")
    staged = StagedModel(
        path=work,
        format_version=FORMAT_VERSION,
        name=name,
        version="",
        family=loaded.family,
        model_name=loaded.model_name,
        model_config=loaded.model_config,
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        tokenizer=loaded.tokenizer,
        preprocess=loaded.preprocess,
        backends={e.backend: e.backend_files() for e in exports},
        lineage=Lineage(
            run_id=source.run_id,
            checkpoint=source.artifact or str(source.path),
            checkpoint_sha256=loaded.sha256,
            dataset_version=loaded.dataset_version,
            initialised_from=source.initialised_from,
        ),
        training_data=data if isinstance(data, str | dict) else None,
        metrics=source.metrics,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
        quill_version=_package_version("quill"),
        runtime_versions={
            "torch": _package_version("torch"),
            "onnxruntime": _package_version("onnxruntime"),
        },
        max_output_length=(
            int(loaded.model.max_output_length) if loaded.family == "seq2seq" else None
        ),
    )
    return dataclasses.replace(staged, version=staged.content_version())
