"""GenEval's own detector through transformers: Mask2Former COCO instance segmentation.

GenEval (``evaluation/evaluate_images.py``) runs mmdetection's Mask2Former Swin-S
(``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``); the transformers port of the same
weights is ``facebook/mask2former-swin-small-coco-instance``. This module turns the model's
query outputs into per-object detections the way mmdetection's instance post-processing does,
so the rules see the same boxes and scores:

1. mask logits are upsampled (bilinear) to the padded input, cropped to the resized image
   (the ``pixel_mask``), and upsampled (bilinear) to the original image size;
2. class probabilities are ``softmax`` over the 80 classes + "no object" (dropped); the
   ``max_per_image`` (100) best (query, class) pairs are kept;
3. an object's mask is its logits > 0; its score is the class probability times the mean
   sigmoid of the mask logits inside the mask;
4. its box is the mask's extent ``(x_min, y_min, x_max + 1, y_max + 1)`` (an empty mask
   gives a zero box).

All in float32. The input resize follows the checkpoint's image processor (transformers'
config for the Swin-S instance checkpoint), which may differ from mmdetection's test resize.
"""

from __future__ import annotations

from typing import Any

from milr.critics import _hf
from milr.geneval_rules import GENEVAL_CLASSES, Detection

MODEL_TYPES = {"mask2former": "Mask2FormerForUniversalSegmentation"}
HINT = (
    "pass weights=ID or DIR, a Hub id or a local transformers Mask2Former COCO instance "
    "checkpoint (e.g. facebook/mask2former-swin-small-coco-instance)"
)


def load(
    critic: str, weights: str, device: str, dtype: str = "float32", revision: str | None = None
) -> _hf.HFBundle:
    """The Mask2Former model and its image processor, loaded once per process."""
    return _hf.load_checkpoint(
        critic, weights, MODEL_TYPES, device=device, dtype=dtype, hint=HINT,
        processor="AutoImageProcessor", revision=revision,
    )  # fmt: skip


def class_names(bundle: _hf.HFBundle, names_map: dict[str, str]) -> list[str]:
    """The checkpoint's label names in id order, mapped to GenEval's spellings."""
    id2label = bundle.model.config.id2label
    names = [str(id2label[i]) for i in range(len(id2label))]
    if all(n.startswith("LABEL_") for n in names) and len(names) == len(GENEVAL_CLASSES):
        return list(GENEVAL_CLASSES)  # an unnamed 80-class head is read in COCO order
    return [names_map.get(n, n) for n in names]


def detect(
    bundle: _hf.HFBundle,
    images: list[Any],
    names: list[str],
    *,
    min_score: float,
    max_per_image: int = 100,
) -> list[list[Detection]]:
    """Instance detections (with boolean masks) of same-size RGB images, one forward pass.

    Keeps detections whose float32 score exceeds ``min_score`` (the lower rules threshold).
    """
    import torch
    import torch.nn.functional as F

    proc, model = bundle.processor, bundle.model
    inputs = proc(images=images, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(bundle.device, bundle.dtype)
    pixel_mask = inputs.get("pixel_mask")
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    cls_logits = out.class_queries_logits.float()
    mask_logits = out.masks_queries_logits.float()
    padded = tuple(pixel_values.shape[-2:])
    results = []
    for b, image in enumerate(images):
        w0, h0 = image.size
        if pixel_mask is not None:
            valid = pixel_mask[b].bool()
            hv, wv = int(valid.any(1).sum()), int(valid.any(0).sum())
        else:
            hv, wv = padded
        with torch.no_grad():
            m = F.interpolate(
                mask_logits[b][None], size=padded, mode="bilinear", align_corners=False
            )
            m = F.interpolate(
                m[:, :, :hv, :wv], size=(h0, w0), mode="bilinear", align_corners=False
            )[0]
            probs = torch.softmax(cls_logits[b], dim=-1)[:, :-1]  # [Q, C]
            n_cls = probs.shape[-1]
            k = min(max_per_image, probs.numel())
            top, idx = probs.flatten().topk(k)
            query, label = idx // n_cls, idx % n_cls
            m = m[query]
            binary = m > 0
            area = binary.flatten(1).sum(1).float()
            mask_score = (m.sigmoid() * binary).flatten(1).sum(1) / (area + 1e-6)
            scores = (top * mask_score).float()
        dets = []
        for j in torch.nonzero(scores > min_score).flatten().tolist():
            mask = binary[j]
            rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
            if len(rows) and len(cols):
                box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
            else:
                box = (0.0, 0.0, 0.0, 0.0)
            name = names[int(label[j])] if int(label[j]) < len(names) else str(int(label[j]))
            dets.append(Detection(name, box, float(scores[j]), mask=mask.cpu().numpy()))  # type: ignore[arg-type]
        dets.sort(key=lambda d: -d.confidence)
        results.append(dets)
    return results
