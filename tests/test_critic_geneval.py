"""`geneval` critic: real ultralytics YOLO (random yolov8n with a biased class head) + rules."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from milr import MilrUserError, evaluate
from milr.critics.geneval import GenEvalCritic, geneval_names, pixel_colors
from milr.geneval_rules import GENEVAL_CLASSES, PromptParseError, evaluate_rules
from milr.testing import CriticContract

DOG = GENEVAL_CLASSES.index("dog")
TINY_ARCH = "milr-test-tiny-clip-geneval"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def yolo_files(tmp_path_factory):
    """yolov8n.yaml with random weights whose class head says "dog" everywhere (conf ~0.9997).

    The detector is a real ultralytics model saved with ``YOLO.save`` and loaded from the file,
    exactly like a downloaded checkpoint; only the class-logit biases are set by hand.
    """
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("yolo")
    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    with torch.no_grad():
        for seq in model.model.model[-1].cv3:
            seq[-1].bias.fill_(-10.0)
            seq[-1].bias[DOG] = 8.0
    dog = root / "dog_yolov8n.pt"
    model.save(str(dog))
    return {"dog": str(dog)}


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory):
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("clip")
    (root / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root / f"{TINY_ARCH}.json")
    torch.manual_seed(7)
    path = root / "tiny.pt"
    torch.save(open_clip.create_model(TINY_ARCH).state_dict(), path)
    return str(path)


def solid(rgb, size=(192, 160)):
    return Image.new("RGB", size, rgb)


def critic(weights, **kw):
    return GenEvalCritic(weights=weights, device="cpu", imgsz=160, **kw)


def test_dog_detector_passes_dog_prompts_and_fails_others(yolo_files):
    c = critic(yolo_files["dog"])
    images = [solid((200, 30, 30))] * 4
    prompts = [
        "a photo of a dog",
        "a photo of a cat",
        "a photo of two dogs",
        "a photo of a dog and a cat",
    ]
    r = evaluate(c, images, prompts)
    assert [x.passed for x in r] == [True, False, False, False]
    assert [x.score for x in r] == [1.0, 0.0, 0.5, 0.5]
    assert r[0].details["metadata_source"] == "prompt" and r[0].details["reason"] == ""
    assert "expected cat>=1, found 0" in r[1].details["reason"]
    assert "expected dog<3" in r[2].details["reason"]  # many confident dogs: exclude clause fails
    dets = r[0].details["detections"]
    assert dets and {d["class"] for d in dets} == {"dog"} and len(dets) <= 16
    assert all(d["confidence"] > 0.3 for d in dets)


def test_verdict_equals_rules_on_reported_detections(yolo_files):
    """The critic's verdict is exactly the rules engine applied to what it says it saw."""
    from milr.geneval_rules import Detection

    c = critic(yolo_files["dog"])
    meta = {
        "tag": "position",
        "include": [
            {"class": "dog", "count": 1},
            {"class": "dog", "count": 2, "position": ["left of", 0]},
        ],
    }
    res = c.score(solid((30, 70, 220)), "ignored", meta)
    dets = [
        Detection(d["class"], tuple(d["box"]), d["confidence"]) for d in res.details["detections"]
    ]
    again = evaluate_rules(meta, dets)
    assert again.passed == res.passed and again.score == pytest.approx(res.score)
    assert res.details["metadata_source"] == "metadata"


def test_pixel_colour_fallback(yolo_files):
    c = critic(yolo_files["dog"])
    r = evaluate(c, [solid((220, 30, 30)), solid((30, 70, 220))], ["a photo of a red dog"] * 2)
    assert [x.passed for x in r] == [True, False]
    assert r[0].details["color_method"] == "pixels"
    assert "expected red dog>=1, found 0 red" in r[1].details["reason"]
    assert "1 blue" in r[1].details["reason"]
    colored = [d for d in r[0].details["detections"] if "color" in d]
    assert colored and colored[0]["color"] == "red" and colored[0]["color_probs"]["red"] == 1.0


def test_pixel_colors_votes():
    im = Image.new("RGB", (40, 40), (245, 245, 245))
    im.paste((40, 170, 60), (10, 10, 30, 30))  # the centre is green, the border white
    probs = pixel_colors([im])[0]
    assert max(probs, key=probs.get) == "green" and sum(probs.values()) == pytest.approx(1.0)


def test_clip_colour_classification(yolo_files, tiny_clip_file):
    """With CLIP weights the colours come from zero-shot open_clip on the crops (GenEval's way)."""
    import open_clip
    import torch

    from milr.critics.geneval import COLOR_TEMPLATES
    from milr.geneval_rules import GENEVAL_COLORS

    c = critic(yolo_files["dog"], clip_weights=tiny_clip_file, clip_arch=TINY_ARCH)
    image = solid((240, 220, 30))
    res = c.score(image, "a photo of a yellow dog")
    assert res.details["color_method"] == "clip"
    colored = [d for d in res.details["detections"] if "color_probs" in d]
    assert len(colored) == 1  # only the object the clause uses is classified
    # Recompute the zero-shot classification directly with open_clip.
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_ARCH, pretrained=tiny_clip_file
    )
    tok = open_clip.get_tokenizer(TINY_ARCH)
    x1, y1, x2, y2 = (int(round(v)) for v in colored[0]["box"])
    w, h = image.size
    x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    x2, y2 = max(min(x2, w), x1 + 1), max(min(y2, h), y1 + 1)
    crop = image.crop((x1, y1, x2, y2))
    with torch.no_grad():
        f = model.encode_image(preprocess(crop)[None], normalize=True)[0]
        texts = [t.format(color=col, cls="dog") for col in GENEVAL_COLORS for t in COLOR_TEMPLATES]
        t = model.encode_text(tok(texts), normalize=True).reshape(10, 3, -1).mean(1)
        t = t / t.norm(dim=-1, keepdim=True)
        probs = torch.softmax(100 * t @ f, -1)
    expected = GENEVAL_COLORS[int(probs.argmax())]
    assert colored[0]["color"] == expected
    # Box rounding in details (2 decimals) may shift the crop by a pixel: compare loosely.
    assert colored[0]["color_probs"][expected] == pytest.approx(float(probs.max()), abs=0.05)
    assert res.passed is (expected == "yellow")


def test_batch_equals_single(yolo_files):
    c = critic(yolo_files["dog"], batch_size=2)
    images = [solid((220, 30, 30)), solid((30, 70, 220), (300, 120)), solid((10, 10, 10), (64, 64))]
    prompts = ["a photo of a red dog", "a photo of a blue dog", "a photo of three dogs"]
    batch = evaluate(c, images, prompts)
    single = [c.score(i, p) for i, p in zip(images, prompts, strict=True)]
    assert [(b.score, b.passed) for b in batch] == [(s.score, s.passed) for s in single]
    assert [b.details["detections"] for b in batch] == [s.details["detections"] for s in single]


def test_model_loaded_once(yolo_files):
    a, b = critic(yolo_files["dog"]), critic(yolo_files["dog"], threshold=0.5)
    assert a._model()[0] is b._model()[0]


def test_yaml_config_builds_random_model_offline():
    c = GenEvalCritic(weights="yolov8n.yaml", device="cpu", imgsz=64)
    res = c.score(solid((128, 128, 128), (64, 64)), "a photo of a dog")
    assert res.passed is False and res.details["detections"] == []  # random head: nothing confident


def test_unloadable_weights_are_one_line(tmp_path):
    """ultralytics' own errors run over several lines (a fix list, a YAML parser trace); the
    user error keeps the first, naming the file."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint\nline two\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("nc: [\n")
    for path in (corrupt, broken):
        with pytest.raises(MilrUserError) as exc:
            GenEvalCritic(weights=str(path), device="cpu").score(
                solid((128, 128, 128), (64, 64)), "a photo of a dog"
            )
        message = str(exc.value)
        assert "\n" not in message and path.name in message, message


def test_counting_uses_strict_threshold(yolo_files):
    c = critic(yolo_files["dog"], counting_threshold=0.99999)
    res = c.score(solid((200, 30, 30)), "a photo of two dogs")
    assert res.details["threshold"] == 0.99999
    assert "expected dog>=2, found 0" in res.details["reason"]


def test_odd_images(yolo_files):
    c = critic(yolo_files["dog"])
    base = solid((200, 30, 30))
    odd = [base.convert("L"), base.convert("RGBA"), base.convert("P"), Image.new("RGB", (1, 1))]
    results = evaluate(c, odd, ["a photo of a dog"] * 4)
    assert [r.passed for r in results[:3]] == [True, True, True]
    with pytest.raises(MilrUserError, match="downscale"):
        c.score(Image.new("L", (9000, 8000)), "a photo of a dog")


def test_unparseable_prompt(yolo_files):
    with pytest.raises(PromptParseError, match="'unicorn' is not a known object class"):
        critic(yolo_files["dog"]).score(solid((0, 0, 0)), "a photo of a unicorn")
    res = critic(yolo_files["dog"], on_unparsed="zero").score(solid((0, 0, 0)), "a cat on a mat")
    assert res.score == 0.0 and res.passed is None and "cannot parse" in res.details["error"]


def test_malformed_metadata_names_the_field(yolo_files):
    c = critic(yolo_files["dog"])
    with pytest.raises(MilrUserError, match=r"include\[0\]\.count"):
        c.score(solid((0, 0, 0)), "x", {"include": [{"class": "dog", "count": "two"}]})
    with pytest.raises(MilrUserError, match=r"include\[0\]\.class='unicorn'"):
        c.score(solid((0, 0, 0)), "x", {"include": [{"class": "unicorn", "count": 1}]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weights": None},
            "critic 'geneval': parameter 'weights' is required: pass weights=yolov8x.pt",
        ),
        (
            {"weights": "/models/yolov8x.pt"},
            "'/models/yolov8x.pt' not found.*pass weights=yolov8x.pt",
        ),
        ({"weights": "yolov8n.yaml", "threshold": 1.2}, "'threshold'=1.2 must be < 1"),
        ({"weights": "yolov8n.yaml", "max_objects": 0}, "'max_objects'=0 must be >= 1"),
        ({"weights": "yolov8n.yaml", "dtype": "bfloat16"}, "'dtype'='bfloat16' must be one of"),
        ({"weights": "yolov8n.yaml", "on_unparsed": "skip"}, "'on_unparsed'='skip' must be one of"),
        ({"weights": "yolov8n.yaml", "clip_weights": "/nowhere/clip.pt"}, "does not exist"),
        ({}, "critic 'geneval': parameter 'weights' is required: pass weights=yolov8x.pt"),
        ({"weights": "yolov8n.yaml", "iou": True}, "'iou'=True is a boolean, not a number"),
        ({"weights": "yolov8n.yaml", "imgsz": 31}, "'imgsz'=31 must be >= 32"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(MilrUserError, match=message):
        GenEvalCritic(**kwargs)


def test_names_mapping():
    assert geneval_names({i: str(i) for i in range(80)})[64] == "computer mouse"
    assert geneval_names({0: "person", 1: "remote", 2: "keyboard"}) == {
        0: "person",
        1: "tv remote",
        2: "computer keyboard",
    }


class TestGenEvalContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _weights(self, yolo_files):
        self.weights = yolo_files["dog"]

    def make_critic(self):
        return critic(self.weights)

    def make_batch(self):
        images = [
            solid(c, (64, 64))
            for c in [(220, 30, 30), (30, 70, 220), (40, 170, 60), (240, 220, 30)]
        ]
        prompts = [
            "a photo of a red dog",
            "a photo of a dog",
            "a photo of a cat and a dog",
            "two dogs",
        ]
        return images, prompts, [{} for _ in images]
