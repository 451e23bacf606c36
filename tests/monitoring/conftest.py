"""Fixtures for the monitoring tests: real stores on SQLite and on a throwaway Postgres
server, and real encoded images of handwriting-like lines in both polarities."""

from __future__ import annotations

import glob
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from quill.monitoring.schema import Base
from quill.monitoring.store import MonitoringStore
from quill.ports import free_port


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A Postgres server in a temporary folder for this test session.

    Postgres refuses to run as root, so as root the server runs as the ``postgres`` user
    the Debian package creates. Skipped (with the reason) where the binaries are missing.
    """
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("Postgres server binaries not installed (Debian package `postgresql`)")
    prefix: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="quill-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            shutil.chown(data, "postgres", "postgres")
        except (LookupError, PermissionError) as exc:
            pytest.skip(f"cannot run Postgres as root and no usable postgres user: {exc}")
        if runuser is None:
            pytest.skip("running as root and runuser is missing: cannot start Postgres")
        prefix = [runuser, "-u", "postgres", "--"]
    port = free_port()
    cluster = data / "cluster"
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(cluster), "-A", "trust", "-U", "quill", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(cluster), "-o", options, "-l", str(data / "log"), "-w"]
            + ["-t", "30", "start"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (data / "log").read_text() if (data / "log").exists() else ""
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"could not start Postgres: {exc}\n{log}") from exc
    try:
        yield f"postgresql+psycopg://quill@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(cluster), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database URL of an empty store, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'monitoring.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    # Leave the shared server empty for the next test.
    store = MonitoringStore(url, image_dir=tmp_path / "unused")
    Base.metadata.drop_all(store.engine)
    store.close()


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[MonitoringStore]:
    store = MonitoringStore(store_url, image_dir=tmp_path / "images")
    yield store
    store.close()


def line_image(
    text: str = "Dear Sir, I thank you",
    dark_on_light: bool = True,
    size: tuple[int, int] = (320, 48),
    seed: int = 0,
) -> bytes:
    """PNG bytes of a text line with a little paper noise, in either polarity."""
    rng = np.random.default_rng(seed)
    paper, ink = (235, 30) if dark_on_light else (25, 225)
    image = Image.new("L", size, paper)
    ImageDraw.Draw(image).text((8, size[1] // 4), text, fill=ink, font=ImageFont.load_default(22))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size[::-1])
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def make_line() -> Callable[..., bytes]:
    """``make_line(text, dark_on_light=True, size=(320, 48), seed=0) -> PNG bytes``."""
    return line_image


def rendered_word(text: str, seed: int, invert: bool = False) -> Image.Image:
    """A smoke word the way the smoke model learnt it (quill.staging.parity.render_line), with
    a little paper noise so that no two requests are the same image."""
    from quill.staging.parity import render_line

    rng = np.random.default_rng(seed)
    pixels = np.asarray(render_line(text), dtype=np.float32)
    pixels = (pixels + rng.normal(0, 3, pixels.shape)).clip(0, 255)
    if invert:
        pixels = 255 - pixels
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="session")
def render_word() -> Callable[..., Image.Image]:
    """``render_word(text, seed, invert=False) -> PIL image``."""
    return rendered_word


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test set in the real dataset format: the smoke words, dark on light, 3 noisy
    renderings each (what the smoke model was validated on)."""
    from quill.data.manifest import Manifest, Sample, file_sha256
    from quill.staging.smoke import SMOKE_WORDS

    root = tmp_path_factory.mktemp("smoke-dataset")
    (root / "images").mkdir()
    samples = []
    for i, word in enumerate(w for w in SMOKE_WORDS for _ in range(3)):
        path = root / "images" / f"{i:02d}-{word}.png"
        rendered_word(word, seed=i).save(path)
        sha = file_sha256(path)
        samples.append(Sample(f"images/{path.name}", word, "test", "synthetic", sha, group=sha))
    Manifest(root, samples).save()
    return root


@pytest.fixture(scope="session")
def broken_model(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke model staged with a scrambled vocabulary (a real packaging mistake): same
    weights and speed, wrong text. A candidate that must never be promoted."""
    import json

    target = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(smoke_model, target)
    meta_path = target / "quill-model.json"
    meta = json.loads(meta_path.read_text())
    meta["tokenizer"]["characters"] = meta["tokenizer"]["characters"][::-1]
    meta["version"] = "smoke-broken"
    meta_path.write_text(json.dumps(meta))
    return target


@pytest.fixture(scope="session")
def inverted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke words light on dark, 2 renderings each, in the dataset format."""
    from quill.data.manifest import Manifest, Sample, file_sha256
    from quill.staging.smoke import SMOKE_WORDS

    root = tmp_path_factory.mktemp("inverted-dataset")
    (root / "images").mkdir()
    samples = []
    for i, word in enumerate(w for w in SMOKE_WORDS for _ in range(2)):
        path = root / "images" / f"{i:02d}-{word}.png"
        rendered_word(word, seed=50 + i, invert=True).save(path)
        sha = file_sha256(path)
        samples.append(Sample(f"images/{path.name}", word, "test", "photos", sha, group=sha))
    Manifest(root, samples).save()
    return root
