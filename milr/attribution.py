"""Attribution: did an image carry a change made by MILR's latent update?

Before each step's draws `milr.optimizer.MILR` also proposes the prefixes the unoptimised
(step-0) latents would give, from a copy of the prompt's random generator (`fork_rng`), so the
reference uses the very random numbers the step then uses and MILR's own draws are untouched
(the heads' outputs over those latents do not change: `milr.prefixes.HeadReader` reads them
once per run).
`attribution` compares the drawn candidate's prefixes with that reference. An image whose
prefixes equal the reference is the image the ``resample`` control (`MILRConfig.control`)
draws at that step: whatever it fixed, resampling fixed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from milr.phases import Candidate


def fork_rng(rng: torch.Generator) -> torch.Generator:
    """A new generator in `rng`'s exact state, on its device (drawing from it leaves `rng`
    untouched)."""
    import torch

    fork = torch.Generator(device=rng.device)
    fork.set_state(rng.get_state())
    return fork


def attribution(
    ref: tuple[Any, Any] | None, cand: Candidate, index: int, has_text: bool, has_image: bool
) -> tuple[bool | None, bool | None]:
    """``(text_prefix_optimised, image_prefix_optimised)`` of `cand`, drawn as candidate `index`.

    `ref` is the reference proposal ``(text prefixes [K][M] or None, image prefixes [K, N] or
    None)`` from the unoptimised latents, or None in a control (nothing optimised: False).
    A flag is None where the modality has no optimised prefix (`has_text` / `has_image` false,
    or no image prefix drawn).
    """
    text = image = None
    if has_text:
        text = False if ref is None or ref[0] is None else list(ref[0][index]) != cand.text_prefix
    if has_image and cand.image_prefix:
        image = (
            False
            if ref is None or ref[1] is None
            else [int(t) for t in ref[1][index]] != cand.image_prefix
        )
    return text, image


def hold(ref: tuple[Any, Any] | None, prefix: list[int], k: int) -> tuple[Any, Any] | None:
    """`ref` with its image prefixes replaced by the held `prefix` (a step that keeps the image
    prefix instead of sampling it); None stays None."""
    if ref is None:
        return None
    import torch

    return ref[0], torch.tensor([prefix] * k, dtype=torch.long)


def held_next(ref: tuple[Any, Any] | None, index: int, cand: Candidate) -> list[int]:
    """The image prefix the unoptimised latents hold after this step: the reference's for
    candidate `index`, else (no reference, or no image prefix proposed) the drawn one's."""
    if ref is not None and ref[1] is not None:
        return [int(t) for t in ref[1][index]]
    return list(cand.image_prefix)
