"""Setup checks before the first image, and the plan ``--dry-run`` prints.

`milr generate` and `milr bench` call `prepare_critics` after parsing their options and
before the generator loads: it builds the reward and the evaluation critics, calls each one's
`Critic.prepare` (weights loaded, downloaded on first use where the critic does so; API keys,
spaCy pipelines, programs checked) and `Critic.check_item` for every prompt of the run (a
GenEval class the detector does not know, a prompt the GenEval parser cannot read, a
T2I-CompBench category no member is routed for). Any fault is one `MilrUserError` line: the
command exits 2 and no record is written.

`plan` and `format_plan` describe a run without loading anything: prompts x seeds, the most
generations and critic calls (API calls for critics that call a paid service, see
`Critic.calls_api`), and which Hugging Face Hub ids are not in the local cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError
from milr.weight_sources import Location, locate

if TYPE_CHECKING:
    from milr.critic import Critic

#: One item to check: (id shown in messages, prompt, metadata).
Item = tuple[str, str, dict[str, Any]]


def members(critic: Critic) -> Iterator[Critic]:
    """`critic` and, recursively, the members of ensembles and routes (leaves and composites)."""
    yield critic
    inner = getattr(critic, "route", None)  # the `route` critic wraps a milr.Route
    composite = inner if hasattr(inner, "_members") else critic
    for _, m in getattr(composite, "_members", ()):
        yield from members(m.critic)


def _who(role: str) -> str:
    return f"{role} critic"


def prepare(critic: Critic, role: str) -> None:
    """`Critic.prepare`, a refusal prefixed with `role` (``reward``/``evaluation``)."""
    try:
        critic.prepare()
    except MilrUserError as exc:
        raise MilrUserError(f"{_who(role)}: {exc}") from None


def check_items(critic: Critic, items: Sequence[Item], role: str) -> None:
    """`Critic.check_item` for every item; the first refusal, with how many items fail.

    One line: ``evaluation critic cannot judge 3 of 10 prompts; first, prompt 00004 ('a
    photo of a bench'): ...``.
    """
    failed: list[tuple[Item, str]] = []
    for item in items:
        pid, prompt, metadata = item
        try:
            critic.check_item(prompt, dict(metadata or {}))
        except MilrUserError as exc:
            failed.append((item, str(exc)))
    if not failed:
        return
    (pid, prompt, _), reason = failed[0]
    if len(items) == 1:
        raise MilrUserError(f"{_who(role)} cannot judge the prompt {prompt!r}: {reason}")
    raise MilrUserError(
        f"{_who(role)} cannot judge {len(failed)} of {len(items)} prompts; first, prompt "
        f"{pid} ({prompt!r}): {reason}"
    )


@dataclass
class Critics:
    """The critics a run uses, built and prepared."""

    reward: Critic
    evaluation: Critic | None = None
    #: True when the evaluation critic is the reward critic (same specs: weights shared).
    shared: bool = False


def prepare_critics(
    reward_specs: Sequence[Any],
    items: Sequence[Item],
    eval_specs: Sequence[Any] | None = None,
    *,
    on_error: str | None = None,
) -> Critics:
    """Build, prepare and check the run's critics, before any generator loads.

    `reward_specs` / `eval_specs`: what `milr.build_critic` takes (spec strings, `CriticSpec`);
    `eval_specs` None: no evaluation critic; equal to `reward_specs`: the reward critic is
    reused. `items`: every prompt the run will judge. Raises `MilrUserError` (one line naming
    the critic's role) for any setup fault.
    """
    from milr.specs import build_critic

    reward = build_critic(list(reward_specs), on_error=on_error)
    prepare(reward, "reward")
    shared = False
    evaluation = None
    if eval_specs is not None:
        if _same(eval_specs, reward_specs):
            evaluation, shared = reward, True
        else:
            evaluation = build_critic(list(eval_specs))
            prepare(evaluation, "evaluation")
    check_items(reward, items, "reward")
    if evaluation is not None and not shared:
        check_items(evaluation, items, "evaluation")
    return Critics(reward, evaluation, shared)


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two spec lists are the same (as `milr.bench` compares them: as JSON)."""
    import json

    def canonical(v: Sequence[Any]) -> str:
        return json.dumps(list(v), sort_keys=True, separators=(",", ":"), default=str)

    return canonical(a) == canonical(b)


# ------------------------------------------------------------------ setup faults in old runs


def setup_error_names() -> set[str]:
    """Class names of `MilrUserError` and its subclasses (errors that records must not hold)."""
    import milr  # noqa: F401  (subclasses defined by loaded critics count too)

    out: set[str] = set()
    todo: list[type] = [MilrUserError]
    while todo:
        cls = todo.pop()
        out.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return out


def is_setup_error(text: str | None) -> bool:
    """Whether a record's ``Type: message`` error is a setup fault (a `MilrUserError`).

    Runs made before setup faults stopped the run hold one such record per prompt; a rerun
    redoes them instead of counting them as finished.
    """
    if not text:
        return False
    return text.split(":", 1)[0].strip() in setup_error_names()


# ------------------------------------------------------------------------------ --dry-run


@dataclass
class Plan:
    """What a run would do, computed without loading any model."""

    prompts: int
    seeds: int
    #: Upper bound on images drawn: per (prompt, seed) the initial sample and one per step
    #: and candidate (``samples_per_step``).
    max_generations: int
    #: Upper bound on reward-critic calls (one image each) during optimisation.
    max_reward_calls: int
    #: Evaluation-critic calls (bench: base and MILR image per record; 0 for generate).
    eval_calls: int
    #: ``{critic name: most calls}`` for critics with `Critic.calls_api`.
    api_calls: dict[str, int] = field(default_factory=dict)
    #: ``(id, where)`` for every checkpoint the critics and the generator name; ``where`` is
    #: ``cached``, ``download`` (not cached: fetched on first use), ``local``, ``builtin`` or
    #: ``library`` (see `milr.weight_sources.locate`).
    weights: list[tuple[str, str]] = field(default_factory=list)
    #: (prompt, seed) pairs still to run (a resumed bench run skips finished ones).
    records: int = 0
    #: The same checkpoints with their paths and download sources (`Location`).
    locations: list[Location] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "seeds": self.seeds,
            "records": self.records,
            "max_generations": self.max_generations,
            "max_reward_calls": self.max_reward_calls,
            "eval_calls": self.eval_calls,
            "api_calls": dict(self.api_calls),
            "weights": [loc.to_dict() for loc in self.locations]
            or [{"id": i, "status": s} for i, s in self.weights],
        }


def _api_critics(critic: Critic | None) -> list[str]:
    if critic is None:
        return []
    return [type(c).name for c in members(critic) if getattr(type(c), "calls_api", False)]


def plan(
    *,
    prompts: int,
    seeds: int,
    records: int | None = None,
    max_steps: int,
    samples_per_step: int,
    reward: Critic,
    evaluation: Critic | None,
    model: str | None,
    eval_per_record: int = 2,
) -> Plan:
    """The plan of a run of `prompts` x `seeds` (`records` of them still to do, default all)
    with critics built but not prepared."""
    records = prompts * seeds if records is None else records
    per_record = 1 + max_steps * samples_per_step
    gens = records * per_record
    eval_calls = records * eval_per_record if evaluation is not None else 0
    api: dict[str, int] = {}
    for name in _api_critics(reward):
        api[name] = api.get(name, 0) + gens
    if evaluation is not None:
        for name in _api_critics(evaluation):
            api[name] = api.get(name, 0) + eval_calls
    ids: list[str] = []
    if model:
        ids.append(model)
    for critic in (reward, evaluation):
        if critic is not None:
            ids.extend(critic.weights_ids())
    found = [locate(i) for i in dict.fromkeys(ids)]
    weights = [(loc.id, loc.status) for loc in found]
    return Plan(prompts, seeds, gens, gens, eval_calls, api, weights, records, found)


def looks_like_hub_id(value: str) -> bool:
    """``org/name`` with no local file or folder of that name (what transformers would fetch)."""
    if Path(value).expanduser().exists() or value.startswith((".", "/", "~")):
        return False
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and " " not in value


def weight_status(value: str) -> str:
    """``local``, ``cached``, ``download``, ``builtin`` or ``library``: `locate`'s status."""
    return locate(value).status


def hub_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the Hub repo's ``config.json`` (or any snapshot) is in the local Hub cache."""
    try:
        from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(found, str):
        return True
    try:
        info = scan_cache_dir()
    except Exception:  # no cache folder yet (CacheNotFound) or an unreadable one
        return False
    return any(r.repo_id == repo_id and r.revisions for r in info.repos)


def format_plan(p: Plan, command: str) -> str:
    """The plan as the lines ``--dry-run`` prints."""
    lines = [
        f"{command} --dry-run: nothing loaded, nothing written",
        f"prompts x seeds: {p.prompts} x {p.seeds} = {p.records} to run",
        f"at most {p.max_generations} generations and {p.max_reward_calls} reward-critic calls"
        + (f", {p.eval_calls} evaluation-critic calls" if p.eval_calls else ""),
    ]
    for name, n in p.api_calls.items():
        lines.append(f"API calls: at most {n} by critic {name!r}")
    found = p.locations or [Location(i, s) for i, s in p.weights]
    missing = [loc.id for loc in found if loc.status == "download"]
    for loc in found:
        lines.append(f"weights {loc.id}: {loc.describe()}")
    lines.append(f"would download: {', '.join(missing)}" if missing else "would download: nothing")
    return "\n".join(lines)


def run_plan(
    *,
    model: str,
    reward_specs: Sequence[Any],
    eval_specs: Sequence[Any] | None,
    prompts: int,
    seeds: int,
    config: Any,
    records: int | None = None,
    on_error: str | None = None,
) -> Plan:
    """`plan` for a run with `config` (a `milr.MILRConfig`): critics built, nothing loaded."""
    from milr.specs import build_critic

    reward = build_critic(list(reward_specs), on_error=on_error)
    evaluation = None
    if eval_specs is not None:
        evaluation = build_critic(list(eval_specs))
    return plan(
        prompts=prompts,
        seeds=seeds,
        records=records,
        max_steps=int(config.total_steps),
        samples_per_step=int(config.samples_per_step),
        reward=reward,
        evaluation=evaluation,
        model=model,
    )
