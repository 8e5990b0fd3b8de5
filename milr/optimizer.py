"""The MILR optimizer: test-time policy gradient over a generator's last-layer latents.

Faithful to the paper by default (DESIGN §2): only a prefix of the reasoning latents ``Z_t``
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

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from milr.critic import Critic, critic_label, evaluate
from milr.errors import ContractViolation, MilrUserError
from milr.results import MILRResult, StepRecord

if TYPE_CHECKING:
    import torch

    from milr.generator import Generator

MODES = ("text", "image", "both", "text_image", "image_text")
SELECT = ("last", "best")

__all__ = ["MILR", "MILRConfig", "MILRResult", "StepRecord", "run_milr"]

#: Clock of the per-phase timings (benchmarks on shared CPUs swap in `time.process_time`).
CLOCK: Callable[[], float] = time.perf_counter


@dataclass
class MILRConfig:
    """MILR hyper-parameters; defaults are the authors' GenEval script (DESIGN §2).

    - ``mode``: ``both`` (one text and one image update per step, the paper's joint mode),
      ``text``, ``image``, or ``text_image`` / ``image_text`` (alternate one modality per step,
      starting with the first named).
    - ``text_k`` / ``image_k``: fraction of reasoning / image tokens optimised, in (0, 1]
      (at least one token each).
    - ``threshold``: stop when ``r = score − 1 > threshold``.
    - ``select``: ``last`` returns the last image (faithful), ``best`` the best-scoring one.
    - ``samples_per_step``: K > 1 draws K candidates per step in one batch and uses REINFORCE
      with a mean-reward baseline on the sampled prefix tokens.
    - ``stop_on_pass``: also stop when the critic's verdict passes.
    - ``max_reasoning_tokens``: cap on reasoning length (None: the generator's, 512 for Janus).
    - ``cfg_scale``: classifier-free guidance; None uses the checkpoint's recommendation
      (`Generator.default_cfg_scale`: 5.0, the paper's value, for Janus-Pro; a checkpoint's
      ``milr.json`` may set another, e.g. the small ``shapes`` model).
    """

    mode: str = "both"
    text_k: float = 0.1
    image_k: float = 0.01
    lr: float = 0.01
    max_steps: int = 20
    threshold: float = -0.1
    cfg_scale: float | None = None
    temperature: float = 1.0
    seed: int = 42
    select: str = "last"
    samples_per_step: int = 1
    stop_on_pass: bool = False
    max_reasoning_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `MilrUserError` naming the bad value and the allowed range."""
        if self.mode not in MODES:
            raise MilrUserError(
                f"mode={self.mode!r} is not a MILR mode; use one of {', '.join(MODES)}"
            )
        for name in ("text_k", "image_k"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v <= 1):
                raise MilrUserError(f"{name}={v!r} must lie in (0, 1] (a fraction of the tokens)")
        if not _positive(self.lr):
            raise MilrUserError(f"lr={self.lr!r} must be a positive number (paper: 0.01 or 0.03)")
        if (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps < 1
        ):
            raise MilrUserError(f"max_steps={self.max_steps!r} must be a positive integer")
        if not isinstance(self.threshold, (int, float)) or not (-1.0 <= self.threshold <= 0.0):
            raise MilrUserError(
                f"threshold={self.threshold!r} must lie in [-1, 0] (rewards are score − 1)"
            )
        if self.cfg_scale is not None and not _positive(self.cfg_scale):
            raise MilrUserError(f"cfg_scale={self.cfg_scale!r} must be a positive number")
        if not _positive(self.temperature):
            raise MilrUserError(f"temperature={self.temperature!r} must be a positive number")
        if self.select not in SELECT:
            raise MilrUserError(f"select={self.select!r}; use 'last' or 'best'")
        k = self.samples_per_step
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MilrUserError(f"samples_per_step={k!r} must be an integer >= 1")
        m = self.max_reasoning_tokens
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise MilrUserError(f"max_reasoning_tokens={m!r} must be a positive integer or None")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MilrUserError(f"seed={self.seed!r} must be an integer")

    @property
    def uses_text(self) -> bool:
        return self.mode != "image"

    @property
    def optimizes_image(self) -> bool:
        return self.mode != "text"

    def modalities(self, step: int) -> list[str]:
        """Which latents step `step` (1-based) updates."""
        if self.mode == "both":
            return ["text", "image"]
        if self.mode in ("text", "image"):
            return [self.mode]
        first, second = self.mode.split("_")
        return [first if step % 2 == 1 else second]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


class _Timer:
    """Accumulates wall time per phase, synchronising CUDA so GPU work is attributed correctly."""

    def __init__(self, device: Any) -> None:
        self.cuda = str(device).startswith("cuda")
        self.t: dict[str, float] = {}

    def __call__(self, key: str) -> _Phase:
        return _Phase(self, key)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


class _Phase:
    def __init__(self, timer: _Timer, key: str) -> None:
        self.timer, self.key = timer, key

    def __enter__(self) -> None:
        self.timer.sync()
        self.start = CLOCK()

    def __exit__(self, *exc: Any) -> None:
        self.timer.sync()
        self.timer.t[self.key] = self.timer.t.get(self.key, 0.0) + CLOCK() - self.start


@dataclass
class _Candidate:
    """One generated image with what produced it."""

    reasoning: Any  # Reasoning | None
    text_prefix: list[int]
    image_prefix: list[int]
    tokens: Any  # [n] image tokens
    image: Any = None
    score: float = 0.0
    passed: bool | None = None
    critics: dict[str, dict[str, Any]] = field(default_factory=dict)


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
        if config.cfg_scale is None:  # the checkpoint's recommendation (5.0 for Janus-Pro)
            config = MILRConfig(
                **{**config.to_dict(), "cfg_scale": float(generator.default_cfg_scale)}
            )
        self.config = config
        #: The guidance scale in force (the config's, resolved against the checkpoint's).
        self.cfg_scale: float = float(config.cfg_scale)  # type: ignore[arg-type]
        self._bound = False
        self.latents: dict[str, Any] = {}
        self._pending: list[_Candidate] | None = None
        self.initial_latents: dict[str, Any] = {}

    # -- scoring -----------------------------------------------------------------------------
    def _score(
        self, cands: list[_Candidate], prompt: str, metadata: dict[str, Any], result: MILRResult
    ) -> None:
        try:
            res = evaluate(
                self.critic,
                [c.image for c in cands],
                [prompt] * len(cands),
                [metadata] * len(cands),
            )
        except ContractViolation as exc:
            raise ContractViolation(f"{exc}; the step was not applied") from exc
        result.critic_calls += 1
        result.images_scored += len(cands)
        for c, r in zip(cands, res):
            c.score, c.passed = r.score, r.passed
            c.critics = _breakdown(self.critic, r)

    # -- main loop ---------------------------------------------------------------------------
    def run(
        self,
        prompt: str,
        metadata: dict[str, Any] | None = None,
        callback: Callable[[StepRecord, MILRResult], Any] | None = None,
    ) -> MILRResult:
        """Optimise one prompt. Ctrl-C or a critic failure attach the partial result to the
        exception as ``exc.milr_result`` (the CLI writes it)."""
        import torch

        cfg, gen = self.config, self.generator
        metadata = dict(metadata or {})
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
        saved_cap = None
        settings = getattr(gen, "settings", None)
        if cfg.max_reasoning_tokens is not None and settings is not None:
            saved_cap = settings.max_reasoning_tokens
            settings.max_reasoning_tokens = cfg.max_reasoning_tokens
        try:
            with torch.enable_grad():
                self._run(prompt, metadata, callback, result)
        except _Stop:
            pass
        except BaseException as exc:
            result.stop_reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            if not isinstance(exc, KeyboardInterrupt):
                result.error = f"{type(exc).__name__}: {exc}"
            result.wall_seconds = time.perf_counter() - t0
            exc.milr_result = result  # type: ignore[attr-defined]
            raise
        finally:
            self._pending = None
            if saved_cap is not None and settings is not None:
                settings.max_reasoning_tokens = saved_cap
        result.wall_seconds = time.perf_counter() - t0
        return result

    def _generate(
        self,
        prompt: str,
        text_prefixes: list[list[int]] | None,
        image_prefixes: torch.Tensor | None,
        rng: torch.Generator,
        timer: _Timer,
        capture: int,
        result: MILRResult,
    ) -> tuple[list[_Candidate], Any]:
        """Reasoning (if used) + image tokens + decode for each candidate; returns latents too."""
        cfg, gen = self.config, self.generator
        k = max(
            len(text_prefixes or [None]), 0 if image_prefixes is None else image_prefixes.shape[0]
        )
        k = max(k, 1)
        reasonings: list[Any] = [None] * k
        if cfg.uses_text:
            with timer("reasoning"):
                if text_prefixes is None:
                    reasonings = [gen.write_reasoning(prompt)]
                else:
                    reasonings = [gen.continue_reasoning(prompt, p) for p in text_prefixes]
                if len(reasonings) == 1 and k > 1:
                    reasonings = reasonings * k
            result.tokens_generated += sum(
                len(r.tokens) - (len(p) if text_prefixes else 0)
                for r, p in zip(reasonings, text_prefixes or [[]] * len(reasonings))
            )
        texts = [gen.image_text(prompt, r.text if r is not None else None) for r in reasonings]
        tokens_list, latents = [], None
        with timer("image_tokens"):
            if len(set(texts)) == 1:  # one prompt: one batch
                out = gen.sample_image_tokens(
                    texts[0], image_prefixes, batch=k, cfg_scale=self.cfg_scale,
                    temperature=cfg.temperature, generator=rng, capture=capture,
                )  # fmt: skip
                tokens_list = list(out.tokens)
                latents = out.latents
            else:
                lats = []
                for i, text in enumerate(texts):
                    pre = None if image_prefixes is None else image_prefixes[i : i + 1]
                    out = gen.sample_image_tokens(
                        text, pre, batch=1, cfg_scale=self.cfg_scale, temperature=cfg.temperature,
                        generator=rng, capture=capture,
                    )  # fmt: skip
                    tokens_list.append(out.tokens[0])
                    lats.append(out.latents)
                import torch

                latents = torch.cat(lats)
        forced = 0 if image_prefixes is None else image_prefixes.shape[1]
        result.tokens_generated += k * (gen.image_token_count - forced)
        with timer("decode"):
            import torch

            images = gen.decode(torch.stack(tokens_list))
        cands = []
        for i in range(k):
            r = reasonings[i]
            tp = list(text_prefixes[i]) if text_prefixes else []
            ip = [] if image_prefixes is None else [int(t) for t in image_prefixes[i]]
            cands.append(_Candidate(r, tp, ip, tokens_list[i], images[i]))
        return cands, latents

    def _run(
        self,
        prompt: str,
        metadata: dict[str, Any],
        callback: Callable[[StepRecord, MILRResult], Any] | None,
        result: MILRResult,
    ) -> None:
        import torch

        cfg, gen = self.config, self.generator
        rng = gen.rng(cfg.seed)
        n_img = gen.image_token_count
        n_prefix = min(n_img, max(1, int(cfg.image_k * n_img))) if cfg.optimizes_image else 0

        # -- step 0: the model's own reasoning and image -------------------------------------
        timer = _Timer(gen.device)
        cands, img_lat = self._generate(prompt, None, None, rng, timer, n_prefix, result)
        with timer("critic"):
            self._score(cands, prompt, metadata, result)
        cur = cands[0]
        z_t = z_v = None
        opt_t = opt_v = None
        m_prefix = 0
        if cfg.uses_text and cfg.mode != "image":
            reasoning = cur.reasoning
            m_prefix = min(len(reasoning.tokens), max(1, int(cfg.text_k * len(reasoning.tokens))))
            if m_prefix > 0:
                z_t = reasoning.latents[:m_prefix].detach().float().clone().requires_grad_(True)
                opt_t = torch.optim.Adam([z_t], lr=cfg.lr)
        if cfg.optimizes_image:
            z_v = img_lat[0].detach().float().clone().requires_grad_(True)  # [N, 2, d]
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

        k = cfg.samples_per_step
        for step in range(1, cfg.max_steps + 1):
            timer = _Timer(gen.device)
            mods = [m for m in cfg.modalities(step) if (z_t if m == "text" else z_v) is not None]
            # -- proposals from the latents (and, for K > 1, the sampled prefixes) --------------
            snapshot = [
                (z, z.detach().clone(), opt, _copy_state(opt))
                for z, opt in ((z_t, opt_t), (z_v, opt_v))
                if z is not None
            ]
            tokens_before = result.tokens_generated
            with timer("update"):
                losses = self._update(
                    mods, z_t, z_v, opt_t, opt_v, cur.score - 1.0, k, step, result
                )
                text_prefixes, image_prefixes = self._prefixes(z_t, z_v, k, rng)
            try:
                cands, _ = self._generate(
                    prompt, text_prefixes, image_prefixes, rng, timer, 0, result
                )
                with timer("critic"):
                    self._score(cands, prompt, metadata, result)
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
            text_prefix, image_prefix = new.text_prefix, new.image_prefix
            cur = new
            result.final_image = cur.image
            self._append(result, record, cur, callback)
            if self._done(cur, result):
                return
        result.stop_reason = "max_steps"

    # -- pieces ------------------------------------------------------------------------------
    def _update(self, mods, z_t, z_v, opt_t, opt_v, reward, k, step, result) -> dict[str, float]:
        """One Adam step per modality in `mods` with the paper's loss (or REINFORCE for K > 1)."""
        import torch

        cfg, gen = self.config, self.generator
        losses: dict[str, float] = {}
        pending = getattr(self, "_pending", None) if k > 1 else None
        for mod in mods:
            z, opt = (z_t, opt_t) if mod == "text" else (z_v, opt_v)
            opt.zero_grad(set_to_none=True)
            if mod == "text":
                logits = gen.text_head(z)
            else:
                logits = gen.image_head(z, self.cfg_scale) / cfg.temperature
            logp = torch.log_softmax(logits.float(), dim=-1)  # [P, V]
            if pending is None:
                a = logp.detach().argmax(-1)
                loss = -reward * logp.gather(-1, a[:, None]).sum()
            else:  # REINFORCE with a mean-reward baseline over the K sampled prefixes
                rewards = torch.tensor([c.score - 1.0 for c in pending], device=logp.device)
                adv = rewards - rewards.mean()
                acts = [c.text_prefix if mod == "text" else c.image_prefix for c in pending]
                a = torch.tensor(acts, device=logp.device, dtype=torch.long)  # [K, P]
                lp = logp.unsqueeze(0).expand(len(acts), -1, -1).gather(-1, a[..., None])
                loss = -(adv[:, None] * lp.squeeze(-1)).sum() / len(acts)
            loss.backward()
            opt.step()
            losses[mod] = float(loss.detach())
        return losses

    def _prefixes(self, z_t, z_v, k, rng):
        """Text prefix = argmax of the head on Z_t (sampled for K > 1); image prefix sampled."""
        import torch

        cfg, gen = self.config, self.generator
        text_prefixes = None
        image_prefixes = None
        with torch.no_grad():
            if z_t is not None:
                logits = gen.text_head(z_t)
                if k == 1:
                    text_prefixes = [[int(t) for t in logits.argmax(-1)]]
                else:
                    probs = torch.softmax(logits, -1)
                    text_prefixes = [
                        [
                            int(t)
                            for t in torch.multinomial(
                                probs.to(_rng_device(rng)), 1, generator=rng
                            ).squeeze(-1)
                        ]
                        for _ in range(k)
                    ]
            elif cfg.uses_text:
                text_prefixes = [[]] * k  # reasoning is kept greedy without a text prefix
            if z_v is not None:
                fused = gen.image_head(z_v, self.cfg_scale)
                if cfg.temperature != 1.0:
                    fused = fused / cfg.temperature
                probs = torch.softmax(fused, dim=-1).to(_rng_device(rng))  # [N, V]
                draws = [torch.multinomial(probs, 1, generator=rng).squeeze(-1) for _ in range(k)]
                image_prefixes = torch.stack(draws).to(gen.device)
        return text_prefixes, image_prefixes

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

    def _append(self, result: MILRResult, record: StepRecord, cand: _Candidate, callback) -> None:
        result.steps.append(record)
        if record.score > result.steps[result.best_step].score:
            result.best_step = record.step
            result.best_image = cand.image
        if callback is not None and callback(record, result) is False:
            result.stop_reason = "callback"
            raise _Stop

    def _done(self, cand: _Candidate, result: MILRResult) -> bool:
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


def _rng_device(rng: Any) -> Any:
    return getattr(rng, "device", "cpu")


def _breakdown(critic: Critic, res: Any) -> dict[str, dict[str, Any]]:
    members = res.details.get("critics") if isinstance(res.details, dict) else None
    if isinstance(members, dict):
        return {
            label: {"score": m.get("score"), "passed": m.get("passed"), "weight": m.get("weight")}
            for label, m in members.items()
        }
    return {critic_label(critic): {"score": res.score, "passed": res.passed, "weight": 1.0}}


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
    **config: Any,
) -> MILRResult:
    """Run MILR on one prompt. `generator` may be a model name/path, `critic` spec strings."""
    if isinstance(generator, str):
        from milr.generator import load_generator

        generator = load_generator(generator)
    if not isinstance(critic, Critic):
        from milr.specs import build_critic

        critic = build_critic(critic)
    return MILR(generator, critic, MILRConfig(**config)).run(prompt, metadata, callback=callback)
