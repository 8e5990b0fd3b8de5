"""`clip`: CLIPScore of image and prompt with open_clip, mapped to [0, 1]."""

from __future__ import annotations

from typing import Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critics import _openclip


class ClipScoreCritic(Critic):
    """CLIPScore (Hessel et al. 2021): ``score = min(1, w * max(cos, 0))`` with ``w = 2.5``.

    ``cos`` is the cosine similarity of open_clip's image and text embeddings. With the paper's
    ``w = 2.5`` a cosine of 0.4 or more gives 1; typical matching pairs under ViT-L/14 have
    cosines around 0.25-0.35 (score 0.6-0.9). Details carry ``cosine`` and ``clipscore``
    (``100 * max(cos, 0)``, the torchmetrics convention). No verdict unless ``threshold`` is set.
    """

    name: ClassVar[str] = "clip"
    description: ClassVar[str] = "CLIPScore image-prompt alignment with open_clip"
    requires: ClassVar[tuple[str, ...]] = ("torch", "open_clip")
    extra: ClassVar[str | None] = "clip"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")

    def __init__(
        self,
        weights: str | None = None,
        arch: str = "ViT-L-14",
        w: float = 2.5,
        threshold: float | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 32,
    ) -> None:
        _openclip.describe_weights(weights, self.name)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0:
            raise MilrUserError(f"clip critic: w={w!r} must be a positive number")
        threshold = _openclip.check_threshold(threshold, self.name)
        batch_size = _openclip.check_batch_size(batch_size, self.name)
        self.weights, self.arch, self.w = str(weights), arch, float(w)
        self.threshold = threshold
        self.device, self.dtype = device, _openclip.check_dtype(dtype, self.name)
        self.batch_size = batch_size
        self._config: dict[str, Any] = {
            "weights": self.weights, "arch": arch, "w": self.w, "threshold": self.threshold,
            "device": device, "dtype": dtype, "batch_size": batch_size,
        }  # fmt: skip

    def _bundle(self) -> _openclip.OpenClipBundle:
        return _openclip.critic_bundle(self)

    def score_batch(self, images, prompts, metadata):
        bundle, cosines = _openclip.prompt_cosines(self, images, prompts)
        out = []
        for cos in cosines:
            score = min(1.0, self.w * max(cos, 0.0))
            passed = None if self.threshold is None else score >= self.threshold
            details = {"cosine": cos, "clipscore": 100.0 * max(cos, 0.0), "model": bundle.source}
            out.append(CriticResult(score, passed, details))
        return out


@hookimpl
def register_critics(register):
    register(ClipScoreCritic)
