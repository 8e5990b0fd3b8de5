"""`geneval:detector=mask2former` (GenEval's own detector) on a tiny random Mask2Former, and the
float32 numerics of GenEval's evaluator."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from milr import MilrUserError, evaluate
from milr.critics import _colors, _mask2former
from milr.critics.geneval import COCO_ALIASES, GenEvalCritic
from milr.geneval_rules import (
    GENEVAL_CLASSES,
    Detection,
    RuleConfig,
    evaluate_rules,
    f32,
    group_detections,
    relative_position,
)
from milr.testing import CriticContract, sample_batch
from milr.testing import tiny_vision as tv

PROMPTS = [
    "a photo of a red dog",
    "a photo of two cats",
    "a photo of a dog left of a cat",
    "a photo of a bus",
]


@pytest.fixture(scope="session")
def m2f_dir(tmp_path_factory):
    return tv.mask2former(tmp_path_factory.mktemp("m2f"))


class TestMask2FormerContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _dir(self, m2f_dir):
        self.weights = str(m2f_dir)

    def make_critic(self):
        # random weights give class probabilities near 1/81: keep everything so all rules run
        return GenEvalCritic(
            detector="mask2former", weights=self.weights, threshold=0.0, counting_threshold=0.0
        )

    def make_batch(self):
        images, _, metadata = sample_batch()
        return images, PROMPTS, metadata


def test_detections_follow_mmdet_postprocessing(m2f_dir):
    image = sample_batch()[0][0].resize((80, 56))  # not square, not a multiple of 32: padded
    bundle = _mask2former.load("geneval", str(m2f_dir), "cpu")
    dets = _mask2former.detect(bundle, [image], list(GENEVAL_CLASSES), min_score=0.0)[0]
    assert 0 < len(dets) <= 100
    assert [d.confidence for d in dets] == sorted((d.confidence for d in dets), reverse=True)
    for d in dets:
        assert d.mask.shape == (56, 80) and d.mask.dtype == bool
        if d.mask.any():
            ys, xs = np.nonzero(d.mask)
            assert d.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        else:
            assert d.box == (0.0, 0.0, 0.0, 0.0)
        assert 0 < d.confidence <= 1


def test_scores_and_masks_match_hf_post_processing_when_no_resize(tmp_path):
    """At 384x384 (transformers' fixed post-processing size, no padding) both recipes coincide."""
    import torch
    from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

    path = tv.mask2former(tmp_path / "m2f384", image_size=384)
    image = Image.new("RGB", (384, 384), (30, 70, 220))
    image.paste((220, 30, 30), (40, 60, 200, 300))
    bundle = _mask2former.load("geneval", str(path), "cpu")
    ours = _mask2former.detect(bundle, [image], list(GENEVAL_CLASSES), min_score=0.0)[0]
    proc = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        out = model(**proc(images=[image], return_tensors="pt"))
    ref = proc.post_process_instance_segmentation(
        out, threshold=0.0, target_sizes=[(384, 384)], return_binary_maps=True
    )[0]
    assert ref["segments_info"]
    by_key = {(GENEVAL_CLASSES.index(d.cls), round(d.confidence, 6)): d for d in ours}
    for seg, mask in zip(ref["segments_info"], ref["segmentation"], strict=True):
        d = by_key[(seg["label_id"], seg["score"])]
        assert np.array_equal(d.mask, mask.numpy().astype(bool))


def test_class_names_map_coco_spellings(tmp_path):
    from transformers import AutoConfig

    path = tv.mask2former(tmp_path / "coco")
    coco = {"computer mouse": "mouse", "tv remote": "remote", "computer keyboard": "keyboard"}
    cfg = AutoConfig.from_pretrained(path)
    cfg.id2label = {i: coco.get(n, n) for i, n in enumerate(GENEVAL_CLASSES)}
    cfg.label2id = {n: i for i, n in cfg.id2label.items()}
    cfg.save_pretrained(path)
    bundle = _mask2former.load("geneval", str(path), "cpu")
    assert _mask2former.class_names(bundle, COCO_ALIASES) == list(GENEVAL_CLASSES)


def test_masked_crop_paints_background_grey_and_votes_on_the_object():
    image = Image.new("RGB", (40, 40), (30, 70, 220))  # blue background
    mask = np.zeros((40, 40), dtype=bool)
    mask[12:28, 12:16] = True
    image.paste((220, 30, 30), (12, 12, 16, 28))  # a thin red object
    crop, cut = _colors.masked_crop(image, (0, 0, 40, 40), mask)
    assert crop.getpixel((0, 0)) == (0x99, 0x99, 0x99) and crop.getpixel((13, 15)) == (220, 30, 30)
    masked = _colors.pixel_votes([crop], [cut])[0]
    plain = _colors.pixel_votes([_colors.masked_crop(image, (0, 0, 40, 40))[0]])[0]
    assert max(masked, key=masked.get) == "red" and masked["red"] == 1.0
    assert max(plain, key=plain.get) == "blue"


def test_color_clause_reads_the_masked_object(m2f_dir):
    """End to end: with a mask, the colour of a box that is mostly background is the object's."""
    critic = GenEvalCritic(detector="mask2former", weights=str(m2f_dir), threshold=0.0)
    image = Image.new("RGB", (40, 40), (30, 70, 220))
    image.paste((220, 30, 30), (10, 10, 20, 30))
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:30, 10:20] = True
    det = Detection("dog", (0.0, 0.0, 40.0, 40.0), 0.9, mask=mask)
    crop, cut = _colors.masked_crop(image, det.box, det.mask)
    assert (
        max(critic.classify_colors([crop], ["dog"], [cut])[0].items(), key=lambda kv: kv[1])[0]
        == "red"
    )


# -- GenEval's float32 numerics ----------------------------------------------------------------


def test_confidence_of_exactly_float32_threshold_is_not_kept():
    det = Detection("dog", (0, 0, 10, 10), f32(0.3))  # what a float32 detector reports for 0.3
    assert det.confidence > 0.3  # in float64 it is above the threshold ...
    assert group_detections([det], 0.3, 16) == {"dog": [det]}
    assert group_detections([det], 0.3, 16, float32=True) == {}  # ... GenEval compares float32
    meta = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
    assert evaluate_rules(meta, [det], config=RuleConfig()).passed
    assert not evaluate_rules(meta, [det], config=RuleConfig(float32=True)).passed


def test_relation_at_the_cutoff_follows_float32():
    """A point whose direction is 60 degrees below the x axis: cos = 0.5 decides 'right of'."""
    a = (0.0, 0.0, 0.0, 0.0)
    b = (1.0, 1.7320507764816284, 1.0, 1.7320507764816284)  # float32(sqrt(3))
    assert relative_position(b, a) == {"right of", "below"}  # float64: dx just above 0.5
    assert relative_position(b, a, float32=True) == {"below"}  # GenEval (numpy float32): not


def test_float32_relations_match_numpy_float32_on_random_boxes():
    """Our step-by-step float32 arithmetic equals numpy's float32 arithmetic on the same boxes."""

    def numpy_f32(box_a, box_b, margin=0.1):
        boxes = np.array([box_a, box_b], dtype=np.float32).reshape(2, 2, 2)
        centre_a, centre_b = boxes.mean(axis=-2)
        size_a, size_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
        offset = centre_a - centre_b
        shrunk = np.maximum(np.abs(offset) - margin * (size_a + size_b), 0) * np.sign(offset)
        if np.all(np.abs(shrunk) < 1e-3):
            return set()
        dx, dy = shrunk / np.sqrt(offset[0] * offset[0] + offset[1] * offset[1])
        names = (
            (dx < -0.5, "left of"),
            (dx > 0.5, "right of"),
            (dy < -0.5, "above"),
            (dy > 0.5, "below"),
        )
        return {n for ok, n in names if ok}

    rng = np.random.default_rng(0)
    for _ in range(3000):
        a = np.sort(rng.uniform(0, 512, (2, 2)).astype(np.float32), axis=0).reshape(4)
        b = np.sort(rng.uniform(0, 512, (2, 2)).astype(np.float32), axis=0).reshape(4)
        assert relative_position(a.tolist(), b.tolist(), float32=True) == numpy_f32(a, b)


# -- errors ---------------------------------------------------------------------------------


def test_missing_checkpoint_directory_fails_at_construction(tmp_path):
    with pytest.raises(MilrUserError) as err:
        GenEvalCritic(detector="mask2former", weights=str(tmp_path / "m2f-missing"))
    msg = str(err.value)
    assert (
        "'geneval'" in msg
        and "m2f-missing" in msg
        and "mask2former-swin-small-coco-instance" in msg
    )
    assert "\n" not in msg


def test_wrong_architecture(tmp_path):
    path = tv.git_vqa(tmp_path / "git")
    critic = GenEvalCritic(detector="mask2former", weights=str(path))
    with pytest.raises(MilrUserError, match="'git' checkpoint; this critic runs 'mask2former'"):
        critic.score(sample_batch()[0][0], "a photo of a dog")


def test_batched_by_size_equals_single(m2f_dir):
    critic = GenEvalCritic(
        detector="mask2former", weights=str(m2f_dir), threshold=0.0, batch_size=8
    )
    images = [im.resize((64 + 8 * (i % 2), 64)) for i, im in enumerate(sample_batch()[0])]
    batch = evaluate(critic, images, PROMPTS, [{}] * 4)
    for im, p, b in zip(images, PROMPTS, batch, strict=True):
        s = critic.score(im, p)
        assert s.details["detections"] == b.details["detections"]
