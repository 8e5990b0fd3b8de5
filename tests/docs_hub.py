"""The checkpoints the docs' real-weights commands load, as tiny random stand-ins on a loopback Hub.

Each is written with transformers' (or open_clip's, ultralytics') own save functions and served
by `milr.testing.hub_server.LoopbackHub` under the real repo id the docs name, so the real
huggingface_hub client downloads it exactly as on a researcher's machine. ultralytics fetches
``yolov8x.pt`` from GitHub, which no test can reach: a tiny one is put in ultralytics' weights
folder instead (what its first download leaves there), and ``Ultralytics/YOLOv8`` serves one for
the ``hf://`` spelling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from milr.testing.hub_server import LoopbackHub

#: A tiny open_clip tower served under OpenAI CLIP's Hub ids (config in the folder, as timm's).
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _clip_folder(path: Path) -> Path:
    import open_clip
    import torch

    path.mkdir(parents=True, exist_ok=True)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    cfg = path.parent / f"{path.name}-arch.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(cfg.stem, pretrained=None)
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    return path


def build(root: Path, shared_data: Path) -> dict[str, Path]:
    """Write every stand-in under `root`; returns ``{repo_id: folder}``."""
    import torch

    from milr.testing import tiny_vision as tv
    from milr.testing.tiny_janus import save_janus_pro_standin
    from milr.testing.tiny_qwen_vl import qwen2_5_vl

    torch.set_num_threads(1)
    repos: dict[str, Path] = {}
    for size in ("1b", "7b"):
        repos[f"deepseek-community/Janus-Pro-{size.upper()}"] = save_janus_pro_standin(
            shared_data / "janus-pro" / size, root / f"janus-pro-{size}", image_size=32
        )
    repos["IDEA-Research/grounding-dino-tiny"] = tv.grounding_dino(root / "gdino")
    repos["microsoft/git-large-vqav2"] = tv.git_vqa(root / "git")
    repos["Salesforce/blip-vqa-capfilt-large"] = tv.blip_vqa(root / "blip")
    repos["facebook/mask2former-swin-small-coco-instance"] = tv.mask2former(root / "m2f")
    repos["timm/vit_large_patch14_clip_224.openai"] = _clip_folder(root / "clip-l14")
    repos["timm/vit_base_patch32_clip_224.openai"] = _clip_folder(root / "clip-b32")
    repos["Qwen/Qwen2.5-VL-7B-Instruct"] = qwen2_5_vl(root / "qwen2.5-vl")  # scripted: "yes"
    yolo = root / "yolo-hub"
    yolo.mkdir()
    _tiny_yolo(yolo / "yolov8x.pt")
    repos["Ultralytics/YOLOv8"] = yolo
    return repos


def _tiny_yolo(path: Path) -> None:
    """yolov8n's architecture with random weights, saved as ultralytics saves a checkpoint."""
    import torch
    from ultralytics import YOLO

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        YOLO("yolov8n.yaml").save(str(path))


def yolo_config_dir(root: Path, yolo_file: Path) -> Path:
    """A ``YOLO_CONFIG_DIR`` whose settings point ultralytics' weights folder at one holding
    ``yolov8x.pt`` (as after ultralytics' own first download)."""
    weights = root / "ultralytics-weights"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "yolov8x.pt").write_bytes(yolo_file.read_bytes())
    cfg = root / "ultralytics-config"
    cfg.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "YOLO_CONFIG_DIR": str(cfg), "YOLO_OFFLINE": "1"}
    code = f"from ultralytics.utils import SETTINGS; SETTINGS.update(weights_dir={str(weights)!r})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return cfg


def start(root: Path, shared_data: Path) -> tuple[LoopbackHub, Path]:
    """A started hub serving every stand-in, and the ``YOLO_CONFIG_DIR`` to use with it."""
    repos = build(root / "repos", shared_data)
    hub = LoopbackHub().start()
    for repo_id, folder in repos.items():
        hub.add_folder(repo_id, folder)
    return hub, yolo_config_dir(root, repos["Ultralytics/YOLOv8"] / "yolov8x.pt")


def data_mirror(root: Path, shared_data: Path) -> Path:
    """A ``MILR_DATA_MIRROR`` folder (``OWNER/REPO/COMMIT/PATH``, the raw-file host's layout)
    holding the shared GenEval and T2I-CompBench files at their pinned commits, so the docs'
    ``milr bench geneval`` fetches the official prompts as it would from GitHub."""
    from milr.bench.official import SUITES

    local = {"djghosh13/geneval": "geneval", "Karine-Huang/T2I-CompBench": "t2i-compbench"}
    for suite in ("geneval", "t2i-compbench"):
        for _, pin in SUITES[suite].files:
            dest = root / pin.key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((shared_data / local[pin.repo] / Path(pin.path).name).read_bytes())
    return root
