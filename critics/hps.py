"""`hps`: Human Preference Score v2 / v2.1 with open_clip (no ``hpsv2`` package needed)."""

from __future__ import annotations

from typing import Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critics import _openclip


class HPSCritic(Critic):
    """HPS v2/v2.1: an HPS checkpoint loaded into open_clip's ViT-H-14; ``hps = cos(img, text)``.

    The raw HPS is the dot product of the L2-normalised image and text features (what the
    ``hpsv2`` package reports, usually quoted x100). It is mapped linearly to [0, 1] with
    ``score = clamp((hps - low) / (high - low), 0, 1)``; the defaults ``low=0.15``,
    ``high=0.35`` span the range HPS takes on text-to-image outputs (published model averages
    lie around 0.25-0.33), so unrelated images score near 0 and the best ones near 1. The raw
    value is in ``details["hps"]``. No verdict unless ``threshold`` (on the mapped score) is set.

    Checkpoint: ``HPS_v2_compressed.pt`` or ``HPS_v2.1_compressed.pt`` (a dict with
    ``state_dict``), passed as ``weights=/path/to/HPS_v2.1_compressed.pt``.
    """

    name: ClassVar[str] = "hps"
    description: ClassVar[str] = "Human Preference Score v2/v2.1 (open_clip ViT-H-14 checkpoint)"
    requires: ClassVar[tuple[str, ...]] = ("torch", "open_clip")
    extra: ClassVar[str | None] = "hps"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")

    def __init__(
        self,
        weights: str | None = None,
        arch: str = "ViT-H-14",
        low: float = 0.15,
        high: float = 0.35,
        threshold: float | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 16,
    ) -> None:
        if weights is None:
            raise MilrUserError(
                "hps critic needs the HPS checkpoint: download HPS_v2.1_compressed.pt (Hugging Face "
                "xswu/HPSv2) on a machine with internet and pass weights=/path/to/HPS_v2.1_compressed.pt"
            )
        _openclip.describe_weights(weights, self.name)
        for nm, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise MilrUserError(f"hps critic: {nm}={v!r} must be a number")
        if not -1 <= low < high <= 1:
            raise MilrUserError(
                f"hps critic: need -1 <= low < high <= 1, got low={low!r}, high={high!r}"
            )
        threshold = _openclip.check_threshold(threshold, self.name)
        batch_size = _openclip.check_batch_size(batch_size, self.name)
        self.weights, self.arch = weights, arch
        self.low, self.high = float(low), float(high)
        self.threshold = threshold
        self.device, self.dtype = device, _openclip.check_dtype(dtype, self.name)
        self.batch_size = batch_size
        self._config: dict[str, Any] = {
            "weights": weights, "arch": arch, "low": self.low, "high": self.high,
            "threshold": self.threshold, "device": device, "dtype": dtype, "batch_size": batch_size,
        }  # fmt: skip

    def _bundle(self) -> _openclip.OpenClipBundle:
        return _openclip.critic_bundle(self)

    def score_batch(self, images, prompts, metadata):
        bundle, raw = _openclip.prompt_cosines(self, images, prompts)
        out = []
        for hps in raw:
            score = min(1.0, max(0.0, (hps - self.low) / (self.high - self.low)))
            passed = None if self.threshold is None else score >= self.threshold
            out.append(CriticResult(score, passed, {"hps": hps, "model": bundle.source}))
        return out


@hookimpl
def register_critics(register):
    register(HPSCritic)
