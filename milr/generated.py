"""What a generator's loops return (`Reasoning`, `ImageTokens`) and the reasoning-cap helper.

Both `milr.generator` (the protocol) and its batched defaults (`milr.generator_batch`) and
phases (`milr.phases`) use these, so they live below all three; ``milr.generator.Reasoning``
and ``milr.generator.ImageTokens`` remain their public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Reasoning:
    """Greedy reasoning text: generated token ids (EOS excluded), their latents and the text.

    ``latents[i]`` is the last-layer, post-final-norm hidden state at the position that
    predicts ``tokens[i]`` (shape ``[len(tokens), d]``, detached).
    """

    tokens: list[int]
    latents: torch.Tensor
    text: str
    #: The latent that predicted EOS (``[d]``), or None when the reasoning hit its cap without
    #: EOS. The authors count it in the text prefix length (`MILRConfig.text_prefix`).
    eos_latent: torch.Tensor | None = None


@dataclass
class ImageTokens:
    """Sampled image tokens ``[B, n]`` and the latents of the first ``capture`` positions.

    ``latents`` has shape ``[B, capture, 2, d]``: the conditional and the unconditional CFG
    row at the position predicting each image token.
    """

    tokens: torch.Tensor
    latents: torch.Tensor


def _cap_kwargs(gen: Any, max_tokens: int | None) -> dict[str, int]:
    """``{"max_tokens": n}`` for `gen`'s reasoning calls (a `milr.generator.Generator`), or
    ``{}`` when there is no cap.

    Adapters written before the cap became an argument have no ``max_tokens`` parameter: they
    still run, with their own cap and a `DeprecationWarning` saying the run's cap is ignored.
    """
    if max_tokens is None:
        return {}
    import inspect
    import warnings

    params = inspect.signature(gen.continue_reasoning).parameters
    if "max_tokens" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {"max_tokens": int(max_tokens)}
    warnings.warn(
        f"generator {type(gen).__name__}.continue_reasoning has no max_tokens parameter "
        f"(milr >= 0.2 passes the reasoning cap per call); max_reasoning_tokens={max_tokens} "
        "is ignored for it",
        DeprecationWarning,
        stacklevel=3,
    )
    return {}


#: How milr's own loops draw image tokens (recorded in trajectories, as ``generator.sampling``,
#: and in the bench run identity, so a run is never resumed under other draws).
#: ``inverse-cdf/2``: each `sample_image_tokens` call draws one float64 uniform per row and
#: image position from its generator up front (``torch.rand(rows, n)``; rows sharing a
#: generator in row order), and every position picks, for all rows at once, the first token
#: whose cumulative CFG probability exceeds ``u · total``. Version 1 (milr <= 0.3) called
#: ``torch.multinomial`` once per position; its images differ.
SAMPLING_SCHEME = "inverse-cdf/2"
