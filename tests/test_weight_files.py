"""The shared weight-file checker: one line per fault, naming the file and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from milr.errors import CheckpointError
from milr.weight_files import check_weights_path, redownload_hint


def _good(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "model.safetensors"
    save_file({"w": torch.zeros(4, 4), "b": torch.ones(4)}, str(f))
    return f


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as exc:
        check_weights_path(path, who="critic 'vqa'")
    text = str(exc.value)
    assert "\n" not in text and text.startswith("critic 'vqa': weight file "), text
    for needle in needles:
        assert needle in text, text
    return text


def test_whole_files_pass(tmp_path):
    _good(tmp_path / "ck")
    torch.save({"w": torch.zeros(2)}, tmp_path / "ck" / "extra.pt")
    check_weights_path(tmp_path / "ck")
    check_weights_path(tmp_path / "ck" / "extra.pt")


def test_truncated_safetensors(tmp_path):
    f = _good(tmp_path / "ck")
    f.write_bytes(f.read_bytes()[:-10])
    _refused(tmp_path / "ck", "model.safetensors", "is truncated", "re-download")


def test_damaged_safetensors_header(tmp_path):
    f = _good(tmp_path / "ck")
    data = bytearray(f.read_bytes())
    data[8:12] = b"\xff\xfe{{"
    f.write_bytes(bytes(data))
    _refused(f, "damaged safetensors header")
    f.write_bytes(b"\xff" * 8 + data[8:])  # a header length beyond the file
    _refused(f, "damaged safetensors header", "declares")


def test_zero_byte_file(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    _refused(tmp_path, "pytorch_model.bin", "is empty (0 bytes)")


def test_torch_zip_that_does_not_open_and_a_non_torch_file(tmp_path):
    f = tmp_path / "yolov8x.pt"
    torch.save({"w": torch.zeros(1000)}, f)
    f.write_bytes(f.read_bytes()[:2000])
    _refused(f, "yolov8x.pt", "torch zip archive that does not open")
    f.write_bytes(b"<html>rate limited</html>")
    _refused(f, "not a torch checkpoint")
    f.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    _refused(f, "Git LFS pointer")


def test_leftover_partial_download(tmp_path):
    _good(tmp_path / "ck")
    shutil.copy(
        tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "model-2.safetensors.incomplete"
    )
    _refused(tmp_path / "ck", "model-2.safetensors.incomplete", "partial download")
    single = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"w": torch.zeros(2)}, single)
    (tmp_path / "HPS_v2.1_compressed.pt.part").write_bytes(b"x")
    _refused(single, "partial download")


def test_missing_shard(tmp_path):
    _good(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors.index.json").write_text(
        '{"weight_map": {"w": "model-00001-of-00002.safetensors"}}'
    )
    _refused(tmp_path / "ck", "model-00001-of-00002.safetensors", "is missing")


def test_cache_files_get_the_exact_hf_download_command(tmp_path):
    snap = tmp_path / "hub/models--org--name/snapshots" / ("a" * 40) / "sub"
    f = _good(snap)
    assert redownload_hint(f) == (
        f"re-download it: hf download org/name sub/model.safetensors --revision {'a' * 40} "
        "--force-download"
    )


# -- every weight-loading critic runs the checker before loading --------------------------------


def _truncate(path: Path, keep: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_critics_refuse_damaged_weight_files_in_one_line(tmp_path):
    """vqa (transformers), geneval (ultralytics), clip (open_clip file and folder), ocr
    (EasyOCR): a damaged file is a CheckpointError naming it, before any model is built."""
    import json

    import easyocr_en_models
    from PIL import Image

    from milr.critics.clip import ClipScoreCritic
    from milr.critics.geneval import GenEvalCritic
    from milr.critics.ocr import OCRCritic
    from milr.critics.vqa import VQACritic
    from milr.testing import tiny_vision

    image = Image.new("RGB", (32, 32), (200, 30, 30))
    blip = tiny_vision.blip_vqa(tmp_path / "blip")
    _truncate(blip / "model.safetensors", 5000)
    yolo = tmp_path / "yolov8x.pt"
    torch.save({"model": torch.zeros(4000)}, yolo)
    _truncate(yolo, 3000)
    clip_file = tmp_path / "clip.pt"
    clip_file.write_bytes(b"")
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    (clip_dir / "open_clip_pytorch_model.bin").write_bytes(b"<html>404</html>")
    ocr_dir = tmp_path / "ocr"
    shutil.copytree(easyocr_en_models.model_dir(), ocr_dir)
    _truncate(ocr_dir / "english_g2.pth", 4000)
    cases = [
        (VQACritic(weights=str(blip), device="cpu"), "model.safetensors", "is truncated"),
        (GenEvalCritic(weights=str(yolo), device="cpu"), "yolov8x.pt", "does not open"),
        (ClipScoreCritic(weights=str(clip_file), device="cpu"), "clip.pt", "is empty"),
        (
            ClipScoreCritic(weights=str(clip_dir), device="cpu"),
            "open_clip_pytorch_model.bin",
            "not a torch",
        ),
        (OCRCritic(model_dir=str(ocr_dir)), "english_g2.pth", "does not open"),
    ]
    for critic, name, what in cases:
        prompt = 'a sign that says "OPEN"' if name.endswith(".pth") else "a photo of a red car"
        with pytest.raises(CheckpointError) as exc:
            critic.score(image, prompt)
        text = str(exc.value)
        assert "\n" not in text and name in text and what in text, text
