"""`geneval`: detections judged by the GenEval rules (`milr.geneval_rules`), from YOLO or GenEval's Mask2Former.

``detector=yolo`` (default, light): an ultralytics COCO checkpoint. ``detector=mask2former``:
GenEval's own detector, Mask2Former Swin-S COCO instance segmentation, through transformers
(`milr.critics._mask2former`), with confidences compared in float32 and relations computed in
float32 as GenEval's ``evaluate_images.py`` does on mmdetection's outputs.

Metadata in GenEval's format (``include``/``exclude``/``tag``) is used when present; otherwise
clauses are derived from the prompt (``a photo of two red cars``...) and an unparseable prompt
is an error (or score 0 with ``on_unparsed=zero``). Object colours come from zero-shot
open_clip (GenEval's classifier) when ``clip_weights`` is given, else from pixel votes; with
Mask2Former the crop's background outside the object's mask is painted grey first, as GenEval does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.colors import NAMED_COLORS
from milr.critics import _colors, _hf, _openclip
from milr.critics._images import to_rgb
from milr.critics._yolo import (  # noqa: F401 (re-exported)
    _ASSET_NAME,
    _WEIGHTS_HINT,
    _require_ultralytics,
    load_yolo,
)
from milr.geneval_rules import (
    GENEVAL_CLASSES,
    GENEVAL_COLORS,
    Detection,
    PromptParseError,
    RuleParams,
    clauses_from_prompt,
    detections_needing_color,
    evaluate_rules,
    group_detections,
    validate_metadata,
)
from milr.params import BatchSize, Device, dtype_param

if TYPE_CHECKING:
    from PIL.Image import Image

#: Other spellings of COCO classes (ultralytics, VOC-style) -> GenEval names.
COCO_ALIASES: dict[str, str] = {
    "mouse": "computer mouse",
    "remote": "tv remote",
    "keyboard": "computer keyboard",
    "sofa": "couch",
    "tvmonitor": "tv",
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "hair dryer": "hair drier",
}

#: GenEval's zero-shot colour prompt templates.
COLOR_TEMPLATES: tuple[str, ...] = _colors.COLOR_TEMPLATES

#: RGB prototypes of GenEval's ten colours for the pixel-statistics fallback (`milr.colors`).
COLOR_PROTOTYPES: dict[str, tuple[int, int, int]] = {c: NAMED_COLORS[c] for c in GENEVAL_COLORS}


def geneval_names(names: dict[int, str]) -> dict[int, str]:
    """Map a detector's class names to GenEval's; 80 bare indices are read as COCO order."""
    if len(names) == len(GENEVAL_CLASSES) and all(str(n).isdigit() for n in names.values()):
        return {int(i): GENEVAL_CLASSES[int(i)] for i in names}
    return {int(i): COCO_ALIASES.get(str(n), str(n)) for i, n in names.items()}


def pixel_colors(crops: list[Any]) -> list[dict[str, float]]:
    """Colour votes of crops: each pixel of the central half votes for its nearest prototype.

    The crop's central 50% x 50% (less background), downsampled to at most 32x32, is compared
    in RGB with the ten :data:`COLOR_PROTOTYPES`; the result is the fraction of votes per colour
    (`milr.critics._colors.pixel_votes`, which also takes object masks).
    """
    return _colors.pixel_votes(crops)


class GenEvalCritic(Critic):
    """GenEval rules over YOLO detections: verdict = all clauses hold; score = share of clauses held.

    ``weights`` is an ultralytics detection checkpoint (``yolov8x.pt``) or a ``*.yaml`` model
    config (random weights: tests and benchmarks only). Thresholds follow GenEval (0.3; 0.9 for
    ``counting``; 16 objects per class; 0.1 position margin) and are all parameters.
    """

    name: ClassVar[str] = "geneval"
    description: ClassVar[str] = (
        "GenEval rules (counts, colours, positions) over YOLO or Mask2Former detections"
    )
    requires: ClassVar[tuple[str, ...]] = ("torch", "ultralytics")
    extra: ClassVar[str | None] = "detector"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "tag", "include", "exclude")

    class Params(RuleParams):
        weights: str = Field(
            description="yolo: ultralytics COCO checkpoint (yolov8x.pt) or a *.yaml config "
            "(random weights: tests only), hf://OWNER/NAME/FILE; mask2former: Hub id or "
            "transformers checkpoint directory",
            json_schema_extra={"hint": _WEIGHTS_HINT},
        )
        detector: Literal["yolo", "mask2former"] = Field(
            "yolo", description="yolo (light) or mask2former (GenEval's own detector, Swin-S COCO)"
        )
        clip_weights: str | None = Field(
            None,
            description="open_clip weights for zero-shot colours (see _openclip); None: pixel votes",
        )
        clip_arch: str = Field("ViT-L-14", description="open_clip architecture of clip_weights")
        clip_revision: str | None = Field(
            None,
            description="Hub revision (branch, tag or commit) of hf:// or hf-hub: clip_weights; "
            "None: default branch",
        )
        revision: str | None = Field(
            None,
            description="Hub revision (branch, tag or commit) of a Hub id / hf:// weights; None: default branch",
        )
        imgsz: int = Field(640, ge=32, description="YOLO inference size in pixels (yolo only)")
        iou: float = Field(
            0.7, gt=0, le=1, description="YOLO non-maximum-suppression IoU (yolo only)"
        )
        device: Device = "auto"
        dtype: dtype_param("float32", "float16") = Field(  # type: ignore[valid-type]
            "float32", description="detector precision (ultralytics supports these two)"
        )
        batch_size: BatchSize | None = Field(
            None, description="images per detector forward; None: 16 on CUDA, 4 on CPU"
        )
        on_unparsed: Literal["error", "zero"] = Field(
            "error", description="a prompt without parseable clauses: raise, or score 0"
        )

        @model_validator(mode="after")
        def _weights_exist(self) -> GenEvalCritic.Params:
            value = self.weights
            if self.detector == "mask2former":
                _hf.check_weights(value, "geneval", _mask2former_hint())
                return self
            if not value.strip():
                raise ValueError(f"parameter 'weights' is empty; {_WEIGHTS_HINT}")
            if value.startswith("hf://"):
                from milr.hub import parse_hf_uri

                try:
                    parse_hf_uri(value)
                except MilrUserError as exc:
                    raise ValueError(str(exc)) from None
                return self
            local = value.endswith((".yaml", ".yml")) or Path(value).expanduser().is_file()
            if not local and not _ASSET_NAME.match(value):
                raise ValueError(f"parameter 'weights'={value!r} not found; {_WEIGHTS_HINT}")
            return self

    params: Params

    def setup(self) -> None:
        if self.params.clip_weights is not None:
            _openclip.describe_weights(self.params.clip_weights, self.name, param="clip_weights")
        # GenEval's evaluator compares float32 scores and boxes (detector outputs): do the same.
        self.rules = dataclasses.replace(self.params.rule_config(), float32=True)

    # -- detection --------------------------------------------------------------------------

    def _model(self) -> tuple[Any, dict[int, str], str]:
        device = _openclip.resolve_device(self.params.device, self.name)
        if self.params.detector == "mask2former":
            from milr.critics import _mask2former

            bundle = _mask2former.load(
                self.name, self.params.weights, device, self.params.dtype, self.params.revision
            )
            names = _mask2former.class_names(bundle, COCO_ALIASES)
            return bundle, dict(enumerate(names)), device
        model = load_yolo(self.params.weights, device, self.name, self.params.revision)
        return model, geneval_names(dict(model.names)), device

    def detect(self, images: list[Any]) -> list[list[Detection]]:
        """Batched YOLO inference on RGB PIL images; detections above the lower threshold.

        Images are batched by size: ultralytics letterboxes a same-size batch exactly like a
        single image, so batched and per-image scoring agree (mixed sizes would be padded to a
        square and shift the detections). ``batch_size`` unset means 16 per forward on CUDA and 4
        on CPU, where larger YOLO batches were measured slower (memory-bound convolutions).
        """
        model, names, device = self._model()
        bs = self.params.batch_size or (16 if device.startswith("cuda") else 4)
        conf = min(self.rules.threshold, self.rules.counting_threshold)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        out: list[list[Detection]] = [[] for _ in images]
        for idx in by_size.values():
            for start in range(0, len(idx), bs):
                chunk = idx[start : start + bs]
                if self.params.detector == "mask2former":
                    from milr.critics import _mask2former

                    found = _mask2former.detect(
                        model, [images[i] for i in chunk], [names[k] for k in sorted(names)],
                        min_score=conf,
                    )  # fmt: skip
                    for i, dets in zip(chunk, found, strict=True):
                        out[i] = dets
                    continue
                results = model.predict(
                    [images[i] for i in chunk], conf=conf, iou=self.params.iou, imgsz=self.params.imgsz,
                    device=device, half=self.params.dtype == "float16", max_det=300, verbose=False,
                )  # fmt: skip
                for i, res in zip(chunk, results, strict=True):
                    boxes = res.boxes
                    xyxy = boxes.xyxy.float().cpu().tolist()
                    confs = boxes.conf.float().cpu().tolist()
                    classes = boxes.cls.int().cpu().tolist()
                    out[i] = [
                        Detection(names.get(c, str(c)), tuple(b), float(p))  # type: ignore[arg-type]
                        for b, p, c in zip(xyxy, confs, classes, strict=True)
                    ]
        return out

    def prepare(self) -> None:
        """Load the detector and, with ``clip_weights``, the colour classifier."""
        self._model()
        if self.params.clip_weights is not None:
            device = _openclip.resolve_device(self.params.device, self.name)
            _openclip.load_open_clip(
                self.params.clip_arch, self.params.clip_weights, device=device,
                dtype="float32", critic=self.name, extra=self.extra,
                revision=self.params.clip_revision,
            )  # fmt: skip

    def weights_ids(self) -> list[str]:
        """The detector's ``weights`` and ``clip_weights`` (a pretrained tag as ``ARCH:TAG``)."""
        from milr.weight_sources import open_clip_id, with_revision

        p = self.params
        clip = open_clip_id(p.clip_arch, p.clip_weights)
        clip_ids = [with_revision(clip, p.clip_revision)] if clip else []
        return [with_revision(p.weights, p.revision), *clip_ids]

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """The item's clauses must parse and name classes the detector knows."""
        _, names, _ = self._model()
        try:
            self._metadata(prompt, metadata or {}, list(dict.fromkeys(names.values())))
        except PromptParseError:
            if self.params.on_unparsed == "error":
                raise

    # -- colours ----------------------------------------------------------------------------

    def classify_colors(
        self, crops: list[Any], classes: list[str], masks: list[Any] | None = None
    ) -> list[dict[str, float]]:
        """Colour probabilities of object crops: GenEval's zero-shot CLIP, or pixel votes.

        ``masks`` (crop-sized boolean arrays or None each) restrict pixel votes to the object.
        """
        device = _openclip.resolve_device(self.params.device, self.name) if crops else "cpu"
        probs, _ = _colors.classify_colors(
            crops, classes, clip_weights=self.params.clip_weights, clip_arch=self.params.clip_arch,
            device=device, batch_size=self.params.batch_size or 32, critic=self.name,
            extra=self.extra, masks=masks, revision=self.params.clip_revision,
        )  # fmt: skip
        return probs

    # -- scoring ----------------------------------------------------------------------------

    def _metadata(
        self, prompt: str, meta: dict[str, Any], vocab: list[str]
    ) -> tuple[dict[str, Any], str]:
        if not isinstance(meta, dict):
            raise MilrUserError(
                f"geneval critic: metadata must be a dict, got {type(meta).__name__}"
            )
        if "include" in meta or "exclude" in meta:
            return validate_metadata(meta, vocab, GENEVAL_COLORS), "metadata"
        if not isinstance(prompt, str):
            raise MilrUserError(
                f"geneval critic: prompt must be a string, got {type(prompt).__name__}"
            )
        return clauses_from_prompt(prompt, vocab, GENEVAL_COLORS), "prompt"

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        _, names, _ = self._model()
        vocab = list(dict.fromkeys(names.values()))
        metas: list[tuple[dict[str, Any], str] | None] = []
        errors: list[str | None] = []
        for prompt, meta in zip(prompts, metadata, strict=True):
            try:
                metas.append(self._metadata(prompt, meta or {}, vocab))
                errors.append(None)
            except PromptParseError as exc:
                if self.params.on_unparsed == "error":
                    raise
                metas.append(None)
                errors.append(str(exc))
        todo = [i for i, m in enumerate(metas) if m is not None]
        detections = dict(zip(todo, self.detect([rgb[i] for i in todo]), strict=True))

        # Colour-classify, in one batch, only the objects the rules will look at.
        need: list[tuple[int, Detection]] = []
        for i in todo:
            meta = metas[i][0]  # type: ignore[index]
            need += [(i, d) for d in detections_needing_color(meta, detections[i], self.rules)]
        cut = [_colors.masked_crop(rgb[i], d.box, d.mask) for i, d in need]
        masks = [m for _, m in cut] if any(m is not None for _, m in cut) else None
        for (_, det), probs in zip(
            need,
            self.classify_colors([c for c, _ in cut], [d.cls for _, d in need], masks),
            strict=True,
        ):
            det.color = probs

        out = []
        for i in range(len(rgb)):
            if metas[i] is None:
                out.append(CriticResult(0.0, None, {"error": errors[i]}))
                continue
            meta, source = metas[i]  # type: ignore[misc]
            res = evaluate_rules(meta, detections[i], config=self.rules, classes=vocab)
            groups = group_detections(detections[i], res.threshold, 10**9, float32=True)
            kept = sorted((d for g in groups.values() for d in g), key=lambda d: -d.confidence)
            details = {
                "metadata_source": source,
                "tag": meta.get("tag"),
                "reason": res.reason,
                "threshold": res.threshold,
                "clauses": [c.to_dict() for c in res.clauses],
                "detections": [d.to_dict() for d in _cap_per_class(kept, self.rules.max_objects)],
                "color_method": "clip" if self.params.clip_weights else "pixels",
                "detector": self.params.detector,
            }
            out.append(CriticResult(res.score, res.passed, details))
        return out


def _mask2former_hint() -> str:
    from milr.critics import _mask2former

    return _mask2former.HINT


def _cap_per_class(dets: list[Detection], cap: int) -> list[Detection]:
    seen: dict[str, int] = {}
    out = []
    for d in dets:
        seen[d.cls] = seen.get(d.cls, 0) + 1
        if seen[d.cls] <= cap:
            out.append(d)
    return out


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(GenEvalCritic)
