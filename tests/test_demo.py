"""`milr demo` end to end on two prompts with the shipped shapes model, and its bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from milr import MilrUserError
from milr.cli.demo import check_out_dir, demo
from milr.shapes import model as shapes_model

PROMPTS = ["a photo of two red circles", "a photo of a blue square left of a yellow triangle"]


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--steps", "2"]
    for p in PROMPTS:
        args += ["--prompt", p]
    res = CliRunner().invoke(demo, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["prompt"] for r in summary] == PROMPTS
    for row in summary:
        assert row["initial"] in ("pass", "fail") and row["final"] in ("pass", "fail")
        assert 0 <= row["steps"] <= 2
        assert (row["steps"] == 0) == (row["initial"] == "pass")  # stops as soon as it passes
        folder = out / row["folder"]
        for name in ("initial.png", "final.png", "reward.png", "trajectory.json"):
            assert (folder / name).is_file(), name
        traj = json.loads((folder / "trajectory.json").read_text())
        assert traj["config"]["mode"] == "both" and traj["critic"]["label"] == "shapes"
        assert len(traj["steps"]) == row["steps"] + 1
    from PIL import Image

    sheet = Image.open(out / "contact_sheet.png").convert("RGB")
    assert sheet.size[1] > 2 * 64 * 3  # one row per prompt, images upscaled
    assert "prompt" in res.output and "initial" in res.output and PROMPTS[1] in res.output
    # the sheet's text column is legible: tesseract reads the prompts with their spaces (PIL's
    # bitmap default font ran words together: "a photo ofa green circle"), the scores, the
    # steps and the reasoning text of step 0
    pytesseract = pytest.importorskip("pytesseract")
    if shutil.which("tesseract") is None:
        pytest.skip("Debian's tesseract-ocr is not installed; the OCR check of the sheet needs it")
    text = " ".join(pytesseract.image_to_string(sheet.crop((0, 0, 390, sheet.height))).split())
    assert PROMPTS[0] in text
    first = json.loads((out / summary[0]["folder"] / "trajectory.json").read_text())["steps"][0]
    assert f"score {first['score']:.2f}" in text
    assert "reasoning" in text and first["reasoning"].split()[0] in text
    assert f"{summary[0]['steps']} step" in text


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = CliRunner().invoke(demo, ["--out", str(f)])
    assert res.exit_code != 0
    assert isinstance(res.exception, MilrUserError) and "is a file" in str(res.exception)


def test_out_unwritable(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new entries even to root
        with pytest.raises(MilrUserError, match="not writable"):
            check_out_dir(Path("/proc/milr-demo-test"))
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(MilrUserError, match="not writable"):
            check_out_dir(ro / "sub")
    finally:
        ro.chmod(0o700)


def test_console_script_bad_out_exits_2_before_any_work(tmp_path):
    from cli_helpers import run_milr

    f = tmp_path / "file.txt"
    f.write_text("x")
    out = run_milr("demo", "--out", str(f))
    assert out.returncode == 2, out.stderr
    assert str(f) in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_out_under_a_file_is_rejected(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(MilrUserError, match="not writable"):
        check_out_dir(f / "sub")


def test_bad_prompt_fails_before_running(tmp_path):
    res = CliRunner().invoke(
        demo, ["--out", str(tmp_path / "o"), "--prompt", "a dog on a skateboard"]
    )
    assert res.exit_code != 0 and isinstance(res.exception, MilrUserError)
    assert not any((tmp_path / "o").iterdir())


def test_shipped_weights_verify_and_load():
    path = shapes_model.model_path()
    assert path == shapes_model.WEIGHTS_DIR.resolve()
    size = sum(p.stat().st_size for p in path.iterdir() if p.name.endswith(".safetensors"))
    assert size <= 20 * 2**20


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_missing_or_corrupt_weights_name_the_file(tmp_path, damage):
    d = tmp_path / "w"
    shutil.copytree(shapes_model.WEIGHTS_DIR, d)
    f = d / "model.safetensors"
    if damage == "missing":
        f.unlink()
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:1000])
    else:
        data = bytearray(f.read_bytes())
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))
    with pytest.raises(MilrUserError, match=r"model\.safetensors.*reinstall"):
        shapes_model.model_path(d)


def test_load_generator_shapes_refuses_corrupt_install(tmp_path, monkeypatch):
    from milr.generator import load_generator

    d = tmp_path / "w"
    shutil.copytree(shapes_model.WEIGHTS_DIR, d)
    (d / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(shapes_model, "WEIGHTS_DIR", d)
    with pytest.raises(MilrUserError, match=r"tokenizer\.json.*reinstall"):
        load_generator("shapes")
