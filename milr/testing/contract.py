"""The critic contract suite: subclass `CriticContract` in a test module to check your critic.

Example::

    from milr.testing import CriticContract

    class TestMyCritic(CriticContract):
        def make_critic(self):
            return MyCritic(threshold=0.5)

It checks batch shape, score range, verdict type, determinism, JSON-able details, the single-image
helper, odd image modes, registry name rules, the parameter declaration (every parameter has a
one-line description; an unknown keyword is a one-line `MilrUserError`; `config()` is JSON and
rebuilds the same critic), and that importing the critic's module does not import heavy
libraries (torch, transformers, ...). A check that is switched off (``deterministic = False``,
``check_lazy_import = False``, an undeclared old-style critic) is reported as skipped.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

from milr.critic import NAME_RE, Critic, CriticResult, evaluate
from milr.errors import MilrUserError
from milr.params import critic_parameters

HEAVY_MODULES = (
    "torch",
    "transformers",
    "open_clip",
    "ultralytics",
    "easyocr",
    "cv2",
    "tensorflow",
)


def sample_batch(size: int = 64) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
    """Four varied RGB images with prompts and empty metadata, deterministic."""
    from PIL import Image, ImageDraw

    images = []
    colors = [(220, 30, 30), (30, 70, 220), (40, 170, 60), (240, 220, 30)]
    for i, color in enumerate(colors):
        im = Image.new("RGB", (size, size), (245, 245, 245))
        d = ImageDraw.Draw(im)
        d.rectangle([size // 8 + i, size // 8, size // 2 + i * 4, size // 2 + i * 3], fill=color)
        d.ellipse([size // 2, size // 2, size - 4, size - 4 - i], fill=colors[(i + 1) % 4])
        images.append(im)
    prompts = ["a photo of a red square", "a photo of a blue circle", "a green thing", "yellow"]
    return images, prompts, [{} for _ in images]


def _skip(reason: str) -> None:
    import pytest  # a test dependency: imported only when a check runs

    pytest.skip(reason)


class CriticContract:
    """Base class for contract tests; override `make_critic` (and optionally `make_batch`)."""

    #: Set False for critics whose scores legitimately vary between calls (e.g. remote judges).
    deterministic: bool = True
    #: Set False for critics whose module may import heavy libraries at import (discouraged).
    check_lazy_import: bool = True

    def make_critic(self) -> Critic:  # pragma: no cover - must be overridden
        raise NotImplementedError("override make_critic() to return the critic under test")

    def make_batch(self) -> tuple[list[Any], list[str], list[dict[str, Any]]]:
        return sample_batch()

    # -- the suite -------------------------------------------------------------------------

    def test_is_a_critic_with_valid_name(self) -> None:
        critic = self.make_critic()
        assert isinstance(critic, Critic)
        name = type(critic).name
        assert NAME_RE.match(name), f"registry name {name!r} must match [a-z0-9_-]+"
        assert type(critic).description and "\n" not in type(critic).description

    def test_batch_shape_and_types(self) -> None:
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        raw = critic.score_batch(images, prompts, metadata)
        assert isinstance(raw, list) and len(raw) == len(images)
        for res in raw:
            assert isinstance(res, CriticResult)
            assert isinstance(res.passed, (bool, type(None)))
            assert isinstance(res.details, dict)

    def test_scores_in_unit_interval(self) -> None:
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        for res in evaluate(critic, images, prompts, metadata):
            assert not math.isnan(res.score) and 0.0 <= res.score <= 1.0

    def test_details_are_json_serialisable(self) -> None:
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        for res in critic.score_batch(images, prompts, metadata):
            json.dumps(res.details, allow_nan=False)

    def test_parameters_are_declared_and_documented(self) -> None:
        critic = self.make_critic()
        cls = type(critic)
        if not cls.declares_params():
            _skip(
                f"{cls.__qualname__} takes undeclared parameters through its own __init__ "
                "(deprecated): declare a nested `class Params(milr.CriticParams)`"
            )
        for row in critic_parameters(cls):
            desc = row["description"]
            assert desc and "\n" not in desc, (
                f"parameter {row['name']!r} of {cls.name!r} needs a one-line description "
                "(Field(..., description='...'))"
            )

    def test_unknown_parameter_is_a_clear_error(self) -> None:
        critic = self.make_critic()
        cls = type(critic)
        if not cls.declares_params():
            _skip(f"{cls.__qualname__} does not declare its parameters (deprecated)")
        values = dict(critic.params)
        try:
            cls(**values, no_such_parameter_xyz=1)
        except MilrUserError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"{cls.__qualname__} accepted an unknown keyword argument")
        assert "\n" not in message
        assert f"critic {cls.name!r}" in message and "'no_such_parameter_xyz'" in message

    def test_config_is_json_and_rebuilds_the_critic(self) -> None:
        critic = self.make_critic()
        config = critic.config()
        assert isinstance(config, dict)
        assert json.loads(json.dumps(config, allow_nan=False)) == config
        cls = type(critic)
        if not cls.declares_params():
            _skip(f"{cls.__qualname__} does not declare its parameters (deprecated)")
        rebuilt = cls(**dict(critic.params))
        assert rebuilt.params == critic.params and rebuilt.config() == config

    def test_deterministic(self) -> None:
        if not self.deterministic:
            _skip("deterministic = False: scores may vary between calls")
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        a = [r.score for r in evaluate(critic, images, prompts, metadata)]
        b = [r.score for r in evaluate(critic, images, prompts, metadata)]
        assert all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b)), (a, b)

    def test_batch_equals_single(self) -> None:
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        batch = evaluate(critic, images, prompts, metadata)
        singles = [critic.score(im, p, m) for im, p, m in zip(images, prompts, metadata)]
        for b, s in zip(batch, singles):
            assert math.isclose(b.score, s.score, rel_tol=1e-4, abs_tol=1e-4), (b.score, s.score)
            assert b.passed == s.passed

    def test_odd_image_modes(self) -> None:
        critic = self.make_critic()
        images, prompts, metadata = self.make_batch()
        base = images[0]
        odd = [base.convert("L"), base.convert("RGBA"), base.convert("P")]
        results = evaluate(critic, odd, [prompts[0]] * 3, [metadata[0]] * 3)
        assert len(results) == 3

    def test_module_import_is_lazy(self) -> None:
        if not self.check_lazy_import:
            _skip("check_lazy_import = False")
        module = type(self.make_critic()).__module__
        code = (
            f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        loaded = out.stdout.strip()
        assert not loaded, f"importing {module} imported heavy modules: {loaded}"
