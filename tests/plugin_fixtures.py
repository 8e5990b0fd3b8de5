"""Build throwaway plugin distributions on disk (real dist-info + entry points) for tests."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any


def make_distribution(
    root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """Write `modules` (name -> source) and a dist-info announcing `entry_points` in group milr."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
    )
    eps = "[milr]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps, encoding="utf-8")
    return root


def load_list(*names: str) -> str:
    """``MILR_LOAD_PLUGINS`` as the suite sets it (conftest), plus `names`."""
    current = [n for n in os.environ.get("MILR_LOAD_PLUGINS", "").split(",") if n]
    return ",".join(dict.fromkeys([*current, *names]))


def allow(monkeypatch: Any, *names: str) -> None:
    """Let this test load the plugins `names` (the suite loads only those it names)."""
    monkeypatch.setenv("MILR_LOAD_PLUGINS", load_list(*names))


def load_env(*names: str) -> dict[str, str]:
    """Environment entries for a `milr` subprocess that may load the plugins `names`."""
    return {"MILR_LOAD_PLUGINS": load_list(*names)}


GOOD_PLUGIN = """
    import milr

    class SquareCritic(milr.Critic):
        name = "squareness"
        description = "1 for square images"

        def score_batch(self, images, prompts, metadata):
            return [milr.CriticResult(1.0 if im.width == im.height else 0.0, None, {}) for im in images]

    @milr.hookimpl
    def register_critics(register):
        register(SquareCritic)
"""

BROKEN_IMPORT_PLUGIN = """
    import milr
    raise RuntimeError("this plugin is broken on purpose")
"""

BROKEN_REGISTER_PLUGIN = """
    import milr

    @milr.hookimpl
    def register_critics(register):
        raise ValueError("registration exploded")
"""

DUPLICATE_PLUGIN = """
    import milr

    class FakeColor(milr.Critic):
        name = "color"
        description = "a second critic called color"

        def score_batch(self, images, prompts, metadata):
            return [milr.CriticResult(0.5) for _ in images]

    @milr.hookimpl
    def register_critics(register):
        register(FakeColor)
"""

BAD_SCORE_PLUGIN = """
    import milr

    class NanCritic(milr.Critic):
        name = "nan-critic"
        description = "returns NaN"

        def score_batch(self, images, prompts, metadata):
            return [milr.CriticResult(float("nan")) for _ in images]

    @milr.hookimpl
    def register_critics(register):
        register(NanCritic)
"""

SYSTEM_EXIT_PLUGIN = """
    import sys
    sys.exit(1)
"""

KEYBOARD_INTERRUPT_PLUGIN = """
    raise KeyboardInterrupt
"""

EXIT_IN_REGISTER_PLUGIN = """
    import sys
    import milr

    @milr.hookimpl
    def register_critics(register):
        sys.exit(3)
"""

MISSPELLED_HOOK_PLUGIN = """
    import milr

    class Typo(milr.Critic):
        name = "typo-critic"
        description = "never registered: its hook name is misspelled"

        def score_batch(self, images, prompts, metadata):
            return [milr.CriticResult(1.0) for _ in images]

    @milr.hookimpl
    def register_critic(register):  # the hook is register_critics
        register(Typo)
"""

#: A toy unified "model" for the generator hook: 2x2 image tokens over a 4-colour palette,
#: 8 text tokens, latents of size 4, real torch heads (so MILR's gradients flow through it).
TOY_GENERATOR_PLUGIN = """
    from PIL import Image

    import milr
    from milr.generator import Generator, ImageTokens, Reasoning

    PALETTE = [(220, 30, 30), (30, 70, 220), (30, 160, 60), (235, 215, 25)]
    D, TEXT_VOCAB, GRID = 4, 8, 2


    class ToyGenerator(Generator):
        name = "toygen"
        default_checkpoint = "builtin-toy"

        def __init__(self):
            import torch

            g = torch.Generator().manual_seed(0)
            self.device = torch.device("cpu")
            self.dtype = torch.float32
            self.checkpoint = self.default_checkpoint
            self.w_text = torch.randn(TEXT_VOCAB, D, generator=g)
            self.w_image = torch.randn(len(PALETTE), D, generator=g)
            self.text_latents = torch.randn(16, D, generator=g)
            self.image_latents = torch.randn(GRID * GRID, 2, D, generator=g)

        @classmethod
        def can_load(cls, path):
            return False

        @classmethod
        def from_pretrained(cls, path, device=None, dtype=None):
            return cls()

        @property
        def image_token_count(self):
            return GRID * GRID

        @property
        def max_reasoning_tokens(self):
            return 8

        def _reason(self, prefix):
            rest = self.text_head(self.text_latents[len(prefix) : 4]).argmax(-1).tolist()
            tokens = list(prefix) + rest
            return Reasoning(tokens, self.text_latents[: len(tokens)].clone(), " ".join(map(str, tokens)))

        def write_reasoning(self, prompt):
            return self._reason([])

        def continue_reasoning(self, prompt, prefix_tokens):
            return self._reason(list(prefix_tokens))

        def image_text(self, prompt, reasoning):
            return prompt if reasoning is None else f"{prompt}. {reasoning}"

        def sample_image_tokens(self, prompt_text, prefix_tokens=None, batch=1, cfg_scale=5.0,
                                temperature=1.0, generator=None, capture=0):
            import torch

            latents = self.image_latents.unsqueeze(0).expand(batch, -1, -1, -1)
            probs = torch.softmax(self.image_head(latents, cfg_scale) / temperature, -1)
            tokens = torch.multinomial(probs.reshape(-1, len(PALETTE)), 1, generator=generator)
            tokens = tokens.reshape(batch, -1)
            if prefix_tokens is not None:
                tokens[:, : prefix_tokens.shape[1]] = prefix_tokens
            return ImageTokens(tokens, latents[:, :capture].clone())

        def text_head(self, latents):
            return latents.float() @ self.w_text.T

        def image_head(self, latents, cfg_scale):
            logits = latents.float() @ self.w_image.T
            u, c = logits[..., 1, :], logits[..., 0, :]
            return u + cfg_scale * (c - u)

        def decode(self, tokens):
            out = []
            for row in tokens.tolist():
                im = Image.new("RGB", (GRID, GRID))
                im.putdata([PALETTE[t] for t in row])
                out.append(im.resize((32, 32), Image.Resampling.NEAREST))
            return out


    @milr.hookimpl
    def register_generators(register):
        register(ToyGenerator)
"""
