"""Cache state of every weights spelling (`milr.weight_sources`), as --dry-run and `milr download`
report it: Hub ids, hf:// files, open_clip hf-hub: folders and pretrained tags (whose files come
from timm/... Hub repos), ultralytics' own names (its weights folder). The real huggingface_hub
client downloads from the loopback Hub; ultralytics' folder is a temp one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_milr

from milr.weight_sources import locate, open_clip_id

L14 = "timm/vit_large_patch14_clip_224.openai"


def test_hub_ids_files_and_open_clip_tags_before_and_after_download(milr_hub, tmp_path):
    pytest.importorskip("open_clip")
    from docs_hub import _clip_folder

    from milr.critics._openclip import hub_folder
    from milr.hub import resolve, resolve_file

    milr_hub.add_folder(L14, _clip_folder(tmp_path / "clip"))
    milr_hub.add_files("org/model", {"config.json": b"{}", "model.safetensors": b"x" * 1000})
    milr_hub.add_files("org/files", {"w.pt": b"y" * 500})
    home = Path(os.environ["HF_HOME"])

    tag = locate("ViT-L-14:openai")  # open_clip's OpenAI tag: its file is in timm's Hub repo
    assert (tag.status, tag.library, tag.path) == ("download", "huggingface_hub", None)
    assert tag.source == f"{milr_hub.url}/{L14}"
    assert "not cached: downloaded by huggingface_hub from " + milr_hub.url in tag.describe()
    assert locate(f"hf-hub:{L14}").status == "download"
    one = locate("hf://org/files/w.pt")
    assert one.source == f"{milr_hub.url}/org/files/resolve/main/w.pt"
    assert locate("org/model").source == f"{milr_hub.url}/org/model"

    hub_folder(L14, "test")  # what the clip critics fetch, through the real client
    resolve("org/model", who="test")
    resolve_file("hf://org/files/w.pt", who="test")
    for wid in ("ViT-L-14:openai", f"hf-hub:{L14}"):
        got = locate(wid)
        assert got.status == "cached" and got.path and got.size, got
        assert Path(got.path).is_file() and Path(got.path).is_relative_to(home)
        assert Path(got.path).name == "open_clip_pytorch_model.bin"
    model = locate("org/model")
    assert model.status == "cached" and (Path(model.path) / "config.json").is_file()
    assert model.size == 1002
    assert locate("hf://org/files/w.pt").size == 500
    assert locate("ViT-L-14:not-a-tag").status == "library"  # not in open_clip's table


def test_ultralytics_names_are_looked_up_in_its_weights_folder(tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    from ultralytics.utils import SETTINGS

    monkeypatch.setitem(SETTINGS, "weights_dir", str(tmp_path / "w"))  # YOLO_CONFIG_DIR: a temp
    got = locate("yolov8x.pt")
    assert (got.status, got.library) == ("download", "ultralytics")
    assert got.path == str(tmp_path / "w" / "yolov8x.pt")
    assert got.source is not None and got.source.startswith(
        "https://github.com/ultralytics/assets/releases/download/"
    )
    assert got.source.endswith("/yolov8x.pt")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "yolov8x.pt").write_bytes(b"z" * 300)
    got = locate("yolov8x.pt")
    assert (got.status, got.path, got.size) == ("cached", str(tmp_path / "w" / "yolov8x.pt"), 300)
    assert got.describe() == f"cached (ultralytics) at {tmp_path / 'w' / 'yolov8x.pt'}"
    assert locate("yolov8n.yaml").status == "builtin" and locate("shapes").status == "builtin"
    assert locate("yolo-not-a-release.pt").status == "library"


def test_open_clip_critics_report_tags_with_their_arch():
    pytest.importorskip("open_clip")
    from milr.critics.clip import ClipScoreCritic
    from milr.critics.geneval import GenEvalCritic

    assert ClipScoreCritic(weights="openai").weights_ids() == ["ViT-L-14:openai"]
    assert ClipScoreCritic(weights="random").weights_ids() == ["random"]
    assert open_clip_id("ViT-B-32", "hf-hub:timm/x") == "hf-hub:timm/x"
    assert open_clip_id("ViT-B-32", "ViT-B-32.pt") == "ViT-B-32.pt"
    pytest.importorskip("ultralytics")
    critic = GenEvalCritic(weights="yolov8n.yaml", clip_weights="openai", device="cpu")
    assert critic.weights_ids() == ["yolov8n.yaml", "ViT-L-14:openai"]


@pytest.mark.slow
def test_dry_run_then_download_report_each_librarys_cache(milr_hub, tmp_path):
    """--dry-run says what is where before `milr download`; after it, everything is cached
    (the hf-hub: folder in the Hub cache, yolov8x.pt in ultralytics' folder), with paths."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("open_clip")
    from docs_hub import _clip_folder, _tiny_yolo, yolo_config_dir

    milr_hub.add_folder(L14, _clip_folder(tmp_path / "clip"))
    _tiny_yolo(tmp_path / "yolov8x.pt")
    cfg = yolo_config_dir(tmp_path / "yolo", tmp_path / "yolov8x.pt")
    env = {**milr_hub.env(os.environ["HF_HOME"]), "YOLO_CONFIG_DIR": str(cfg)}
    specs = ["-c", "geneval:weights=yolov8x.pt,device=cpu", "-c", f"clip:weights=hf-hub:{L14}"]
    plan = run_milr("generate", "a photo of a bench", "-M", "shapes", *specs, "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    weights = tmp_path / "yolo" / "ultralytics-weights" / "yolov8x.pt"
    assert f"weights yolov8x.pt: cached (ultralytics) at {weights}" in plan.stdout
    assert f"weights hf-hub:{L14}: not cached: downloaded by huggingface_hub from " in plan.stdout
    assert f"would download: hf-hub:{L14}" in plan.stdout
    res = run_milr("download", "-M", "shapes", *specs, "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["yolov8x.pt"]["where"] == "ultralytics"
    assert rows["yolov8x.pt"]["path"] == str(weights)
    clip = rows[f"hf-hub:{L14}"]
    assert clip["where"] == "huggingface" and clip["size"] > 0
    assert clip["path"].startswith(os.environ["HF_HOME"])
    assert rows["shapes"]["where"] == "built in"


def test_a_pinned_revision_is_reported_and_looked_up(milr_hub, tmp_path):
    """Critics report `revision` / `clip_revision` as ``ID@REV``; `locate` looks for that revision,
    not whatever snapshot of the repo happens to be cached."""
    from milr.critics.vqa import VQACritic
    from milr.hub import resolve
    from milr.weight_sources import split_revision, with_revision

    assert with_revision("org/m", "v1") == "org/m@v1"
    assert with_revision("hf-hub:timm/x", "v1") == "hf-hub:timm/x@v1"
    assert with_revision("hf://org/f/w.pt", "v1") == "hf://org/f@v1/w.pt"
    assert with_revision("hf://org/f@v2/w.pt", "v1") == "hf://org/f@v2/w.pt"  # its own revision
    assert with_revision("yolov8x.pt", "v1") == "yolov8x.pt"
    assert with_revision(str(tmp_path), "v1") == str(tmp_path)  # a folder: no revision
    assert with_revision("org/m", None) == "org/m"
    assert split_revision("org/m@v1") == ("org/m", "v1")
    assert split_revision("hf-hub:timm/x@abc123") == ("hf-hub:timm/x", "abc123")
    assert split_revision("org/m") == ("org/m", None)
    assert VQACritic(weights="org/m", revision="v1").weights_ids() == ["org/m@v1"]
    assert VQACritic(weights="org/m").weights_ids() == ["org/m"]

    old = milr_hub.add_files("org/m", {"config.json": b'{"v": 1}'}, revision="v1")
    milr_hub.add_files("org/m", {"config.json": b'{"v": 2}'})
    resolve("org/m", who="test")  # only the default branch is cached
    assert locate("org/m").status == "cached"
    pinned = locate("org/m@v1")
    assert (pinned.status, pinned.id) == ("download", "org/m@v1"), pinned
    resolve("org/m", who="test", revision="v1")
    pinned = locate("org/m@v1")
    assert pinned.status == "cached" and old in pinned.path, pinned
    assert json.loads((Path(pinned.path) / "config.json").read_text()) == {"v": 1}
    assert locate("org/m", revision="v1").path == pinned.path


def test_every_revision_parameter_pins_its_weights_in_the_report(milr_hub, tmp_path):
    """Each member of the kind: the detector's `revision`, `clip_revision` (geneval, grounding),
    the open_clip critics' `revision`, the judge's `revision`, and `--revision` of the model in
    `--dry-run`."""
    pytest.importorskip("open_clip")
    from milr.critics.clip import ClipScoreCritic
    from milr.critics.grounding import GroundingCritic
    from milr.critics.judge import JudgeCritic

    clip = ClipScoreCritic(weights="hf-hub:timm/x", revision="v1")
    assert clip.weights_ids() == ["hf-hub:timm/x@v1"]
    grounding = GroundingCritic(
        weights="IDEA-Research/grounding-dino-tiny", revision="v2",
        clip_weights="hf-hub:timm/x", clip_revision="v1",
    )  # fmt: skip
    assert grounding.weights_ids() == ["IDEA-Research/grounding-dino-tiny@v2", "hf-hub:timm/x@v1"]
    assert JudgeCritic(model="org/judge", revision="v3").weights_ids() == ["org/judge@v3"]
    assert JudgeCritic(model="org/judge").weights_ids() == ["org/judge"]
    pytest.importorskip("ultralytics")
    from milr.critics.geneval import GenEvalCritic

    geneval = GenEvalCritic(
        weights="hf://Ultralytics/YOLOv8/yolov8x.pt", revision="v4", clip_weights="openai",
        clip_revision="v5", device="cpu",
    )  # fmt: skip
    assert geneval.weights_ids() == ["hf://Ultralytics/YOLOv8@v4/yolov8x.pt", "ViT-L-14:openai"]

    milr_hub.add_files("org/m", {"config.json": b"{}"}, revision="v1")
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    plan = run_milr(
        "generate", "a red square", "--model", "org/m", "--revision", "v1", "--critic", "color",
        "--dry-run", env=env,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "org/m@v1" in plan.stdout and f"{milr_hub.url}/org/m" in plan.stdout
