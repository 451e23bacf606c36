"""Distillation (`distill.teacher`): the run learns a frozen model's reading at several
heights as well as the labels. Real parts throughout: the shipped default as a teacher,
its TorchScript runtime as served, the tiny model trained by Lightning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from quill.errors import ConfigError
from quill.inference import shifts as served
from quill.models import build_model
from quill.preprocess import PreprocessConfig, batch_images, preprocess
from quill.runtimes.backends import TorchScriptRuntime
from quill.staged_model import StagedModel
from quill.training.config import resolve_config
from quill.training.distill import ShiftTeacher, frame_divergence, load_teacher, shifted
from quill.training.init_weights import InitWeightsError
from quill.training.train import TAUGHT_BY_TAG, TrainingSetupError, create_run_parts, train
from quill.vocab import Tokenizer

from .conftest import REPO_ROOT, TINY_CONFIG, make_line_dataset, quiet_trainer, render_line

DEFAULT = REPO_ROOT / "models" / "default"


def default_architecture(**changes: object) -> torch.nn.Module:
    """A fresh network of the shipped default's architecture, with ``changes``."""
    meta = json.loads((DEFAULT / "quill-model.json").read_text(encoding="utf-8"))
    config = {**meta["model_config"], **changes}
    return build_model(meta["model_name"], len(Tokenizer.named("latin")), **config)


def rendered_lines(folder: Path, texts: list[str], height: int) -> tuple[np.ndarray, np.ndarray]:
    """Printed lines through the shared preprocessing: (B, 1, H, W) ink maps and widths."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        render_line(text, folder / f"{i}.png")
        lines.append(preprocess(folder / f"{i}.png", PreprocessConfig(height=height)))
    return batch_images(lines)


def test_a_batch_is_shifted_as_inference_shifts_it() -> None:
    images = np.random.default_rng(0).random((3, 1, 48, 20), dtype=np.float32)
    for moves in ([0, -2, 2], [3], [-1, 0, 1, 5]):
        ours = shifted(torch.from_numpy(images), moves).numpy()
        np.testing.assert_array_equal(ours, served.shifted(images, moves))


def test_the_teacher_reads_what_the_served_model_reads_at_its_heights(tmp_path: Path) -> None:
    """The shipped default as a teacher gives, line by line, the averaged three heights
    that its TorchScript runtime reads as served (`forward_shifted`)."""
    images, widths = rendered_lines(tmp_path, ["a letter from Kew", "merci beaucoup"], 48)
    latin = Tokenizer.named("latin")
    teacher = load_teacher(DEFAULT, latin, default_architecture(), [0, -2, 2])
    ours = teacher.log_probs(torch.from_numpy(images)).numpy()
    runtime = TorchScriptRuntime(StagedModel.load(DEFAULT), threads=1)
    expected, lengths = served.forward_shifted(runtime.forward, images, widths, [0, -2, 2])
    assert ours.shape == expected.shape
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(ours[row, :length], expected[row, :length], atol=2e-4)


def test_a_teacher_must_write_the_runs_characters() -> None:
    with pytest.raises(InitWeightsError, match="another character set"):
        load_teacher(DEFAULT, Tokenizer.named("ascii"), default_architecture(), [0])


def test_a_large_model_may_teach_a_small_one_whose_frames_line_up(tmp_path: Path) -> None:
    """The shipped default (989 k parameters) teaches a network a tenth its size: the same
    height and frame stride, so the same frames for every line."""
    small = default_architecture(channels=[16, 32, 48, 64], hidden=64, layers=1)
    assert sum(p.numel() for p in small.parameters()) < 150_000
    teacher = load_teacher(DEFAULT, Tokenizer.named("latin"), small, [0, -2, 2])
    images, _ = rendered_lines(tmp_path, ["Kew, 12 July"], 48)
    batch = torch.from_numpy(images)
    assert teacher.log_probs(batch).shape == small(batch).shape


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width_pool_blocks": 3}, "a frame every 4 pixels of width, this run's model 48 and 8"),
        ({"height": 64}, "48 pixels high .* this run's model 64 and 4"),
    ],
)
def test_a_teacher_whose_frames_would_not_line_up_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(InitWeightsError, match=message):
        load_teacher(DEFAULT, Tokenizer.named("latin"), default_architecture(**changes), [0])


def test_the_divergence_counts_a_lines_frames_only_and_is_zero_for_the_same_reading() -> None:
    student = torch.log_softmax(torch.randn(2, 6, 5), -1)
    teacher = torch.log_softmax(torch.randn(2, 6, 5), -1)
    frames, characters = torch.tensor([6, 3]), torch.tensor([2, 3])
    assert float(frame_divergence(student, student, frames, characters)) == 0.0
    divergence = frame_divergence(student, teacher, frames, characters)
    assert float(divergence) > 0
    moved = teacher.clone()
    moved[1, 3:] = torch.log_softmax(torch.randn(3, 5), -1)  # past line 1's three frames
    assert torch.equal(frame_divergence(student, moved, frames, characters), divergence)
    by_hand = [
        float((teacher[b, :n].exp() * (teacher[b, :n] - student[b, :n])).sum()) / c
        for b, (n, c) in enumerate(zip(frames.tolist(), characters.tolist(), strict=True))
    ]
    assert float(divergence) == pytest.approx(sum(by_hand) / 2, rel=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.weight=1.5", "distill.weight must be between 0 and 1"),
        ("distill.weight=much", "distill.weight must be a"),
        ("distill.shifts=[up]", "distill.shifts must be whole numbers"),
        ("distill.shifts=[]", "distill.shifts must be a list"),
    ],
)
def test_bad_distillation_settings_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(TINY_CONFIG, [override])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny dataset and a tiny model trained on it for a few steps, saved as a checkpoint:
    the teacher of the runs below."""
    root = tmp_path_factory.mktemp("distill")
    make_line_dataset(root / "lines", {"train": 16, "val": 4}, seed=5)
    config = resolve_config(run_config(root / "teacher.yaml", root / "lines", None))
    datamodule, module, _ = create_run_parts(config)
    trainer = quiet_trainer(root, max_steps=20)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(root / "teacher.ckpt")
    return root / "lines", root / "teacher.ckpt"


def run_config(path: Path, lines: Path, teacher: Path | None, weight: float = 1.0) -> Path:
    config: dict = {"extends": str(TINY_CONFIG), "data": {"sources": [{"path": str(lines)}]}}
    if teacher is not None:
        config["distill"] = {"teacher": str(teacher), "shifts": [0, -2, 2], "weight": weight}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_student_learns_the_teachers_reading_and_the_teacher_stays_as_it_was(
    tiny_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Trained on the divergence alone, a fresh network comes to read as the teacher does at
    three heights; the teacher's weights do not move and stay out of the checkpoint."""
    lines, teacher_path = tiny_runs
    config = resolve_config(run_config(tmp_path / "student.yaml", lines, teacher_path))
    datamodule, module, _ = create_run_parts(config)
    teacher = module.teacher
    assert isinstance(teacher, ShiftTeacher) and module.distill_weight == 1.0
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    batch = next(iter(datamodule.train_dataloader()))

    def divergence() -> float:
        module.eval()
        with torch.no_grad():
            log_probs, lengths = module._frames(batch)
            targets = teacher.log_probs(batch["images"])
            reading = frame_divergence(log_probs, targets, lengths, batch["target_lengths"])
        module.train()
        return float(reading)

    start = divergence()
    trainer = quiet_trainer(tmp_path, max_steps=60)
    trainer.fit(module, datamodule=datamodule)
    end = divergence()
    assert end < 0.5 * start, (start, end)
    for name, tensor in teacher.network.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    saved = torch.load(tmp_path / "student.ckpt", map_location="cpu", weights_only=False)
    assert all(key.startswith("model.") for key in saved["state_dict"])


def test_a_missing_teacher_is_a_setup_error(tiny_runs: tuple[Path, Path], tmp_path: Path) -> None:
    lines, _ = tiny_runs
    config = resolve_config(run_config(tmp_path / "run.yaml", lines, tmp_path / "gone.ckpt"))
    with pytest.raises(TrainingSetupError, match="distill.teacher: .*gone.ckpt does not exist"):
        create_run_parts(config)


def test_a_tracked_run_names_its_teacher_and_logs_both_halves_of_its_loss(
    tiny_runs: tuple[Path, Path], tmp_path: Path, tracking_uri: str
) -> None:
    """The resolved config keeps the teacher's path; the tag keeps what it was (a staged
    model's version), since the path may later hold another model."""
    lines, teacher_path = tiny_runs
    overrides = [
        f"tracking.tracking_uri={tracking_uri}",
        f"output_dir={tmp_path / 'out'}",
        "tracking.system_metrics=false",
        "trainer.max_epochs=1",
    ]
    config = resolve_config(run_config(tmp_path / "run.yaml", lines, teacher_path, 0.5), overrides)
    result = train(config)
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.data.tags[TAUGHT_BY_TAG] == str(teacher_path)
    assert run.data.params["distill.teacher"] == str(teacher_path)
    ctc, divergence, loss = (
        run.data.metrics[k] for k in ("train_ctc", "train_divergence", "train_loss")
    )
    assert divergence > 0 and loss == pytest.approx(0.5 * ctc + 0.5 * divergence, rel=1e-4)
