"""Generator and critics load Hub ids from the loopback Hub on first use, then offline.

Checkpoints are tiny random models written with transformers' own ``save_pretrained`` and
served under the real repo ids; the real huggingface_hub client downloads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from milr.errors import CheckpointError, MilrUserError
from milr.testing import tiny_vision
from milr.testing.tiny_janus import save_janus_pro_standin, save_tiny_janus

#: An open_clip config small enough to build in a test (random weights).
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def janus_pro_1b(tmp_path_factory, shared_data):
    """A Janus-Pro-1B stand-in: the real config/tokenizer/processor files, tiny weights."""
    return save_janus_pro_standin(
        shared_data / "janus-pro" / "1b", tmp_path_factory.mktemp("jp1b") / "ck", image_size=32
    )


def test_generator_hub_id_downloads_on_first_use_then_runs_offline(
    milr_hub, monkeypatch, janus_pro_1b
):
    import milr

    commit = milr_hub.add_folder("deepseek-community/Janus-Pro-1B", janus_pro_1b)
    gen = milr.load_generator("deepseek-community/Janus-Pro-1B", device="cpu")
    info = gen.describe()
    assert info["checkpoint"] == "deepseek-community/Janus-Pro-1B" and info["commit"] == commit
    assert any(p.startswith("/lfs/deepseek-community/Janus-Pro-1B/") for _, p in milr_hub.requests)
    milr_hub.stop()  # the server is gone: the cache serves
    _offline(monkeypatch)
    again = milr.load_generator("deepseek-community/Janus-Pro-1B", device="cpu")
    assert again.describe()["commit"] == commit


def test_generator_revision_is_pinned_and_recorded(milr_hub, tmp_path):
    import milr

    old = milr_hub.add_folder("org/tiny-janus", save_tiny_janus(tmp_path / "a", seed=1), "v1")
    milr_hub.add_folder("org/tiny-janus", save_tiny_janus(tmp_path / "b", seed=2))
    gen = milr.load_generator("org/tiny-janus", device="cpu", revision="v1")
    assert gen.describe()["revision"] == "v1" and gen.describe()["commit"] == old
    with pytest.raises(MilrUserError, match="applies to Hub ids.*local directory"):
        milr.load_generator("shapes", device="cpu", revision="v1")


def test_generator_original_janus_release_and_unknown_id(milr_hub):
    import milr

    with pytest.raises(MilrUserError, match="'deepseek-community/Janus-Pro-1B'"):
        milr.load_generator("deepseek-ai/Janus-Pro-1B", device="cpu")
    with pytest.raises(MilrUserError, match="'org/missing'.*no such repo") as exc:
        milr.load_generator("org/missing", device="cpu")
    assert "\n" not in str(exc.value)


def test_generator_damaged_weight_file_from_the_hub_is_one_line(milr_hub, tmp_path):
    import milr

    ck = save_tiny_janus(tmp_path / "ck")
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # served as is: the download is "complete"
    milr_hub.add_folder("org/broken-janus", ck)
    with pytest.raises(CheckpointError) as exc:
        milr.load_generator("org/broken-janus", device="cpu")
    text = str(exc.value)
    assert "\n" not in text and "model.safetensors" in text and "is truncated" in text
    assert "hf download org/broken-janus model.safetensors --revision " in text
    assert "--force-download" in text


def test_vqa_critic_downloads_its_hub_id(milr_hub, monkeypatch, tmp_path):
    from milr.critics._hf import clear_cache
    from milr.critics.vqa import VQACritic

    tiny_vision.blip_vqa(tmp_path / "blip")
    milr_hub.add_folder("Salesforce/blip-vqa-capfilt-large", tmp_path / "blip")
    critic = VQACritic(weights="Salesforce/blip-vqa-capfilt-large", device="cpu")
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    first = critic.score(image, "a red apple")
    clear_cache()
    milr_hub.stop()
    _offline(monkeypatch)
    assert VQACritic(weights="Salesforce/blip-vqa-capfilt-large", device="cpu").score(
        image, "a red apple"
    ).score == pytest.approx(first.score)


def test_critic_gated_repo_is_one_line_before_any_weight(milr_hub, tmp_path, monkeypatch):
    from milr.critics.grounding import GroundingCritic

    monkeypatch.delenv("HF_TOKEN", raising=False)
    tiny_vision.grounding_dino(tmp_path / "gd")
    milr_hub.add_folder("IDEA-Research/grounding-dino-tiny", tmp_path / "gd")
    milr_hub.gated.add("IDEA-Research/grounding-dino-tiny")
    critic = GroundingCritic(weights="IDEA-Research/grounding-dino-tiny", device="cpu")
    with pytest.raises(MilrUserError) as exc:
        critic.load()
    text = str(exc.value)
    assert "\n" not in text and "critic 'grounding'" in text and "gated" in text
    assert "hf auth login" in text


def test_critic_offline_not_cached_says_how_to_prefetch(monkeypatch, tmp_path):
    from milr.critics.vqa import VQACritic

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    critic = VQACritic(weights="microsoft/git-large-vqav2", device="cpu")
    with pytest.raises(MilrUserError) as exc:
        critic.load()
    text = str(exc.value)
    assert "'microsoft/git-large-vqav2' is not in the Hugging Face cache" in text
    assert "hf download microsoft/git-large-vqav2" in text and "\n" not in text


def test_critic_revision_pins_the_checkpoint(milr_hub, tmp_path):
    from milr.critics.vqa import VQACritic

    tiny_vision.git_vqa(tmp_path / "git")
    old = milr_hub.add_folder("microsoft/git-large-vqav2", tmp_path / "git", revision="v1")
    critic = VQACritic(weights="microsoft/git-large-vqav2", revision="v1", device="cpu")
    assert Path(critic.load().source).name == old
    with pytest.raises(MilrUserError, match="revision 'v9' does not exist"):
        VQACritic(weights="microsoft/git-large-vqav2", revision="v9", device="cpu").load()


def test_hps_hub_file_and_openai_clip_get_quick_gelu(milr_hub, tmp_path):
    """hf://OWNER/NAME/FILE is fetched; OpenAI weights are built with QuickGELU in any spelling."""
    import open_clip
    import torch

    from milr.critics import _openclip

    cfg = TINY_CLIP
    (tmp_path / "milr-hub-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "milr-hub-tiny-clip.json")
    state = open_clip.create_model("milr-hub-tiny-clip", pretrained=None).state_dict()
    repo = tmp_path / "hps"
    repo.mkdir()
    torch.save({"state_dict": state}, repo / "HPS_v2.1_compressed.pt")
    milr_hub.add_folder("xswu/HPSv2", repo)
    bundle = _openclip.load_open_clip(
        "milr-hub-tiny-clip",
        "hf://xswu/HPSv2/HPS_v2.1_compressed.pt",
        device="cpu",
        dtype="float32",
        critic="hps",
        extra=None,
    )
    assert bundle.source.endswith("HPS_v2.1_compressed.pt") and not bundle.quick_gelu
    folder = tmp_path / "openai"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    milr_hub.add_folder("timm/vit_large_patch14_clip_224.openai", folder)
    openai = _openclip.load_open_clip(
        "ViT-L-14",
        "hf-hub:timm/vit_large_patch14_clip_224.openai",
        device="cpu",
        dtype="float32",
        critic="clip",
        extra=None,
    )
    assert openai.quick_gelu
    acts = {type(m).__name__ for m in openai.model.modules()}
    assert "QuickGELU" in acts
    assert _openclip.openai_weights("ViT-L-14", "openai")
    assert not _openclip.openai_weights("ViT-L-14", "laion2b_s32b_b82k")


@pytest.mark.slow
def test_cli_generate_downloads_then_runs_offline_with_the_server_gone(milr_hub, tmp_path):
    """`milr generate --model ID --revision REV`: the real client downloads (its progress bars
    show), the trajectory records the commit; then offline with the server gone it runs from the
    cache; a gated model is exit 2 with one line."""
    from cli_helpers import run_milr

    ck = save_tiny_janus(tmp_path / "ck")
    commit = milr_hub.add_folder("org/tiny-janus", ck, revision="v1")
    env = milr_hub.env(tmp_path / "hf-home")
    args = ["--critic", "color:target=red", "--steps", "1", "--device", "cpu"]
    first = run_milr(
        "generate", "a red square", "--model", "org/tiny-janus", "--revision", "v1",
        "--out", str(tmp_path / "a"), *args, env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Fetching 7 files" in first.stderr  # huggingface_hub's download bar is shown
    trajectory = json.loads((tmp_path / "a" / "trajectory.json").read_text())
    assert json.dumps(trajectory).count(commit) >= 1 and '"v1"' in json.dumps(trajectory)
    milr_hub.stop()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    again = run_milr(
        "generate", "a red square", "--model", "org/tiny-janus", "--revision", "v1",
        "--out", str(tmp_path / "b"), *args, env=offline,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    missing = run_milr(
        "generate", "a red square", "--model", "org/other", "--out", str(tmp_path / "c"),
        *args, env=offline,
    )  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "hf download org/other" in missing.stderr


def test_geneval_clip_revision_pins_the_colour_classifier(milr_hub, tmp_path):
    """`clip_revision` pins hf-hub: `clip_weights` (as `revision` pins the detector's weights)."""
    import open_clip
    import torch

    from milr.critics.geneval import GenEvalCritic

    cfg = TINY_CLIP
    (tmp_path / "milr-rev-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "milr-rev-tiny-clip.json")
    commits = []
    for seed in (1, 2):  # two snapshots: v1, then a newer default branch
        torch.manual_seed(seed)
        folder = tmp_path / f"clip{seed}"
        folder.mkdir()
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        state = open_clip.create_model("milr-rev-tiny-clip", pretrained=None).state_dict()
        torch.save(state, folder / "open_clip_pytorch_model.bin")
        commits.append(
            milr_hub.add_folder("org/rev-clip", folder, revision="v1" if seed == 1 else "main")
        )
    spec = {"weights": "yolov8n.yaml", "clip_weights": "hf-hub:org/rev-clip", "device": "cpu"}
    pinned = GenEvalCritic(**spec, clip_arch="milr-rev-tiny-clip", clip_revision="v1")
    latest = GenEvalCritic(**spec, clip_arch="milr-rev-tiny-clip")
    crop = Image.new("RGB", (32, 32), (200, 30, 30))
    got = [c.classify_colors([crop], ["dog"])[0] for c in (pinned, latest)]
    assert got[0] != got[1]  # different weights, different colour probabilities
    assert pinned.params.clip_revision == "v1"
    with pytest.raises(MilrUserError, match="revision 'v9' does not exist"):
        GenEvalCritic(**spec, clip_arch="milr-rev-tiny-clip", clip_revision="v9").prepare()
