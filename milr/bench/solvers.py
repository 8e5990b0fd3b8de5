"""Solvers: what turns a prompt and a seed into the base and the improved image.

The default is `MILRSolver` (the MILR optimizer over a loaded generator); ``--solver
MODULE:CALLABLE`` or `run_bench(..., solver_factory=...)` plugs in another (e.g. best-of-N).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from milr.bench.options import BenchOptions
from milr.bench.suites import BenchPrompt
from milr.errors import GenerationError, MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class Outcome:
    """What a solver produced for one prompt and seed."""

    base_image: Image
    final_image: Image
    #: Summary of the optimisation: steps, stop_reason, rewards (per step, step 0 = base),
    #: passed (per step), critic_calls, timings. JSON-serialisable.
    trajectory: dict[str, Any] = field(default_factory=dict)
    #: The full result (e.g. `MILRResult.to_dict()`), written next to the images.
    full: dict[str, Any] | None = None
    #: The control run beside MILR (``--control``): its returned image, trajectory summary and
    #: full result; None without a control. Its step 0 is the base image.
    control_image: Image | None = None
    control_trajectory: dict[str, Any] | None = None
    control_full: dict[str, Any] | None = None


class Solver(Protocol):
    """Turns a prompt and a seed into base and improved images (MILR, or a baseline)."""

    def solve(self, prompt: BenchPrompt, seed: int) -> Outcome: ...


SolverFactory = Callable[[BenchOptions, "str | None"], Solver]


class MILRSolver:
    """The MILR optimizer over a loaded generator, rewarded by the ``--critic`` ensemble.

    The base image is the optimizer's step-0 image (the model's own first sample under the
    prompt's seed); the MILR image is the one the optimizer returns (last, or best with
    ``--opt select=best``). With ``--control`` the same prompt and seed also run as that
    control (`MILRConfig.control`: the same loop, update off, the same random streams), and
    its returned image becomes the record's ``control`` side.
    """

    def __init__(self, opts: BenchOptions, device: str | None, critic: Any = None) -> None:
        """`critic`: the reward critic, already built and prepared (`milr.preflight`); None
        builds it from ``opts.critic``."""
        from milr import build_critic
        from milr.devices import resolve_device, resolve_dtype
        from milr.generator import load_generator

        self.opts = opts
        self._config(0)  # bad optimizer options fail before the model loads
        resolve_dtype(opts.dtype, resolve_device(device))  # and a bad device before critics
        self.critic = critic if critic is not None else build_critic(list[Any](opts.critic))
        self.generator = load_generator(
            opts.model,
            device=device,
            dtype=opts.dtype,
            allow_missing=opts.allow_missing,
            prompt_style=opts.prompt_style,
            prompt_file=opts.prompt_file,
            revision=opts.revision,
        )
        self.generator.set_loop_options(kv_cache=opts.kv_cache, compile=opts.compile)

    def _config(self, seed: int, control: str | None = None) -> Any:
        from milr.optimizer import MILRConfig

        kwargs: dict[str, Any] = {
            "mode": self.opts.mode,
            "max_steps": self.opts.steps,
            "seed": seed,
        }
        kwargs.update(self.opts.optimizer)
        if control is not None:
            kwargs["control"] = control
        try:
            return MILRConfig(**kwargs)
        except TypeError as exc:
            raise MilrUserError(f"bad optimizer option in {self.opts.optimizer}: {exc}") from None

    def resolved_settings(self) -> dict[str, Any]:
        """What the loaded checkpoint resolves the run's unset options to: ``text_prefix`` and
        ``cfg_scale`` (its recommendations) and the prompt style (kept in ``run.json``)."""
        from milr.optimizer import MILR

        cfg = MILR(self.generator, self.critic, self._config(0)).config
        return {
            "text_prefix": cfg.text_prefix,
            "cfg_scale": cfg.cfg_scale,
            "prompt_style": self.generator.describe().get("prompt_style"),
        }

    def solve(self, prompt: BenchPrompt, seed: int) -> Outcome:
        from milr.optimizer import MILR

        result = MILR(self.generator, self.critic, self._config(seed)).run(
            prompt.prompt, prompt.metadata
        )
        control = None
        if self.opts.control:  # the same prompt and seed, update off (common random numbers)
            config = self._config(seed, self.opts.control)
            control = MILR(self.generator, self.critic, config).run(prompt.prompt, prompt.metadata)
        return self._outcome(result, control)

    def solve_many(
        self,
        jobs: list[tuple[BenchPrompt, int]],
        on_active: Callable[[int], Any] | None = None,
    ) -> Iterator[tuple[int, Outcome | BaseException, float]]:
        """Solve ``(prompt, seed)`` jobs with the batched engine (``--batch-prompts``).

        Yields ``(index into jobs, outcome or the exception that ended the prompt, seconds the
        prompt spent in the batch)`` as each prompt finishes. Each prompt's result is the one
        `solve` gives (exactly so in float64; docs/bench.md).
        """
        from milr.engine import BatchedMILR, Job

        engine = BatchedMILR(
            self.generator,
            self.critic,
            self.opts.batch_prompts,
            memory_limit=self.opts.batch_memory,
            on_active=on_active,
        )
        self.engine = engine
        sides = [None, self.opts.control] if self.opts.control else [None]
        todo = (
            Job(p.prompt, dict(p.metadata or {}), self._config(seed, ctl), key=(i, ctl))
            for i, (p, seed) in enumerate(jobs)
            for ctl in sides
        )
        waiting: dict[int, dict[str | None, Any]] = {}
        for done in engine.run(todo):
            index, side = done.job.key
            if done.error is not None and (
                not isinstance(done.error, Exception) or isinstance(done.error, MilrUserError)
            ):
                raise done.error  # Ctrl-C, and the user's errors, end the run
            got = waiting.setdefault(index, {})
            got[side] = done
            if len(got) < len(sides):  # the prompt's other run is still in the batch
                continue
            del waiting[index]
            seconds = sum(d.seconds for d in got.values())
            errors = [d.error for d in got.values() if d.error is not None]
            if errors:
                yield index, errors[0], seconds
                continue
            try:
                control = got[self.opts.control].result if self.opts.control else None
                outcome: Outcome | BaseException = self._outcome(got[None].result, control)
            except Exception as exc:
                outcome = exc
            yield index, outcome, seconds

    def _outcome(self, result: Any, control: Any = None) -> Outcome:
        full = result.to_dict()
        if result.initial_image is None or result.image is None:
            raise GenerationError(
                f"the optimizer returned no image (stop reason {result.stop_reason!r})"
            )
        out = Outcome(
            base_image=result.initial_image,
            final_image=result.image,
            trajectory=summarize_result(full),
            full=full,
        )
        if control is not None:
            if control.image is None:
                raise GenerationError(
                    f"the {self.opts.control} control returned no image "
                    f"(stop reason {control.stop_reason!r})"
                )
            out.control_full = control.to_dict()
            out.control_image = control.image
            out.control_trajectory = summarize_result(out.control_full)
        return out


def summarize_result(full: dict[str, Any]) -> dict[str, Any]:
    """The trajectory summary a record carries (the full `MILRResult.to_dict()` goes to a side file)."""
    steps = list(full.get("steps") or [])
    out: dict[str, Any] = {
        "steps": full.get("n_steps", max(0, len(steps) - 1)),
        "stop_reason": full.get("stop_reason"),
        "scores": [st.get("score") for st in steps],
        "rewards": [st.get("reward") for st in steps],
        "passed": [st.get("passed") for st in steps],
        "critic_calls": full.get("critic_calls"),
    }
    if any(st.get("text_prefix_optimised") is not None for st in steps) or any(
        st.get("image_prefix_optimised") is not None for st in steps
    ):  # attribution: did each image carry a change the latent update made?
        out["optimised"] = [
            bool(st.get("text_prefix_optimised") or st.get("image_prefix_optimised"))
            for st in steps
        ]
        out["selected_optimised"] = full.get("selected_optimised")
    for key in (
        "images_scored",
        "tokens_generated",
        "best_step",
        "selected_step",
        "selected",
        "wall_seconds",
        "timings",
        "prompts",
    ):
        if key in full:
            out[key] = full[key]
    if steps:
        out["reasoning"] = {
            "initial": steps[0].get("reasoning"),
            "final": steps[-1].get("reasoning"),
        }
    return out


def load_solver_factory(spec: str | None) -> SolverFactory:
    """``module:callable`` taking ``(options, device)`` and returning a solver; default MILR."""
    if not spec or spec == "milr":
        return MILRSolver
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise MilrUserError(f"--solver {spec!r} must be 'module:callable'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise MilrUserError(f"cannot load solver {spec!r}: {exc}") from None
