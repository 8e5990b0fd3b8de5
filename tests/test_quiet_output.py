"""No noise a newcomer did not ask for: packaging warnings, library progress bars, huge reprs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_milr

ROOT = Path(__file__).resolve().parents[1]


def test_building_the_package_prints_no_setuptools_warnings(tmp_path):
    """`project.license` as a table and the unlisted `milr.shapes.weights` data folder each
    printed a setuptools warning on every build (tox -e docs printed ~90 lines of them)."""
    pytest.importorskip("setuptools", minversion="77", reason="the build backend is not here")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "milr", src / "milr", ignore=ignore)
    shutil.copytree(ROOT / "critics", src / "critics", ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    noisy = [ln for ln in log.splitlines() if "Warning" in ln or "deprecated" in ln.lower()]
    assert noisy == [], "\n".join(noisy)
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("milr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.endswith("licenses/LICENSE") for n in names)
    # A package left out of pyproject's explicit `packages` list (milr.engine was) installs
    # fine editable and breaks only a real install: every module and data file must ship.
    missing = sorted(set(_files_a_wheel_must_ship()) - names)
    assert missing == [], f"not in the wheel: {missing}"


def _files_a_wheel_must_ship() -> list[str]:
    """Every module of every package under milr/ and critics/ (critics/ installs as
    milr/critics/), the typing marker, the preset files and the shapes checkpoint."""
    must = []
    for top, dest in (("milr", "milr"), ("critics", "milr/critics")):
        for init in (ROOT / top).rglob("__init__.py"):
            pkg = init.parent
            for module in pkg.glob("*.py"):
                rel = module.relative_to(ROOT / top).as_posix()
                must.append(f"{dest}/{rel}")
    must.append("milr/py.typed")
    must += [f"milr/presets/{p.name}" for p in (ROOT / "milr" / "presets").glob("*.toml")]
    weights = ROOT / "milr" / "shapes" / "weights"
    must += [f"milr/shapes/weights/{p.name}" for p in weights.iterdir() if p.is_file()]
    assert "milr/engine/__init__.py" in must and "milr/shapes/weights/model.safetensors" in must
    return must


def test_loading_a_model_draws_no_transformers_bar_but_milr_keeps_its_own(tmp_path):
    out = run_milr(
        "generate", "a photo of a green circle", "-M", "shapes", "-c", "shapes",
        "--steps", "1", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Loading weights" not in out.stderr
    assert "milr:" in out.stderr  # milr's own step bar (tqdm) is untouched


def test_library_progress_bars_off_restores_the_users_setting():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    hub_utils = pytest.importorskip("huggingface_hub.utils")
    from milr.quiet import library_progress_bars_off

    for user_on in (True, False):
        if user_on:
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
        with library_progress_bars_off():
            assert not hf_logging.is_progress_bar_enabled()
            assert hub_utils.are_progress_bars_disabled()
        assert hf_logging.is_progress_bar_enabled() is user_on
        assert hub_utils.are_progress_bars_disabled() is (not user_on)
    hf_logging.enable_progress_bar()


def test_milr_result_repr_is_one_short_line():
    from milr.results import MILRResult, StepRecord

    result = MILRResult(
        prompt="a photo of two red circles", metadata={}, config={"select": "best"},
        generator={"name": "shapes"}, critic={"name": "shapes"},
    )  # fmt: skip
    for i in range(21):
        score = 0.75 if i % 2 == 0 else 0.625
        result.steps.append(
            StepRecord(step=i, reward=score - 1, score=score, passed=False, critics={})
        )
    result.stop_reason, result.wall_seconds = "max_steps", 2.94
    text = repr(result)
    assert text == (
        "<MILRResult 'a photo of two red circles': 20 steps, score 0.750 -> 0.750 "
        "(best; best 0.750 at step 0), stopped: max_steps, 2.9 s>"
    )
    assert str(result) == text and "\n" not in text and "StepRecord" not in text
