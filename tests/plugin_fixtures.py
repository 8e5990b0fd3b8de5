"""Build throwaway plugin distributions on disk (real dist-info + entry points) for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


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
