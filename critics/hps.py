"""`hps`: Human Preference Score v2 / v2.1 with open_clip (no ``hpsv2`` package needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from milr import Critic, CriticResult, hookimpl
from milr.critics import _openclip
from milr.params import BatchSize

if TYPE_CHECKING:
    from PIL.Image import Image

#: HPS v2.1, the release the HPSv2 authors recommend, from their Hub repo.
DEFAULT_WEIGHTS = "hf://xswu/HPSv2/HPS_v2.1_compressed.pt"
_HPS_HINT = (
    f"default {DEFAULT_WEIGHTS} (downloaded on first use); or pass "
    "weights=/path/to/HPS_v2.1_compressed.pt (or HPS_v2_compressed.pt)"
)


class HPSCritic(Critic):
    """HPS v2/v2.1: an HPS checkpoint loaded into open_clip's ViT-H-14; ``hps = cos(img, text)``.

    The raw HPS is the dot product of the L2-normalised image and text features (what the
    ``hpsv2`` package reports, usually quoted x100). It is mapped linearly to [0, 1] with
    ``score = clamp((hps - low) / (high - low), 0, 1)``; the defaults ``low=0.15``,
    ``high=0.35`` span the range HPS takes on text-to-image outputs (published model averages
    lie around 0.25-0.33), so unrelated images score near 0 and the best ones near 1. The raw
    value is in ``details["hps"]``. No verdict unless ``threshold`` (on the mapped score) is set.

    Checkpoint: ``HPS_v2_compressed.pt`` or ``HPS_v2.1_compressed.pt`` (a dict with
    ``state_dict``). Default: ``hf://xswu/HPSv2/HPS_v2.1_compressed.pt``, the HPSv2 authors'
    Hub repo, downloaded into the Hugging Face cache on first use (the file holds the whole
    ViT-H-14, so no other download is needed); a local file works too.
    """

    name: ClassVar[str] = "hps"
    description: ClassVar[str] = "Human Preference Score v2/v2.1 (open_clip ViT-H-14 checkpoint)"
    requires: ClassVar[tuple[str, ...]] = ("torch", "open_clip")
    extra: ClassVar[str | None] = "hps"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")

    class Params(_openclip.OpenClipParams):
        weights: str = Field(
            DEFAULT_WEIGHTS,
            description="HPS_v2_compressed.pt or HPS_v2.1_compressed.pt: a file or hf://OWNER/NAME/FILE",
            json_schema_extra={"hint": _HPS_HINT},
        )
        arch: str = Field("ViT-H-14", description="open_clip architecture of the checkpoint")
        low: float = Field(0.15, ge=-1, le=1, description="raw HPS mapped to score 0")
        high: float = Field(0.35, ge=-1, le=1, description="raw HPS mapped to score 1")
        batch_size: BatchSize = 16

        @model_validator(mode="after")
        def _low_below_high(self) -> HPSCritic.Params:
            if not self.low < self.high:
                raise ValueError(f"need low < high, got low={self.low!r}, high={self.high!r}")
            return self

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
        low, high, threshold = self.params.low, self.params.high, self.params.threshold
        bundle, raw = _openclip.prompt_cosines(self, images, prompts)
        out = []
        for hps in raw:
            score = min(1.0, max(0.0, (hps - low) / (high - low)))
            passed = None if threshold is None else score >= threshold
            out.append(CriticResult(score, passed, {"hps": hps, "model": bundle.source}))
        return out


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(HPSCritic)
