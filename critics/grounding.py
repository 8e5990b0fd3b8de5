"""`grounding`: open-vocabulary detection (GroundingDINO or OWLv2) judged two ways.

Class names come from GenEval-style metadata (``include``/``exclude``) or, without it, from the
prompt's noun phrases (`milr.critics._phrases.open_clauses`). One forward pass per batch of
same-size images gives, per class name, every box whose phrase score exceeds ``box_threshold``;
boxes of a class are de-duplicated by NMS (IoU ``nms_iou``). Two scores are computed from them:

* ``geneval`` — the GenEval rules engine (`milr.geneval_rules`) on the boxes: verdict
  = every clause holds, score = share of clauses held. Colours for ``color`` clauses come from
  GenEval's zero-shot CLIP classifier on the box crops (``clip_weights``) or pixel votes.
* ``mixed`` — MixedReward's detector score (the MILR authors' ``reward_gdino.py``, from T2I-R1):
  with a ``position`` clause, 0.2 for each of the two objects found plus half the position score
  of their most confident boxes (1 when the subject lies in the relation's direction along the
  dominant axis of the centre offset and the boxes' IoU < 0.1, 0.1/IoU when they overlap more, 0
  otherwise), so at most 0.9; otherwise per include clause 1 when exactly ``count`` boxes
  remain after NMS, 0.2 when some but not ``count``, 0 when none, averaged.

``score`` picks which one is the critic's score; both are in the details, and the verdict is
always the rules'. Phrase score of a GroundingDINO box: the mean sigmoid of the box's text logits
over the class name's tokens in the caption ``"name1 . name2 ."`` (the token-span mode of the
original GroundingDINO code). OWLv2 scores each ``query_template``-formatted class name directly.
Deviation from the original MixedReward code, on purpose: ``above`` is scored as the mirror of
``below`` (the original's list misses GenEval's ``above`` and scores it 0), and NMS runs on corner
boxes (the original passes centre-size boxes to ``nms``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.critics import _hf
from milr.critics._images import to_rgb
from milr.critics._mixed_reward import mixed_reward_score, position_score
from milr.geneval_rules import (
    GENEVAL_COLORS,
    Detection,
    RuleConfig,
    detections_needing_color,
    evaluate_rules,
    validate_metadata,
)
from milr.params import BatchSize, Device, dtype_param

if TYPE_CHECKING:
    from PIL.Image import Image

MODEL_TYPES = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "owlv2": "Owlv2ForObjectDetection",
}
_HINT = (
    "pass weights=ID or DIR, a Hub id or a local transformers checkpoint of GroundingDINO (e.g. "
    "IDEA-Research/grounding-dino-tiny) or OWLv2 (e.g. google/owlv2-base-patch16-ensemble)"
)


class GroundingCritic(Critic):
    """Open-vocabulary detection judged by the GenEval rules (verdict) or MixedReward's score.

    Details per image: ``metadata_source`` (``metadata``/``prompt``), ``tag``, ``classes``,
    ``geneval_score``, ``mixed_score``, ``mixed_task`` (``spatial``/``numeracy``/``object``),
    ``reason``, ``clauses`` and ``detections`` (class, pixel box ``[x1, y1, x2, y2]``, phrase
    score in [0, 1], colour when classified; at most ``max_objects`` per class).
    """

    name: ClassVar[str] = "grounding"
    description: ClassVar[str] = (
        "Open-vocabulary detection (GroundingDINO/OWLv2): GenEval rules or MixedReward score"
    )
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "tag", "include", "exclude")

    class Params(CriticParams):
        weights: str = Field(
            description="GroundingDINO or OWLv2 Hub id (downloaded on first use) or checkpoint directory"
        )
        revision: str | None = Field(
            None,
            description="Hub revision (branch, tag or commit) when weights is a Hub id; None: the default branch",
        )
        score: Literal["geneval", "mixed"] = Field(
            "geneval", description="critic score: GenEval rules' share of clauses, or MixedReward's"
        )
        box_threshold: float = Field(
            0.3,
            ge=0,
            lt=1,
            description="a box counts for a class when its phrase score exceeds this",
        )
        text_threshold: float | None = Field(
            None,
            ge=0,
            lt=1,
            description="if set: boxes above box_threshold for some class also count for every class above this",
        )
        threshold: float | None = Field(
            None, ge=0, lt=1, description="GenEval rules' confidence threshold; None: box_threshold"
        )
        counting_threshold: float | None = Field(
            None, ge=0, lt=1, description="rules' threshold for tag 'counting'; None: threshold"
        )
        nms_iou: float = Field(
            0.5, gt=0, le=1, description="per-class NMS IoU (MixedReward 0.5); 1 disables NMS"
        )
        max_objects: int = Field(16, ge=1, description="objects kept per class (GenEval 16)")
        position_margin: float = Field(
            0.1, ge=0, description="GenEval position margin (fraction of the boxes' sizes)"
        )
        query_template: str = Field(
            "a photo of a {}", description="OWLv2 text query for a class name ('{}' is the name)"
        )
        phrases: Literal["rule", "spacy"] = Field(
            "rule", description="noun phrases of prompts without metadata: rule or spacy"
        )
        spacy_model: str = Field(
            "en_core_web_sm",
            description="installed spaCy pipeline (name or path) for phrases=spacy",
        )
        clip_weights: str | None = Field(
            None, description="open_clip weights for GenEval's colour classifier; None: pixel votes"
        )
        clip_arch: str = Field("ViT-L-14", description="open_clip architecture of clip_weights")
        clip_revision: str | None = Field(
            None,
            description="Hub revision (branch, tag or commit) of hf:// or hf-hub: clip_weights; "
            "None: default branch",
        )
        device: Device = "auto"
        dtype: dtype_param("auto", "float32", "bfloat16", "float16") = Field(  # type: ignore[valid-type]
            "auto", description="model dtype; auto: bf16 on CUDA, fp32 on CPU"
        )
        batch_size: BatchSize = 8

        @model_validator(mode="after")
        def _template(self) -> GroundingCritic.Params:
            if self.query_template.count("{}") != 1:
                raise ValueError(
                    f"query_template={self.query_template!r} must contain '{{}}' exactly once"
                )
            return self

    params: Params

    def setup(self) -> None:
        p = self.params
        threshold = p.box_threshold if p.threshold is None else p.threshold
        counting = threshold if p.counting_threshold is None else p.counting_threshold
        self.rules = RuleConfig(threshold, counting, p.max_objects, p.position_margin)

    # -- model ------------------------------------------------------------------------------

    def load(self) -> _hf.HFBundle:
        """The detector and its processor (loaded once per process)."""
        p = self.params
        return _hf.load_checkpoint(
            self.name, p.weights, MODEL_TYPES, device=p.device, dtype=p.dtype, hint=_HINT,
            revision=p.revision,
        )  # fmt: skip

    def prepare(self) -> None:
        """Load the detector, the spaCy pipeline (``phrases=spacy``) and the colour classifier."""
        p = self.params
        self.load()
        if p.phrases == "spacy":
            from milr.critics._phrases import spacy_noun_phrases

            spacy_noun_phrases("a red car", p.spacy_model, self.name)
        if p.clip_weights is not None:
            from milr.critics import _openclip

            device = _hf.resolve_device_dtype(p.device, "float32", self.name)[0]
            _openclip.load_open_clip(
                p.clip_arch, p.clip_weights, device=device, dtype="float32", critic=self.name,
                extra="clip", revision=p.clip_revision,
            )  # fmt: skip

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """The item must give classes to look for (metadata clauses or the prompt's phrases)."""
        self._metadata(prompt, metadata if metadata is not None else {})

    def detect(self, images: list[Any], classes: list[list[str]]) -> list[list[Detection]]:
        """Boxes per image for its class names, NMS'd per class, most confident first.

        Images are batched by size (a same-size batch is padded exactly like one image, so
        batched and per-image scores agree) in chunks of ``batch_size``, one forward each.
        """
        bundle = self.load()
        out: list[list[Detection]] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            if classes[i]:
                by_size.setdefault(im.size, []).append(i)
        run = self._run_gdino if bundle.model_type == "grounding-dino" else self._run_owl
        for idx in by_size.values():
            for start in range(0, len(idx), self.params.batch_size):
                chunk = idx[start : start + self.params.batch_size]
                scored = run(bundle, [images[i] for i in chunk], [classes[i] for i in chunk])
                for i, (boxes, scores) in zip(chunk, scored, strict=True):
                    out[i] = self._select(boxes, scores, classes[i])
        return out

    def _run_gdino(
        self, bundle: _hf.HFBundle, images: list[Any], classes: list[list[str]]
    ) -> list[tuple[Any, Any]]:
        import torch

        proc, model = bundle.processor, bundle.model
        captions = [" . ".join(names) + " ." for names in classes]
        inputs = proc(images=images, text=captions, padding=True, return_tensors="pt")
        probs, boxes = _forward(model, inputs, bundle)  # probs [B, Q, max_text_len]
        results = []
        for b, (names, caption, image) in enumerate(zip(classes, captions, images, strict=True)):
            spans = _token_spans(proc.tokenizer, caption, names, probs.shape[-1])
            phrase = torch.stack([probs[b][:, s].mean(-1) for s in spans], dim=-1)  # [Q, C]
            w, h = image.size
            results.append((boxes[b] * torch.tensor([w, h, w, h]), phrase))
        return results

    def _run_owl(
        self, bundle: _hf.HFBundle, images: list[Any], classes: list[list[str]]
    ) -> list[tuple[Any, Any]]:
        proc, model = bundle.processor, bundle.model
        width = max(len(c) for c in classes)
        queries = [
            [self.params.query_template.format(n) for n in names] + [""] * (width - len(names))
            for names in classes
        ]
        length = int(model.config.text_config.max_position_embeddings)
        inputs = proc(
            text=queries, images=images, return_tensors="pt", padding="max_length",
            truncation=True, max_length=length,
        )  # fmt: skip
        probs, boxes = _forward(model, inputs, bundle)  # probs [B, patches, width]
        results = []
        for b, (names, image) in enumerate(zip(classes, images, strict=True)):
            side = float(max(image.size))  # OWLv2 pads to a square at the bottom/right
            results.append((boxes[b] * side, probs[b][:, : len(names)]))
        return results

    def _select(self, boxes: Any, scores: Any, names: list[str]) -> list[Detection]:
        """Box/class pairs over the thresholds, NMS'd per class, as `Detection`s."""
        import torch
        from torchvision.ops import nms

        p = self.params
        best = scores.max(dim=-1).values
        dets: list[Detection] = []
        for c, name in enumerate(names):
            s = scores[:, c]
            if p.text_threshold is None:
                keep = s > p.box_threshold
            else:
                keep = (best > p.box_threshold) & (s > p.text_threshold)
            idx = torch.nonzero(keep).flatten()
            if idx.numel() == 0:
                continue
            if p.nms_iou < 1:
                idx = idx[nms(boxes[idx], s[idx], p.nms_iou)]
            order = idx[torch.argsort(s[idx], descending=True, stable=True)]
            for q in order.tolist():
                box = tuple(float(v) for v in boxes[q].tolist())
                dets.append(Detection(name, box, float(s[q])))  # type: ignore[arg-type]
        return dets

    # -- scoring ----------------------------------------------------------------------------

    def _metadata(self, prompt: str, meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if not isinstance(meta, dict):
            raise MilrUserError(
                f"critic {self.name!r}: metadata must be a dict, got {type(meta).__name__}"
            )
        if "include" in meta or "exclude" in meta:
            return validate_metadata(meta, None, GENEVAL_COLORS), "metadata"
        from milr.critics._phrases import open_clauses

        p = self.params
        return open_clauses(prompt, p.phrases, p.spacy_model, self.name), "prompt"

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        metas = [self._metadata(p, m or {}) for p, m in zip(prompts, metadata, strict=True)]
        classes = [_class_names(m) for m, _ in metas]
        detections = self.detect(rgb, classes)
        color_method = self._colorize(rgb, metas, detections)
        out = []
        for i, (meta, source) in enumerate(metas):
            res = evaluate_rules(meta, detections[i], config=self.rules, classes=None)
            w, h = rgb[i].size
            mixed, task = mixed_reward_score(meta, detections[i], (w, h))
            score = res.score if self.params.score == "geneval" else mixed
            details = {
                "metadata_source": source,
                "tag": meta.get("tag"),
                "classes": classes[i],
                "geneval_score": res.score,
                "mixed_score": mixed,
                "mixed_task": task,
                "reason": res.reason,
                "clauses": [c.to_dict() for c in res.clauses],
                "detections": [d.to_dict() for d in _cap(detections[i], self.params.max_objects)],
                "color_method": color_method,
            }
            out.append(CriticResult(score, res.passed, details))
        return out

    def _colorize(
        self,
        images: list[Any],
        metas: list[tuple[dict[str, Any], str]],
        detections: list[list[Detection]],
    ) -> str:
        from milr.critics._colors import classify_colors, masked_crop

        need = [
            (i, d)
            for i, (meta, _) in enumerate(metas)
            for d in detections_needing_color(meta, detections[i], self.rules)
        ]
        p = self.params
        crops = [masked_crop(images[i], d.box)[0] for i, d in need]
        device = _hf.resolve_device_dtype(p.device, "float32", self.name)[0] if crops else "cpu"
        probs, method = classify_colors(
            crops, [d.cls for _, d in need], clip_weights=p.clip_weights, clip_arch=p.clip_arch,
            device=device, batch_size=p.batch_size, critic=self.name, extra="clip",
            revision=p.clip_revision,
        )  # fmt: skip
        for (_, det), pr in zip(need, probs, strict=True):
            det.color = pr
        return method


# --------------------------------------------------------------------------- helpers


def _class_names(meta: dict[str, Any]) -> list[str]:
    names = [c["class"] for c in meta.get("include", [])] + [
        c["class"] for c in meta.get("exclude", [])
    ]
    return list(dict.fromkeys(names))


def _token_spans(tokenizer: Any, caption: str, names: list[str], limit: int) -> list[list[int]]:
    """Token positions of each class name in ``caption`` (``"a . b ."``), from the offsets."""
    enc = tokenizer(caption, return_offsets_mapping=True, add_special_tokens=True)
    offsets = enc["offset_mapping"]
    spans, pos = [], 0
    for name in names:
        start = caption.index(name, pos)
        end = start + len(name)
        pos = end
        idx = [
            t for t, (s, e) in enumerate(offsets) if e > s and s >= start and e <= end and t < limit
        ]
        if not idx:
            raise MilrUserError(
                f"critic 'grounding': class name {name!r} does not fit in the detector's text "
                f"window of {limit} tokens; pass fewer classes per prompt"
            )
        spans.append(idx)
    return spans


def _cxcywh_to_xyxy(boxes: Any) -> Any:
    import torch

    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _forward(model: Any, inputs: Any, bundle: _hf.HFBundle) -> tuple[Any, Any]:
    """One no-grad detector pass: sigmoid logits ``[B, Q, T]`` and boxes ``[B, Q, 4]`` as
    (x0, y0, x1, y1) fractions of the model's input, both float32 on the CPU."""
    import torch

    with torch.no_grad():
        outputs = model(**_to(inputs, bundle))
    probs = outputs.logits.float().sigmoid().cpu()
    return probs, _cxcywh_to_xyxy(outputs.pred_boxes.float().cpu())


def _to(inputs: Any, bundle: _hf.HFBundle) -> dict[str, Any]:
    return {
        k: (v.to(bundle.device, bundle.dtype) if v.is_floating_point() else v.to(bundle.device))
        for k, v in inputs.items()
        if hasattr(v, "to")
    }


def _cap(dets: list[Detection], cap: int) -> list[Detection]:
    seen: dict[str, int] = {}
    out = []
    for d in sorted(dets, key=lambda d: -d.confidence):
        seen[d.cls] = seen.get(d.cls, 0) + 1
        if seen[d.cls] <= cap:
            out.append(d)
    return out


__all__ = ["GroundingCritic", "mixed_reward_score", "position_score"]


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(GroundingCritic)
