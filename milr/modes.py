"""MILR mode names: the one definition the optimizer, the CLI and the bench harness share.

Cheap to import (no torch), so command-line choices come from here.
"""

from __future__ import annotations

#: Mode name → one-line meaning (the CLI help and docs/method.md list these).
MODE_HELP: dict[str, str] = {
    "both": "one text and one image update per step, one image and one reward (the paper's joint mode)",
    "text": "update the reasoning latents only; a fresh image each step",
    "image": "update the image latents only; the image prompt has no reasoning",
    "text_image": "alternate one modality per step, text first",
    "image_text": "alternate one modality per step, image first",
}
#: Every mode, the default first.
MODES: tuple[str, ...] = tuple(MODE_HELP)
DEFAULT_MODE = "both"


def modalities(mode: str, step: int) -> list[str]:
    """The latents (``"text"``, ``"image"``) step `step` (1-based) of `mode` updates."""
    if mode == "both":
        return ["text", "image"]
    if mode in ("text", "image"):
        return [mode]
    first, second = mode.split("_")
    return [first if step % 2 == 1 else second]
