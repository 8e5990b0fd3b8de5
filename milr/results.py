"""MILR results: per-step records, the trajectory (JSON), and the files `milr generate` writes.

The trajectory schema is documented in ``docs/trajectory.md``; bump `SCHEMA_VERSION` when a
field changes meaning (adding fields is not a change).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

#: 2: one name per field (``num_steps`` and ``generated_tokens``, v1's duplicates of
#: ``n_steps`` and ``tokens_generated``, are gone). `read_trajectory` reads v1 and v2.
SCHEMA_VERSION = 2
#: v1 duplicate field → the v2 name it duplicated.
_V1_ALIASES = {"num_steps": "n_steps", "generated_tokens": "tokens_generated"}
TIMING_KEYS = ("reasoning", "image_tokens", "decode", "critic", "update")


@dataclass
class StepRecord:
    """One scored image: step 0 is the model's own image, step t ≥ 1 follows the t-th update."""

    step: int
    reward: float
    score: float
    passed: bool | None
    critics: dict[str, dict[str, Any]]
    reasoning: str | None = None
    updated: list[str] = field(default_factory=list)
    loss: dict[str, float] = field(default_factory=dict)
    text_prefix: list[int] = field(default_factory=list)
    text_prefix_changed: list[int] = field(default_factory=list)
    image_prefix: list[int] = field(default_factory=list)
    image_prefix_changed: list[int] = field(default_factory=list)
    candidate_scores: list[float] = field(default_factory=list)
    tokens_generated: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    #: Attribution: whether this step's text / image prefix differs from the one the
    #: unoptimised (step-0) latents give under the same random draws; None where the
    #: modality has no optimised prefix (and at step 0). Always False in a control run.
    text_prefix_optimised: bool | None = None
    image_prefix_optimised: bool | None = None

    @property
    def optimised(self) -> bool:
        """Whether this step's image carries any change made by the latent update."""
        return bool(self.text_prefix_optimised or self.image_prefix_optimised)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MILRResult:
    """Everything a MILR run produced: images, per-step records, why it stopped, costs."""

    prompt: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    generator: dict[str, Any]
    critic: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: str = "running"
    initial_image: Image | None = None
    final_image: Image | None = None
    best_image: Image | None = None
    best_step: int = 0
    critic_calls: int = 0
    images_scored: int = 0
    tokens_generated: int = 0
    text_prefix_len: int = 0
    image_prefix_len: int = 0
    wall_seconds: float = 0.0
    error: str | None = None
    #: The exact prompts (`Generator.describe_prompts`): ``style``, ``reasoning``, ``image``.
    prompts: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        """One line: prompt, steps, first -> returned score (best), why it stopped, seconds.

        The per-step records stay in `steps` (and `to_dict()`); printing a result no longer
        dumps them.
        """
        prompt = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        select = self.config.get("select", "last")
        return (
            f"<MILRResult {prompt!r}: {self.n_steps} steps, score {f(self.initial_score)} -> "
            f"{f(self.score)} ({select}; best {f(self.best_score)} at step {self.best_step}), "
            f"stopped: {self.stop_reason}, {self.wall_seconds:.1f} s>"
        )

    # -- summaries ---------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        """Number of optimisation steps taken (updates applied and scored)."""
        return max(0, len(self.steps) - 1)

    @property
    def initial_score(self) -> float | None:
        return self.steps[0].score if self.steps else None

    @property
    def final_score(self) -> float | None:
        return self.steps[-1].score if self.steps else None

    @property
    def best_score(self) -> float | None:
        return self.steps[self.best_step].score if self.steps else None

    @property
    def _selects_best(self) -> bool:
        return self.config.get("select") == "best" or self.config.get("control") == "best-of-n"

    @property
    def image(self) -> Image | None:
        """The returned image: the last one (faithful), or the best with ``select='best'``
        (and in a ``best-of-n`` control)."""
        return self.best_image if self._selects_best else self.final_image

    @property
    def score(self) -> float | None:
        """Score of `image`."""
        return self.best_score if self._selects_best else self.final_score

    @property
    def selected_step(self) -> int:
        """Step whose image `image` is."""
        return self.best_step if self._selects_best else self.n_steps

    @property
    def selected_optimised(self) -> bool | None:
        """Whether the returned image carries any change made by the latent update (its text
        or image prefix differs from what the unoptimised latents give); None without steps.
        False for the step-0 image and in a control run."""
        if not self.steps:
            return None
        return self.steps[min(self.selected_step, len(self.steps) - 1)].optimised

    def timings(self) -> dict[str, float]:
        """Total seconds per phase over all steps (step 0 included)."""
        out = dict.fromkeys(TIMING_KEYS, 0.0)
        for s in self.steps:
            for k, v in s.timings.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def to_dict(self) -> dict[str, Any]:
        """The trajectory as JSON-ready data (schema: docs/trajectory.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "prompt": self.prompt,
            "metadata": self.metadata,
            "config": self.config,
            "generator": self.generator,
            "critic": self.critic,
            "prompts": self.prompts,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "n_steps": self.n_steps,
            "initial_score": self.initial_score,
            "final_score": self.final_score,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "selected": "best" if self._selects_best else self.config.get("select", "last"),
            "selected_step": self.selected_step,
            "selected_optimised": self.selected_optimised,
            "critic_calls": self.critic_calls,
            "images_scored": self.images_scored,
            "tokens_generated": self.tokens_generated,
            "text_prefix_len": self.text_prefix_len,
            "image_prefix_len": self.image_prefix_len,
            "wall_seconds": self.wall_seconds,
            "timings": self.timings(),
            "steps": [s.to_dict() for s in self.steps],
        }

    # -- files -------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write initial.png, final.png, best.png, trajectory.json and reward.png to `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, img in (
            ("initial", self.initial_image),
            ("final", self.final_image),
            ("best", self.best_image),
        ):
            if img is not None:
                img.save(out / f"{name}.png")
        data = _json_safe(self.to_dict())
        (out / "trajectory.json").write_text(
            json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        if self.steps:
            plot_rewards(self, out / "reward.png")
        return out


def read_trajectory(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A trajectory (``trajectory.json`` path or its parsed dict) in the current schema.

    Schema 1 files are upgraded: their duplicate fields ``num_steps``/``generated_tokens`` fold
    into ``n_steps``/``tokens_generated`` (a v1 file with only the duplicate still reads).
    Raises `MilrUserError` for an unreadable file or a schema newer than this milr.
    """
    from milr.errors import MilrUserError

    if isinstance(source, dict):
        data = dict(source)
        where = "trajectory"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MilrUserError(f"cannot read trajectory {where}: {exc}") from None
        if not isinstance(data, dict):
            raise MilrUserError(f"{where} does not hold a trajectory (a JSON object)")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise MilrUserError(
            f"{where} has schema_version={version!r}; this milr reads 1..{SCHEMA_VERSION} "
            "(upgrade milr)"
        )
    for old, new in _V1_ALIASES.items():
        if old in data:
            value = data.pop(old)
            data.setdefault(new, value)
    data["schema_version"] = SCHEMA_VERSION
    return data


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def plot_rewards(result: MILRResult, path: str | Path) -> None:
    """Reward (score − 1) per step: the ensemble and one line per critic (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [s.step for s in result.steps]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    labels = list(result.steps[0].critics)
    if len(labels) > 1 or not labels:
        ax.plot(
            steps, [s.reward for s in result.steps], "k-o", lw=2, ms=3, label="reward (ensemble)"
        )
    for label in labels:
        ys = []
        for s in result.steps:
            sc = s.critics.get(label, {}).get("score")
            ys.append(float("nan") if sc is None else sc - 1.0)
        ax.plot(steps, ys, "-o", ms=3, label=label)
    thr = result.config.get("threshold")
    if isinstance(thr, (int, float)):
        ax.axhline(thr, color="gray", ls="--", lw=1, label=f"threshold {thr:g}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("reward (score − 1)")
    ax.set_ylim(-1.05, 0.05)
    ax.set_title(result.prompt[:60] + ("…" if len(result.prompt) > 60 else ""), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
