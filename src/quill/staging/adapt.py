"""``staged model + a writer's lines -> that writer's staged model`` (``quill adapt``).

The network of a staged model is rebuilt from its TorchScript weights, adapted to the lines
(:func:`quill.training.adapt.adapt_network`), and staged as any checkpoint is: ONNX and
TorchScript exports, parity with eager PyTorch checked on the writer's own lines, a model card
that names the model it came from. The result decodes as the base model does (its beam
search, language models and languages copied in), and gets an int8 copy when the base has
one and the copy reads the writer's lines within the usual drift; otherwise it serves in
float32 and says why.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from quill.models import build_model
from quill.staged_model import StagedModel
from quill.staging.model_card import with_runtime_sections
from quill.staging.quantize import MAX_DRIFT_CER, Int8Drift, add_int8
from quill.staging.stage import check_target, stage_checkpoint
from quill.training.adapt import AdaptConfig, StepProgress, adapt_network
from quill.training.adapt_lines import AdaptError, AdaptLine
from quill.training.checkpoint import CheckpointSource, write_checkpoint
from quill.training.init_weights import read_weights

INT8_BACKEND = "onnx-int8"


@dataclass(frozen=True)
class Adapted:
    """What ``quill adapt`` wrote: the staged model, the loss of each step, and why it has
    no int8 copy (None when it has one, or its base had none)."""

    model: StagedModel
    losses: list[float]
    int8_skipped: str | None = None


def base_network(base: StagedModel) -> nn.Module:
    """The base model's network, rebuilt from its config with its TorchScript weights."""
    if base.family != "ctc":
        raise AdaptError(f"{base.path} reads paragraphs; only line models can be adapted")
    network = build_model(base.model_name, len(base.tokenizer), **base.model_config)
    state = read_weights(base.path).state
    expected = network.state_dict().keys()
    network.load_state_dict({key: value for key, value in state.items() if key in expected})
    return network


def adapt_staged(
    base_dir: Path,
    lines: Sequence[AdaptLine],
    out_dir: Path,
    config: AdaptConfig | None = None,
    name: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    on_step: StepProgress | None = None,
) -> Adapted:
    """Adapt the staged model in ``base_dir`` to ``lines`` and stage it in ``out_dir``
    (replaced only when staging succeeds). Raises :class:`AdaptError` for lines it cannot
    use, ``StagingTargetError`` (before fine-tuning) for an ``out_dir`` that is the base
    model's folder or holds other things, ``ParityError`` if an export reads differently
    from eager PyTorch."""
    config = config or AdaptConfig()
    check_target(out_dir, [base_dir])
    base = StagedModel.load(base_dir)
    network = base_network(base)
    progress(f"adapting {base.version} to {len(lines)} lines")
    losses = adapt_network(network, base.tokenizer, base.preprocess, lines, config, on_step)
    samples = [line.image for line in lines]
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_checkpoint(
            Path(scratch) / "adapted.ckpt",
            network,
            base.model_name,
            base.tokenizer,
            base.preprocess,
            dataset_version=base.lineage.dataset_version,
            config={"adapt": config.to_dict(), "adapted_from": base.version, "lines": len(lines)},
        )
        staged = stage_checkpoint(
            CheckpointSource(
                checkpoint,
                artifact="quill adapt (the checkpoint is not kept)",
                initialised_from=f"{base_dir} ({base.version})",
            ),
            out_dir,
            name or out_dir.name,
            samples,
            progress=progress,
            card_notes=_card_notes(base, len(lines), config),
        )
    staged = _decoding_of(base, staged)
    skipped = None
    if INT8_BACKEND in base.backends:
        progress("quantising and checking the int8 copy on the lines")
        try:
            staged = add_int8(out_dir, samples, MAX_DRIFT_CER)
        except Int8Drift as exc:
            skipped = str(exc)
    staged.card_path.write_text(with_runtime_sections(staged.card_path.read_text(), staged))
    return Adapted(staged, losses, skipped)


def _decoding_of(base: StagedModel, staged: StagedModel) -> StagedModel:
    """``staged`` decoding as ``base`` does: its settings and every file they read."""
    if base.decoding is None:
        return staged
    for path in base.decoding_files():
        shutil.copyfile(path, staged.path / path.name)
    return staged.set_decoding(base.decoding)


def _card_notes(base: StagedModel, count: int, config: AdaptConfig) -> str:
    settings = ", ".join(f"{key} {value}" for key, value in config.to_dict().items())
    return (
        "## Adapted to one writer\n\n"
        f"`{base.name}` (version `{base.version}`) fine-tuned by `quill adapt` on {count} "
        f"transcribed lines of one writer's hand ({settings}); it decodes as that model "
        "does. Its training data and licences are those of that model's card, plus the "
        "writer's lines, which stay with whoever adapted it.\n"
    )
