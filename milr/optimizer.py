"""The MILR optimizer: test-time policy gradient over a generator's last-layer latents.

Faithful to the paper by default: only a prefix of the reasoning latents ``Z_t``
(``M = int(text_k · len(reasoning))``) and of the image latents ``Z_v`` (``N = int(image_k ·
n_image_tokens)``) are parameters; the loss per modality is ``−r · Σ log P[argmax P]`` with
``r = score − 1``; one Adam per modality; gradients reach the latents only through the output
heads, the transformer runs under no-grad. After an update the text prefix is the argmax of
the head on ``Z_t`` followed by greedy continuation, and the image prefix is *sampled* from the
CFG-fused head on ``Z_v`` before the remaining image tokens are sampled.

Options beyond the paper (off by default): ``select="best"``, ``samples_per_step=K`` (K
candidates per step with a mean-reward baseline, REINFORCE on the sampled prefix tokens) and
``stop_on_pass``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Generator as _PyGenerator
from typing import TYPE_CHECKING, Any, TypeAlias

from milr.attribution import attribution, fork_rng, held_next, hold
from milr.critic import Critic, critic_label
from milr.errors import MilrUserError
from milr.modes import MODES  # noqa: F401 - re-exported (older imports)
from milr.optimizer_config import SELECT, MILRConfig, latent_dtype  # noqa: F401 - re-exported
from milr.phases import (
    Candidate,
    GenRequest,
    ScoreRequest,
    Timer,
    UpdateRequest,
    serve,
    update_latents,  # noqa: F401 - re-exported (older imports)
)
from milr.prefixes import HeadReader, PrefixRequest, draw_prefixes
from milr.results import MILRResult, StepRecord

if TYPE_CHECKING:
    import torch

    from milr.generator import Generator

__all__ = ["MILR", "MILRConfig", "MILRResult", "StepRecord", "resume_steps", "run_milr"]

#: `MILR.steps`: yields `GenRequest`/`ScoreRequest`/`UpdateRequest`/`PrefixRequest`, is sent
#: the answers.
Steps: TypeAlias = (
    "_PyGenerator[GenRequest | ScoreRequest | UpdateRequest | PrefixRequest, Any, Any]"
)


def resume_steps(
    steps: Steps, reply: Any = None, error: BaseException | None = None
) -> GenRequest | ScoreRequest | UpdateRequest | PrefixRequest:
    """Send `reply` (or throw `error`) into `steps` and return its next request.

    Runs the prompt's own work (latent updates, proposals, records) with grad mode on, as
    the updates need, whatever the caller's mode (``torch.no_grad`` is thread state, and a
    driver interleaves many prompts in one thread). Raises ``StopIteration`` (its ``value``:
    the `MILRResult`) when the prompt is done, or the exception that ended the prompt (with
    the partial result as ``exc.milr_result``). Inside ``torch.inference_mode()`` too.
    """
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        if error is not None:
            return steps.throw(error)
        return steps.send(reply)


class MILR:
    """``MILR(generator, critic, config).run(prompt, metadata)`` → `MILRResult`."""

    def __init__(
        self,
        generator: Generator,
        critic: Critic,
        config: MILRConfig | None = None,
        **overrides: Any,
    ) -> None:
        if config is None:
            config = MILRConfig(**overrides)
        elif overrides:
            config = MILRConfig(**{**config.to_dict(), **overrides})
        self.generator = generator
        self.critic = critic
        resolved: dict[str, Any] = {}  # the checkpoint's recommendations for unset options
        if config.cfg_scale is None:  # 5.0 for Janus-Pro
            resolved["cfg_scale"] = float(generator.default_cfg_scale)
        if config.text_prefix is None:  # paper for Janus-Pro, at_least_one for shapes
            resolved["text_prefix"] = str(getattr(generator, "default_text_prefix", "paper"))
        if resolved:
            config = MILRConfig(**{**config.to_dict(), **resolved})
        self.config = config
        #: The guidance scale in force (the config's, resolved against the checkpoint's).
        self.cfg_scale: float = float(config.cfg_scale)  # type: ignore[arg-type]
        self._bound = False
        self.latents: dict[str, Any] = {}
        self._pending: list[Candidate] | None = None
        self._in_flight = False
        self.initial_latents: dict[str, Any] = {}

    # -- phases ------------------------------------------------------------------------------
    def _score(
        self,
        cands: list[Candidate],
        prompt: str,
        metadata: dict[str, Any],
        timer: Timer,
        result: MILRResult,
    ) -> Steps:
        """Ask the driver to score `cands` (one critic batch; `milr.phases.score_candidates`)."""
        yield ScoreRequest(self.critic, cands, prompt, metadata, timer)
        result.critic_calls += 1
        result.images_scored += len(cands)

    def _generate(
        self,
        prompt: str,
        text_prefixes: list[list[int]] | None,
        image_prefixes: torch.Tensor | None,
        rng: torch.Generator,
        timer: Timer,
        capture: int,
        result: MILRResult,
    ) -> Steps:
        """Ask the driver for candidates (`milr.phases.generate_candidates`)."""
        cfg = self.config
        out = yield GenRequest(
            prompt, text_prefixes, image_prefixes, rng, capture, cfg.uses_text,
            self.cfg_scale, cfg.temperature, cfg.max_reasoning_tokens, timer,
        )  # fmt: skip
        result.tokens_generated += out.tokens_generated
        return out.candidates, out.latents

    # -- main loop ---------------------------------------------------------------------------
    def run(
        self,
        prompt: str,
        metadata: dict[str, Any] | None = None,
        callback: Callable[[StepRecord, MILRResult], Any] | None = None,
    ) -> MILRResult:
        """Optimise one prompt. Ctrl-C or a critic failure attach the partial result to the
        exception as ``exc.milr_result`` (the CLI writes it)."""
        steps = self.steps(prompt, metadata, callback)
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = resume_steps(steps, reply, error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, error = serve(self.generator, request), None
            except BaseException as exc:  # into the steps: the step is undone, result attached
                reply, error = None, exc

    def steps(
        self,
        prompt: str,
        metadata: dict[str, Any] | None = None,
        callback: Callable[[StepRecord, MILRResult], Any] | None = None,
    ) -> Steps:
        """The optimisation of one prompt as a generator of requests, for drivers of many.

        It yields a `milr.phases.GenRequest` (answer: the `milr.phases.Generated`) or a
        `milr.phases.ScoreRequest` (answer: None, once the candidates carry their scores) or a
        `milr.phases.UpdateRequest` (answer: the losses) or a `milr.prefixes.PrefixRequest`
        (answer: one `milr.prefixes.Dists` per read); an exception thrown in ends the
        step as that failure would; the return value is the `MILRResult`. Resume it with
        `resume_steps` (grad mode on). `run` answers each request with `milr.phases.serve`;
        `milr.engine.BatchedMILR` answers the requests of many prompts in one batch.
        """
        cfg, gen = self.config, self.generator
        metadata = dict(metadata or {})
        if self._in_flight:
            raise MilrUserError(
                "this MILR instance is already optimising a prompt (its latents and Adam state "
                "are per instance); make one MILR per prompt to run several at once"
            )
        gen.check_prompt(prompt)
        if not self._bound:
            self.critic.bind(generator=gen)
            self._bound = True
        result = MILRResult(
            prompt=prompt,
            metadata=metadata,
            config=cfg.to_dict(),
            generator=gen.describe(),
            critic={"label": critic_label(self.critic), "config": _safe_config(self.critic)},
        )
        t0 = time.perf_counter()
        self._pending = None
        self._in_flight = True
        try:
            yield from self._run(prompt, metadata, callback, result)
        except _Stop:
            pass
        except GeneratorExit:  # closed by its driver (or collected): not a failure of the run
            raise
        except BaseException as exc:
            result.stop_reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            if not isinstance(exc, KeyboardInterrupt):
                result.error = f"{type(exc).__name__}: {exc}"
            result.wall_seconds = time.perf_counter() - t0
            exc.milr_result = result  # type: ignore[attr-defined]
            raise
        finally:
            self._pending = None
            self._in_flight = False
            self._record_prompts(prompt, result)
        result.wall_seconds = time.perf_counter() - t0
        return result

    def _record_prompts(self, prompt: str, result: MILRResult) -> None:
        """The decoded prompts of the returned image (``trajectory.json`` ``prompts``)."""
        if not result.steps:
            return
        step = min(result.selected_step, len(result.steps) - 1)
        result.prompts = dict(self.generator.describe_prompts(prompt, result.steps[step].reasoning))

    def _run(
        self,
        prompt: str,
        metadata: dict[str, Any],
        callback: Callable[[StepRecord, MILRResult], Any] | None,
        result: MILRResult,
    ) -> Steps:
        import torch

        cfg, gen = self.config, self.generator
        rng = gen.rng(cfg.seed)
        n_img = gen.image_token_count
        n_prefix = min(n_img, max(1, int(cfg.image_k * n_img))) if cfg.optimizes_image else 0

        # -- step 0: the model's own reasoning and image -------------------------------------
        timer = Timer(gen.device)
        cands, img_lat = yield from self._generate(prompt, None, None, rng, timer, n_prefix, result)
        yield from self._score(cands, prompt, metadata, timer, result)
        cur = cands[0]
        z_t = z_v = None
        opt_t = opt_v = None
        m_prefix = 0
        ldt = latent_dtype(cfg.latent_dtype, gen.dtype)
        if cfg.uses_text:
            reasoning = cur.reasoning
            assert reasoning is not None  # uses_text: step 0 wrote one
            eos = getattr(reasoning, "eos_latent", None)
            m_prefix = cfg.text_prefix_length(len(reasoning.tokens), eos is not None)
            if m_prefix > 0:
                lat = reasoning.latents
                if m_prefix > len(lat) and eos is not None:  # the EOS-predicting latent too
                    lat = torch.cat([lat, eos.reshape(1, -1).to(lat)])
                z_t = lat[:m_prefix].detach().to(ldt).clone().requires_grad_(True)
                opt_t = torch.optim.Adam([z_t], lr=cfg.lr)
        if cfg.optimizes_image:
            z_v = img_lat[0].detach().to(ldt).clone().requires_grad_(True)  # [N, 2, d]
            opt_v = torch.optim.Adam([z_v], lr=cfg.lr)
        if cfg.mode == "text":  # text only: the image latents are not optimised
            z_v = opt_v = None
        #: The optimised latents (``Z_t`` ``[M, d]``, ``Z_v`` ``[N, 2, d]``) and their start values.
        self.latents = {"text": z_t, "image": z_v}
        self.initial_latents = {
            k: None if v is None else v.detach().clone() for k, v in self.latents.items()
        }
        result.text_prefix_len, result.image_prefix_len = m_prefix, n_prefix
        text_prefix = list(cur.reasoning.tokens[:m_prefix]) if cur.reasoning is not None else []
        image_prefix = [int(t) for t in cur.tokens[:n_prefix]] if z_v is not None else []
        cur.text_prefix, cur.image_prefix = text_prefix, image_prefix
        record = self._record(0, cur, [], {}, [], [], [cur.score], 0, timer.t, result)
        result.initial_image = result.final_image = result.best_image = cur.image
        self._append(result, record, cur, callback)
        if self._done(cur, result):
            return
        if z_t is None and cfg.mode in ("both", "text") and cfg.early_stop:
            # M = 0 (a reasoning too short for text_k): the authors leave the prompt unoptimised
            result.stop_reason = "no_text_prefix"
            return

        k = cfg.samples_per_step
        ref_image_prefix = image_prefix  # the unoptimised latents' held image prefix
        reader = HeadReader(self.initial_latents, k, self.cfg_scale, cfg.temperature, cfg.updates)
        for step in range(1, cfg.total_steps + 1):
            timer = Timer(gen.device)
            step_plan = cfg.plan(step)
            mods = [m for m in step_plan.update if (z_t if m == "text" else z_v) is not None]
            mods = mods if cfg.updates else []  # a control: the same loop, no update
            # -- proposals from the latents (and, for K > 1, the sampled prefixes) --------------
            snapshot = [
                (z, z.detach().clone(), opt, _copy_state(opt))
                for z, opt in ((z_t, opt_t), (z_v, opt_v))
                if z is not None
            ]
            tokens_before = result.tokens_generated
            losses = yield from self._update(  # the driver may pool it with other prompts'
                mods, z_t, z_v, opt_t, opt_v, cur.score - 1.0, k, step, result, timer
            )
            sample_v = step_plan.image_prefix == "sample"
            dists, ref_dists = yield from reader.read(  # the driver may pool it too
                z_t, z_v if sample_v else None, sample_v, timer
            )
            with timer("update"):
                # what the unoptimised latents give under the same draws (attribution)
                ref = self._draw(ref_dists, k, fork_rng(rng)) if cfg.updates else None
                text_prefixes, image_prefixes = self._draw(dists, k, rng)
                if step_plan.image_prefix == "fixed" and image_prefix:  # held, not resampled
                    image_prefixes = torch.tensor(
                        [image_prefix] * k, dtype=torch.long, device=gen.device
                    )
                    ref = hold(ref, ref_image_prefix, k)
            try:
                cands, _ = yield from self._generate(
                    prompt, text_prefixes, image_prefixes, rng, timer, 0, result
                )
                yield from self._score(cands, prompt, metadata, timer, result)
            except BaseException:
                for z, before, opt, state in snapshot:  # the step is not applied
                    with torch.no_grad():
                        z.copy_(before)
                    if opt is not None:
                        opt.load_state_dict(state)
                raise
            best = max(range(len(cands)), key=lambda i: cands[i].score)
            new = cands[best]
            self._pending = cands
            record = self._record(
                step, new, mods, losses, text_prefix, image_prefix,
                [c.score for c in cands], result.tokens_generated - tokens_before, timer.t, result,
            )  # fmt: skip
            flags = attribution(ref, new, best, z_t is not None, z_v is not None)
            record.text_prefix_optimised, record.image_prefix_optimised = flags
            ref_image_prefix = held_next(ref, best, new)
            text_prefix, image_prefix = new.text_prefix, new.image_prefix
            cur = new
            result.final_image = cur.image
            self._append(result, record, cur, callback)
            if self._done(cur, result):
                return
        result.stop_reason = "max_steps"

    # -- pieces ------------------------------------------------------------------------------
    def _update(self, mods, z_t, z_v, opt_t, opt_v, reward, k, step, result, timer) -> Steps:
        """Ask the driver for one Adam step per modality in `mods` (`milr.phases.UpdateRequest`,
        answered by `milr.phases.update_latents` or, pooled, `update_latents_pooled`)."""
        if not mods:
            return {}
        return (yield UpdateRequest(
            mods, {"text": z_t, "image": z_v}, {"text": opt_t, "image": opt_v}, reward,
            self.cfg_scale, self.config.temperature, self._pending if k > 1 else None, timer,
        ))  # fmt: skip

    def _draw(self, dists, k, rng):
        """Next text/image prefixes from `dists` (`milr.prefixes.draw_prefixes`)."""
        return draw_prefixes(self.generator, dists, k, rng, uses_text=self.config.uses_text)

    def _record(
        self, step, cand, mods, losses, prev_text, prev_image, scores, ntok, timings, result
    ):
        changed_t = [i for i, (a, b) in enumerate(zip(prev_text, cand.text_prefix)) if a != b]
        changed_v = [i for i, (a, b) in enumerate(zip(prev_image, cand.image_prefix)) if a != b]
        return StepRecord(
            step=step,
            reward=cand.score - 1.0,
            score=cand.score,
            passed=cand.passed,
            critics=cand.critics,
            reasoning=None if cand.reasoning is None else cand.reasoning.text,
            updated=list(mods),
            loss=losses,
            text_prefix=list(cand.text_prefix),
            text_prefix_changed=changed_t if step else [],
            image_prefix=list(cand.image_prefix),
            image_prefix_changed=changed_v if step else [],
            candidate_scores=list(scores) if len(scores) > 1 else [],
            tokens_generated=ntok if step else result.tokens_generated,
            timings={k: round(v, 6) for k, v in timings.items()},
        )

    def _append(self, result: MILRResult, record: StepRecord, cand: Candidate, callback) -> None:
        result.steps.append(record)
        if record.score > result.steps[result.best_step].score:
            result.best_step = record.step
            result.best_image = cand.image
        if callback is not None and callback(record, result) is False:
            result.stop_reason = "callback"
            raise _Stop

    def _done(self, cand: Candidate, result: MILRResult) -> bool:
        if not self.config.early_stop:  # best-of-n: every draw is made
            return False
        if self.config.stop_on_pass and cand.passed:
            result.stop_reason = "passed"
            return True
        if cand.score - 1.0 > self.config.threshold:
            result.stop_reason = "threshold"
            return True
        return False


def _copy_state(opt: Any) -> dict[str, Any]:
    import copy

    return copy.deepcopy(opt.state_dict())


class _Stop(Exception):
    """Raised by a callback returning False; ends the run normally."""


def _safe_config(critic: Critic) -> Any:
    try:
        import json

        cfg = critic.config()
        json.dumps(cfg)
        return cfg
    except Exception:
        return repr(critic)


def run_milr(
    generator: Generator | str,
    critic: Critic | str | list[str],
    prompt: str,
    metadata: dict[str, Any] | None = None,
    callback: Callable[[StepRecord, MILRResult], Any] | None = None,
    *, device: str | None = None, dtype: str | None = None, **config: Any,
) -> MILRResult:  # fmt: skip
    """Run MILR on one prompt. `generator` may be a model name/path (loaded once per `device` and
    `dtype`, then reused), `critic` spec strings (``device=auto``: the generator's device)."""
    from milr.devices import use_device
    from milr.generator import loaded_generator
    from milr.specs import build_critic

    cfg = MILRConfig(**config)  # bad settings fail before anything loads
    if isinstance(generator, str):
        generator = loaded_generator(generator, device, dtype)
    with use_device(str(getattr(generator, "device", "")) or None):
        critic = critic if isinstance(critic, Critic) else build_critic(critic)
        return MILR(generator, critic, cfg).run(prompt, metadata, callback=callback)
