"""MILR modes: the one definition of their names and of what each step of a mode does.

Cheap to import (no torch), so command-line choices come from here. `plan` is the schedule the
optimizer (and a batched engine) follows: which latents a step updates and whether that step's
image prefix is sampled from the image head or held fixed.

The MILR authors' code (``src/opt_generation_janus.py``) has ``text``, ``image``, ``both``, the
*sequential* ``text_image`` / ``image_text`` (all steps of one modality, then all of the other;
budgets ``text_steps`` and ``image_steps``) and ``interleaved_text_image`` (a text step, scored,
then an image step, scored), which milr calls ``interleaved``. One authors' ``both`` iteration
(one text update, one image update, one image, one reward) is one milr step.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Mode name → one-line meaning (the CLI help and docs/method.md list these).
MODE_HELP: dict[str, str] = {
    "both": "each step: one text and one image update, then one image and one reward (paper's joint mode)",
    "text": "each step updates the reasoning latents; the image is sampled afresh",
    "image": "each step updates the image latents; the image prompt has no reasoning",
    "text_image": "text_steps text steps (image prefix held at the first image's), then image_steps image steps",
    "image_text": "image_steps image steps, then text_steps text steps (image prefix held at the last)",
    "interleaved": "alternate a text step and an image step, each scored, text first",
}
#: Every mode, the default first.
MODES: tuple[str, ...] = tuple(MODE_HELP)
DEFAULT_MODE = "both"
SEQUENTIAL = ("text_image", "image_text")


@dataclass(frozen=True)
class StepPlan:
    """What step ``t`` (1-based) of a mode does."""

    #: Latents updated before the step's image (``"text"``, ``"image"``).
    update: tuple[str, ...]
    #: ``"sample"``: draw the image prefix from the CFG-fused head on ``Z_v``; ``"fixed"``: keep
    #: the previous image's prefix; ``"none"``: no image prefix (text mode: a fresh image).
    image_prefix: str


def total_steps(mode: str, max_steps: int, text_steps: int | None, image_steps: int | None) -> int:
    """Steps a mode runs at most: ``max_steps``, or ``text_steps + image_steps`` (sequential
    modes; each defaults to ``max_steps``)."""
    if mode in SEQUENTIAL:
        return (max_steps if text_steps is None else text_steps) + (
            max_steps if image_steps is None else image_steps
        )
    return max_steps


def plan(
    mode: str,
    step: int,
    max_steps: int,
    text_steps: int | None = None,
    image_steps: int | None = None,
) -> StepPlan:
    """The `StepPlan` of step `step` (1-based) of `mode`."""
    if mode == "both":
        return StepPlan(("text", "image"), "sample")
    if mode == "text":
        return StepPlan(("text",), "none")
    if mode == "image":
        return StepPlan(("image",), "sample")
    if mode == "interleaved":
        return StepPlan(("text",), "sample") if step % 2 == 1 else StepPlan(("image",), "sample")
    if mode in SEQUENTIAL:
        n_text = max_steps if text_steps is None else text_steps
        n_image = max_steps if image_steps is None else image_steps
        first = "text" if mode == "text_image" else "image"
        in_first = step <= (n_text if first == "text" else n_image)
        phase = first if in_first else ("image" if first == "text" else "text")
        return StepPlan((phase,), "fixed" if phase == "text" else "sample")
    raise ValueError(f"unknown mode {mode!r}")


def modalities(mode: str, step: int, max_steps: int = 1 << 30) -> list[str]:
    """The latents step `step` (1-based) of `mode` updates (see `plan`)."""
    return list(plan(mode, step, max_steps).update)
