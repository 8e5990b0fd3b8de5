"""`clip` and `hps` critics on a tiny registered open_clip architecture with saved random weights."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image, ImageDraw

from milr import MilrUserError, evaluate
from milr.critics import _openclip
from milr.critics.clip import ClipScoreCritic
from milr.critics.hps import HPSCritic
from milr.testing import CriticContract

TINY_ARCH = "milr-test-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OTHER_ARCH = "milr-test-tiny-clip-wide"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """Register a tiny arch; save random weights as a state dict, an HPS-style dict and a local dir."""
    import open_clip
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny-clip")
    (root / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root / f"{TINY_ARCH}.json")
    wide = json.loads(json.dumps(TINY_CFG))
    wide["embed_dim"] = 48
    (root / f"{OTHER_ARCH}.json").write_text(json.dumps(wide))
    open_clip.add_model_config(root / f"{OTHER_ARCH}.json")
    torch.manual_seed(1234)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    state = model.state_dict()
    plain = root / "tiny_clip.pt"
    torch.save(state, plain)
    hps = root / "HPS_tiny.pt"
    torch.save({"state_dict": state}, hps)
    local = root / "local"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    torch.save(state, local / "open_clip_pytorch_model.bin")
    return {"plain": str(plain), "hps": str(hps), "local": f"local-dir:{local}"}


def images_and_prompts():
    colors = [(220, 30, 30), (30, 70, 220), (40, 170, 60), (240, 220, 30)]
    images = []
    for i, c in enumerate(colors):
        im = Image.new("RGB", (96 + 16 * i, 80), (245, 245, 245))
        ImageDraw.Draw(im).ellipse([10, 10, 60 + 8 * i, 70], fill=c)
        images.append(im)
    prompts = ["a red circle", "a blue circle", "a green circle", "a red circle"]  # one repeat
    return images, prompts


def direct_cosines(weights, images, prompts):
    """The same computation written directly against open_clip."""
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH, pretrained=weights)
    model.eval()
    tok = open_clip.get_tokenizer(TINY_ARCH)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        txt = model.encode_text(tok(prompts))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).tolist()


def test_clip_equals_direct_open_clip(tiny_clip):
    images, prompts = images_and_prompts()
    expected = direct_cosines(tiny_clip["plain"], images, prompts)
    critic = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu", w=50.0)
    results = evaluate(critic, images, prompts)
    for res, cos in zip(results, expected, strict=True):
        assert res.details["cosine"] == pytest.approx(cos, abs=1e-5)
        assert res.score == pytest.approx(min(1.0, 50.0 * max(cos, 0.0)), abs=1e-5)
        assert res.details["clipscore"] == pytest.approx(100 * max(cos, 0.0), abs=1e-3)
        assert res.passed is None
    assert len({round(r.details["cosine"], 6) for r in results}) >= 3  # not a constant


def test_clip_default_w_and_threshold(tiny_clip):
    images, prompts = images_and_prompts()
    expected = direct_cosines(tiny_clip["plain"], images, prompts)
    critic = ClipScoreCritic(
        weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu", threshold=0.5
    )
    for res, cos in zip(evaluate(critic, images, prompts), expected, strict=True):
        score = min(1.0, 2.5 * max(cos, 0.0))
        assert res.score == pytest.approx(score, abs=1e-5)
        assert res.passed is (score >= 0.5)


def test_hps_equals_direct_open_clip(tiny_clip):
    images, prompts = images_and_prompts()
    expected = direct_cosines(tiny_clip["plain"], images, prompts)
    critic = HPSCritic(weights=tiny_clip["hps"], arch=TINY_ARCH, device="cpu", low=-1.0, high=1.0)
    for res, hps in zip(evaluate(critic, images, prompts), expected, strict=True):
        assert res.details["hps"] == pytest.approx(hps, abs=1e-5)
        assert res.score == pytest.approx((hps + 1) / 2, abs=1e-5)
    default = HPSCritic(weights=tiny_clip["hps"], arch=TINY_ARCH, device="cpu")
    for res, hps in zip(evaluate(default, images, prompts), expected, strict=True):
        assert res.score == pytest.approx(min(1, max(0, (hps - 0.15) / 0.2)), abs=1e-5)


def test_local_dir_loads_the_same_weights(tiny_clip):
    images, prompts = images_and_prompts()
    a = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu")
    b = ClipScoreCritic(weights=tiny_clip["local"], device="cpu")
    ca = [r.details["cosine"] for r in evaluate(a, images, prompts)]
    cb = [r.details["cosine"] for r in evaluate(b, images, prompts)]
    assert ca == pytest.approx(cb, abs=1e-6)


def test_batch_equals_per_image_and_chunking(tiny_clip):
    images, prompts = images_and_prompts()
    critic = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu", batch_size=3)
    batch = [r.details["cosine"] for r in evaluate(critic, images, prompts)]
    single = [critic.score(im, p).details["cosine"] for im, p in zip(images, prompts, strict=True)]
    assert batch == pytest.approx(single, abs=1e-5)


def test_model_loaded_once_per_process(tiny_clip):
    a = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu")
    b = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu", w=1.0)
    h = HPSCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu")
    assert a._bundle() is b._bundle() is h._bundle()
    assert (
        a._bundle()
        is not HPSCritic(weights=tiny_clip["hps"], arch=TINY_ARCH, device="cpu")._bundle()
    )


def test_bfloat16_close_to_float32(tiny_clip):
    images, prompts = images_and_prompts()
    f32 = ClipScoreCritic(weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu")
    b16 = ClipScoreCritic(
        weights=tiny_clip["plain"], arch=TINY_ARCH, device="cpu", dtype="bfloat16"
    )
    a = [r.details["cosine"] for r in evaluate(f32, images, prompts)]
    b = [r.details["cosine"] for r in evaluate(b16, images, prompts)]
    assert b == pytest.approx(a, abs=0.05)


def test_odd_images(tiny_clip):
    critic = HPSCritic(weights=tiny_clip["hps"], arch=TINY_ARCH, device="cpu")
    base = images_and_prompts()[0][0]
    odd = [
        base.convert("L"),
        base.convert("RGBA"),
        base.convert("P"),
        Image.new("RGB", (1, 1), (10, 200, 30)),
        Image.new("I;16", (40, 30)),
    ]
    results = evaluate(critic, odd, ["a red circle"] * len(odd))
    assert all(0 <= r.score <= 1 and math.isfinite(r.details["hps"]) for r in results)
    # Grayscale converted to RGB scores like the explicitly converted image.
    direct = critic.score(base.convert("L").convert("RGB"), "a red circle")
    assert results[0].details["hps"] == pytest.approx(direct.details["hps"], abs=1e-6)
    with pytest.raises(MilrUserError, match="downscale"):
        critic.score(Image.new("L", (9000, 8000)), "x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": None}, "critic 'clip': parameter 'weights' is required: pass a checkpoint"),
        ({"weights": "/nowhere/ViT-L-14.pt"}, "'/nowhere/ViT-L-14.pt' does not exist"),
        ({"weights": "local-dir:/nowhere"}, "open_clip_config.json"),
        ({"weights": "random", "w": 0}, "'w'=0 must be > 0"),
        ({"weights": "random", "dtype": "float64"}, "'dtype'='float64' must be one of"),
        ({"weights": "random", "batch_size": 0}, "'batch_size'=0 must be >= 1"),
        ({"weights": "random", "threshold": 2}, "'threshold'=2 must be <= 1"),
        ({"weights": "random", "threshold": True}, "'threshold'=True is a boolean, not a number"),
    ],
)
def test_clip_bad_parameters(kwargs, message):
    with pytest.raises(MilrUserError, match=message):
        ClipScoreCritic(**kwargs)


def test_hps_defaults_to_the_hub_checkpoint_and_needs_a_sane_range():
    assert HPSCritic().params.weights == "hf://xswu/HPSv2/HPS_v2.1_compressed.pt"
    with pytest.raises(MilrUserError, match="names no file"):
        HPSCritic(weights="hf://xswu/HPSv2")
    with pytest.raises(MilrUserError, match="low < high"):
        HPSCritic(weights="random", low=0.5, high=0.2)


def test_load_errors_are_user_errors(tiny_clip):
    images, prompts = images_and_prompts()
    with pytest.raises(MilrUserError, match="not an open_clip architecture"):
        ClipScoreCritic(weights="random", arch="no-such-arch", device="cpu").score(images[0], "x")
    with pytest.raises(MilrUserError, match="neither an existing file nor a pretrained tag"):
        ClipScoreCritic(weights="notatag", arch="ViT-B-32", device="cpu").score(images[0], "x")
    with pytest.raises(MilrUserError, match="does not load into open_clip"):
        ClipScoreCritic(weights=tiny_clip["plain"], arch=OTHER_ARCH, device="cpu").score(
            images[0], "x"
        )
    with pytest.raises(MilrUserError, match="device='cuda:7'"):
        ClipScoreCritic(weights="random", arch=TINY_ARCH, device="cuda:7").score(images[0], "x")


def test_pretrained_tag_offline_names_the_file(monkeypatch, tmp_path):
    """No download offline: the error names the Hub repo the tag lives in and how to fetch it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    critic = ClipScoreCritic(weights="openai", arch="ViT-B-32", device="cpu")
    with pytest.raises(
        MilrUserError,
        match="'timm/vit_base_patch32_clip_224.openai' is not in the Hugging Face cache.*offline.*"
        "hf download timm/vit_base_patch32_clip_224.openai",
    ):
        critic.score(Image.new("RGB", (8, 8)), "x")
    assert not any(k[1] == "openai" for k in _openclip._CACHE)


class TestClipContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _weights(self, tiny_clip):
        self.weights = tiny_clip["plain"]

    def make_critic(self):
        return ClipScoreCritic(weights=self.weights, arch=TINY_ARCH, device="cpu")


class TestHPSContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _weights(self, tiny_clip):
        self.weights = tiny_clip["hps"]

    def make_critic(self):
        return HPSCritic(weights=self.weights, arch=TINY_ARCH, device="cpu")


def test_checkpoint_with_missing_or_foreign_tensors_is_refused(tiny_clip, tmp_path):
    """A partial state dict is refused in one line naming its tensors and the file."""
    import torch

    from milr.errors import CheckpointError

    images, _ = images_and_prompts()
    state = torch.load(tiny_clip["plain"], weights_only=True)
    dropped = sorted(k for k in state if k.startswith("visual."))[0]
    del state[dropped]
    state["foreign.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as exc:
        ClipScoreCritic(weights=str(path), arch=TINY_ARCH, device="cpu").score(images[0], "x")
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    assert f"1 missing tensor(s) ({dropped})" in msg and "(foreign.weight)" in msg


def test_openai_weights_get_quick_gelu_whatever_the_spelling(tmp_path):
    """open_clip builds ViT-L-14 with GELU for OpenAI's weights unless told: milr tells it for
    the tag, a file named like OpenAI's release, and a folder whose name or config says so."""
    release = tmp_path / "ViT-L-14.pt"
    release.write_bytes(b"x")
    other = tmp_path / "laion-vit-l-14.pt"
    other.write_bytes(b"x")
    folder = tmp_path / "vit_large_patch14_clip_224.openai"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True}}))
    assert _openclip.openai_weights("ViT-L-14", "openai")
    assert _openclip.openai_weights("ViT-L-14", str(release))
    assert not _openclip.openai_weights("ViT-L-14", str(other))
    assert _openclip.openai_weights("ViT-L-14", f"local-dir:{folder}")
    assert _openclip.openai_weights("ViT-L-14", f"local-dir:{plain}")
    assert not _openclip.openai_weights("ViT-L-14", "laion2b_s32b_b82k")
