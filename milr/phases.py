"""The phases of one MILR step, as separate functions over the generator protocol.

`milr.optimizer.MILR` strings these together for one prompt; a batched engine can call the same
functions (or batched versions of them) for many. Each phase is pure apart from its stated
effects:

- `update_latents`: the paper's loss (or REINFORCE for K > 1) and one Adam step per modality;
- `propose_prefixes` (`milr.prefixes`): the next text prefix (argmax of the text head on
  ``Z_t``) and image prefix (sampled from the CFG-fused head on ``Z_v``);
- `generate_candidates`: reasoning (if used), image tokens and pixels for each candidate;
- `score_candidates`: one critic batch over the candidates.

`MILR.steps` does not call the last two itself: it yields a `GenRequest` or `ScoreRequest`
(and, for its latents' head work, an `UpdateRequest` and a `PrefixRequest`) and whoever
drives it answers — `serve` (one prompt: `MILR.run`) or `milr.engine` (the
requests of many prompts in one batch).

Timings use `Timer`, which synchronises CUDA around each phase; `CLOCK` is the clock
(benchmarks on shared CPUs swap in `time.process_time`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from milr.critic import Critic, critic_label, evaluate
from milr.errors import ContractViolation
from milr.generated import _cap_kwargs
from milr.prefixes import PrefixRequest, propose_prefixes, read_heads  # noqa: F401 - re-exported

if TYPE_CHECKING:
    import torch

    from milr.generator import Generator, Reasoning

#: Clock of the per-phase timings (benchmarks on shared CPUs swap in `time.process_time`).
CLOCK: Callable[[], float] = time.perf_counter


class Timer:
    """Accumulates seconds per phase, synchronising CUDA so GPU work is attributed correctly."""

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
    def __init__(self, timer: Timer, key: str) -> None:
        self.timer, self.key = timer, key

    def __enter__(self) -> None:
        self.timer.sync()
        self.start = CLOCK()

    def __exit__(self, *exc: Any) -> None:
        self.timer.sync()
        self.timer.t[self.key] = self.timer.t.get(self.key, 0.0) + CLOCK() - self.start


@dataclass
class Candidate:
    """One generated image with what produced it and, once scored, its score."""

    reasoning: Reasoning | None
    text_prefix: list[int]
    image_prefix: list[int]
    tokens: Any  # [n] image tokens
    image: Any = None
    score: float = 0.0
    passed: bool | None = None
    critics: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Generated:
    """What `generate_candidates` returns: candidates, captured image latents, token count."""

    candidates: list[Candidate]
    latents: Any  # [K, capture, 2, d] or None
    tokens_generated: int


def generate_candidates(
    gen: Generator,
    prompt: str,
    text_prefixes: list[list[int]] | None,
    image_prefixes: torch.Tensor | None,
    rng: torch.Generator,
    timer: Timer,
    *,
    capture: int,
    uses_text: bool,
    cfg_scale: float,
    temperature: float,
    max_reasoning_tokens: int | None,
) -> Generated:
    """Reasoning (if `uses_text`) + image tokens + decode for each candidate.

    ``text_prefixes`` (``None``: write the reasoning from scratch) forces the start of each
    candidate's reasoning; ``image_prefixes`` (``[K, N]``) forces the first image tokens. The
    image latents of the first `capture` positions are returned for step 0.
    """
    import torch

    k = max(len(text_prefixes or [None]), 0 if image_prefixes is None else image_prefixes.shape[0])
    k = max(k, 1)
    generated = 0
    reasonings: list[Any] = [None] * k
    if uses_text:
        cap = _cap_kwargs(gen, max_reasoning_tokens)
        with timer("reasoning"):
            if text_prefixes is None:
                reasonings = [gen.write_reasoning(prompt, **cap)]
            else:
                reasonings = [gen.continue_reasoning(prompt, p, **cap) for p in text_prefixes]
            if len(reasonings) == 1 and k > 1:
                reasonings = reasonings * k
        generated += sum(
            len(r.tokens) - (len(p) if text_prefixes else 0)
            for r, p in zip(reasonings, text_prefixes or [[]] * len(reasonings))
        )
    texts = [gen.image_text(prompt, r.text if r is not None else None) for r in reasonings]
    tokens_list: list[Any] = []
    with timer("image_tokens"):
        if len(set(texts)) == 1:  # one prompt: one batch
            out = gen.sample_image_tokens(
                texts[0], image_prefixes, batch=k, cfg_scale=cfg_scale,
                temperature=temperature, generator=rng, capture=capture,
            )  # fmt: skip
            tokens_list = list(out.tokens)
            latents = out.latents
        else:  # K candidates with different reasoning: one batch of rows sharing `rng`
            out = gen.sample_image_tokens_batch(
                texts, [None if image_prefixes is None else image_prefixes[i] for i in range(k)],
                [rng] * k, cfg_scale=cfg_scale, temperature=temperature, capture=capture,
            )  # fmt: skip
            tokens_list = list(out.tokens)
            latents = out.latents
    forced = 0 if image_prefixes is None else image_prefixes.shape[1]
    generated += k * (gen.image_token_count - forced)
    with timer("decode"):
        images = gen.decode(torch.stack(tokens_list))
    cands = []
    for i in range(k):
        tp = list(text_prefixes[i]) if text_prefixes else []
        ip = [] if image_prefixes is None else [int(t) for t in image_prefixes[i]]
        cands.append(Candidate(reasonings[i], tp, ip, tokens_list[i], images[i]))
    return Generated(cands, latents, generated)


@dataclass
class GenRequest:
    """What one prompt's optimizer asks of `generate_candidates` at a step.

    `MILR.steps` yields it; whoever drives the steps answers with the `Generated`
    (`serve` for one prompt, `milr.engine` for many prompts in one batch) and adds the
    phases' seconds to `timer`.
    """

    prompt: str
    text_prefixes: list[list[int]] | None
    image_prefixes: torch.Tensor | None
    rng: torch.Generator
    capture: int
    uses_text: bool
    cfg_scale: float
    temperature: float
    max_reasoning_tokens: int | None
    timer: Timer | None = None

    @property
    def k(self) -> int:
        """Candidates asked for (``K``): the number of text or image prefixes, at least 1."""
        k = max(
            len(self.text_prefixes or [None]),
            0 if self.image_prefixes is None else int(self.image_prefixes.shape[0]),
        )
        return max(k, 1)

    def image_rows(self) -> int:
        """Image rows this request adds to a batch (one per candidate; CFG doubles them)."""
        return self.k


@dataclass
class ScoreRequest:
    """What one prompt's optimizer asks of `score_candidates` at a step (answer: None)."""

    critic: Critic
    candidates: list[Candidate]
    prompt: str
    metadata: dict[str, Any]
    timer: Timer | None = None


@dataclass
class UpdateRequest:
    """What one prompt's optimizer asks of `update_latents` at a step (answer: the losses).

    A driver of many prompts answers all of a round's requests with one head forward and
    backward (`update_latents_pooled`); `serve` answers one with `update_latents`.
    """

    mods: list[str]
    latents: dict[str, Any]
    optimizers: dict[str, Any]
    reward: float
    cfg_scale: float
    temperature: float
    pending: list[Candidate] | None = None
    timer: Timer | None = None


def serve(
    gen: Generator,
    request: GenRequest | ScoreRequest | UpdateRequest | PrefixRequest,
    timer: Timer | None = None,
) -> Any:
    """Answer one request of `MILR.steps` on its own (the one-prompt optimizer's server):
    `Generated` for a `GenRequest`, None for a `ScoreRequest`, the losses for an
    `UpdateRequest`, one `milr.prefixes.Dists` per read for a `PrefixRequest`.

    The phases' seconds go to `timer`, by default the request's own.
    """
    if timer is None:
        timer = request.timer if request.timer is not None else Timer(gen.device)
    if isinstance(request, UpdateRequest):
        import torch

        with timer("update"), torch.inference_mode(False), torch.enable_grad():
            return update_latents(
                gen, request.mods, request.latents, request.optimizers, request.reward,
                cfg_scale=request.cfg_scale, temperature=request.temperature,
                pending=request.pending,
            )  # fmt: skip
    if isinstance(request, PrefixRequest):
        with timer("update"):
            p = request
            return [
                read_heads(gen, z_t, z_v, p.k, cfg_scale=p.cfg_scale, temperature=p.temperature)
                for z_t, z_v in p.reads
            ]
    if isinstance(request, ScoreRequest):
        with timer("critic"):
            score_candidates(request.critic, request.candidates, request.prompt, request.metadata)
        return None
    r = request
    return generate_candidates(
        gen, r.prompt, r.text_prefixes, r.image_prefixes, r.rng, timer, capture=r.capture,
        uses_text=r.uses_text, cfg_scale=r.cfg_scale, temperature=r.temperature,
        max_reasoning_tokens=r.max_reasoning_tokens,
    )  # fmt: skip


def score_candidates(
    critic: Critic, cands: list[Candidate], prompt: str, metadata: dict[str, Any]
) -> None:
    """Score every candidate in one critic batch; sets ``score``, ``passed`` and ``critics``.

    Raises `ContractViolation` (the step is not applied) when the critic breaks its contract.
    """
    try:
        res = evaluate(
            critic, [c.image for c in cands], [prompt] * len(cands), [metadata] * len(cands)
        )
    except ContractViolation as exc:
        raise ContractViolation(f"{exc}; the step was not applied") from exc
    for c, r in zip(cands, res):
        c.score, c.passed = r.score, r.passed
        c.critics = breakdown(critic, r)


def update_latents(
    gen: Generator,
    mods: list[str],
    latents: dict[str, Any],
    optimizers: dict[str, Any],
    reward: float,
    *,
    cfg_scale: float,
    temperature: float,
    pending: list[Candidate] | None = None,
) -> dict[str, float]:
    """One Adam step per modality in `mods`; returns the loss per modality.

    Paper loss (MILR, arXiv 2509.22761): ``−r · Σ log P[argmax P]`` over the prefix positions, with
    ``P = softmax(head(Z))`` (image: CFG-fused, divided by the temperature). With `pending`
    (the K > 1 candidates of the previous step) the loss is REINFORCE with a mean-reward
    baseline on the sampled prefix tokens instead. Gradients reach only ``latents[mod]``.
    """

    losses: dict[str, float] = {}
    for mod in mods:
        z, opt = latents[mod], optimizers[mod]
        opt.zero_grad(set_to_none=True)
        logp = _head_logp(gen, mod, z, cfg_scale, temperature)  # [P, V]
        # the paper's loss, or REINFORCE with a mean-reward baseline over the K sampled prefixes
        loss = _loss(logp, mod, reward, pending)
        loss.backward()
        opt.step()
        losses[mod] = float(loss.detach())
    return losses


def _head_logp(gen: Generator, mod: str, z: Any, cfg_scale: float, temperature: float) -> Any:
    import torch

    if mod == "text":
        logits = gen.text_head(z)
    else:
        logits = gen.image_head(z, cfg_scale) / temperature
    return torch.log_softmax(logits.float(), dim=-1)


def _loss(logp: Any, mod: str, reward: float, pending: list[Candidate] | None) -> Any:
    """The paper's loss (or REINFORCE over `pending`) on log-probabilities ``[P, V]``."""
    import torch

    if pending is None:
        a = logp.detach().argmax(-1)
        return -reward * logp.gather(-1, a[:, None]).sum()
    rewards = torch.tensor([c.score - 1.0 for c in pending], device=logp.device)
    adv = rewards - rewards.mean()
    acts = [c.text_prefix if mod == "text" else c.image_prefix for c in pending]
    a = torch.tensor(acts, device=logp.device, dtype=torch.long)  # [K, P]
    lp = logp.unsqueeze(0).expand(len(acts), -1, -1).gather(-1, a[..., None])
    return -(adv[:, None] * lp.squeeze(-1)).sum() / len(acts)


def update_latents_pooled(gen: Generator, requests: list[UpdateRequest]) -> list[dict[str, float]]:
    """`update_latents` for many prompts with one head forward and backward per modality.

    Every prompt's latents of a modality (same dtype and guidance) go through the head as one
    batch; each prompt's loss is computed on its own rows exactly as `update_latents` does,
    the sum is back-propagated once (a prompt's gradient comes from its own loss only), and
    each prompt's own Adam steps. Returns each request's losses; equal to per-prompt updates
    (tested in float64).
    """
    import torch

    losses: list[dict[str, float]] = [{} for _ in requests]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(requests):
        for mod in r.mods:
            z = r.latents[mod]
            groups.setdefault((mod, z.dtype, r.cfg_scale, r.temperature), []).append(i)
    with torch.inference_mode(False), torch.enable_grad():
        for (mod, _, cfg_scale, temperature), idx in groups.items():
            zs = [requests[i].latents[mod] for i in idx]
            for i in idx:
                requests[i].optimizers[mod].zero_grad(set_to_none=True)
            logp = _head_logp(gen, mod, torch.cat(zs), cfg_scale, temperature)
            parts = torch.split(logp, [int(z.shape[0]) for z in zs])
            each = [
                _loss(lp, mod, requests[i].reward, requests[i].pending) for i, lp in zip(idx, parts)
            ]
            torch.stack(each).sum().backward()
            for i, loss in zip(idx, each):
                requests[i].optimizers[mod].step()
                losses[i][mod] = float(loss.detach())
    return losses


def breakdown(critic: Critic, res: Any) -> dict[str, dict[str, Any]]:
    """Per-critic ``score``/``passed``/``weight`` of a result (one entry for a single critic)."""
    members = res.details.get("critics") if isinstance(res.details, dict) else None
    if isinstance(members, dict):
        return {
            label: {"score": m.get("score"), "passed": m.get("passed"), "weight": m.get("weight")}
            for label, m in members.items()
        }
    return {critic_label(critic): {"score": res.score, "passed": res.passed, "weight": 1.0}}
