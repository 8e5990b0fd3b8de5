"""`clip`: CLIPScore of image and prompt with open_clip, mapped to [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from milr import Critic, CriticResult, hookimpl
from milr.critics import _openclip

if TYPE_CHECKING:
    from PIL.Image import Image


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

    class Params(_openclip.OpenClipParams):
        w: float = Field(2.5, gt=0, description="CLIPScore weight: score = min(1, w * max(cos, 0))")

    params: Params

    def setup(self) -> None:
        _openclip.describe_weights(self.params.weights, self.name)

    def _bundle(self) -> _openclip.OpenClipBundle:
        return _openclip.critic_bundle(self)

    def prepare(self) -> None:
        """Load the open_clip model."""
        self._bundle()

    def weights_ids(self) -> list[str]:
        """``weights``; a pretrained tag as ``ARCH:TAG`` (`milr.weight_sources.open_clip_id`)."""
        return _openclip.weights_ids(self)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        threshold = self.params.threshold
        bundle, cosines = _openclip.prompt_cosines(self, images, prompts)
        out = []
        for cos in cosines:
            score = min(1.0, self.params.w * max(cos, 0.0))
            passed = None if threshold is None else score >= threshold
            details = {"cosine": cos, "clipscore": 100.0 * max(cos, 0.0), "model": bundle.source}
            out.append(CriticResult(score, passed, details))
        return out


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(ClipScoreCritic)
