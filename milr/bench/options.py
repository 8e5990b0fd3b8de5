"""What `milr bench` takes (`BenchOptions`), and the run settings those options fingerprint."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from milr.bench.records import SCHEMA_VERSION, fingerprint
from milr.bench.suites import Suite
from milr.errors import MilrUserError


@dataclass
class BenchOptions:
    """Everything `milr bench` takes. The fields in `result_settings` enter the fingerprint."""

    suite: str
    model: str = "shapes"
    critic: list[str] = field(default_factory=lambda: ["shapes"])
    eval_critic: list[str] | None = None
    mode: str = "both"
    steps: int = 30
    seeds: int = 1
    seed: int = 42
    out: str | None = None
    limit: int | None = None
    format: str | None = None
    device: str | None = None
    dtype: str | None = None
    allow_missing: bool = False
    prompt_style: str | None = None
    prompt_file: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    solver: str | None = None
    resume: bool = False
    force: bool = False
    retry_errors: bool = False
    progress: bool = True
    cache: str | None = None
    report: bool = True
    dist_timeout_s: float = 6 * 3600
    #: Prompts optimised at once (`milr.engine`); ``"auto"`` sizes it from free memory. Not
    #: part of the fingerprint: a prompt's result does not depend on it (docs/bench.md).
    batch_prompts: int | str = 1
    #: Bytes the batched engine may plan for (None: the device's free memory); a batch over
    #: it raises out-of-memory before it runs and is halved (how the fallback is tested).
    batch_memory: int | None = None

    def eval_specs(self) -> list[str]:
        """The evaluation critic specs (``--eval-critic``, else the reward ``--critic``)."""
        return list(self.eval_critic or self.critic)

    def validate(self) -> None:
        """Refuse impossible counts before anything loads (`MilrUserError` naming the flag)."""
        if self.steps < 0:
            raise MilrUserError(f"--steps {self.steps} must be >= 0")
        if self.seeds < 1:
            raise MilrUserError(f"--seeds {self.seeds} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise MilrUserError(f"--limit {self.limit} must be >= 1")
        if not self.critic:
            raise MilrUserError("no reward critic; pass --critic SPEC (see `milr critics`)")
        from milr.engine.engine import parse_batch_prompts

        self.batch_prompts = parse_batch_prompts(self.batch_prompts)


def default_out(opts: BenchOptions) -> Path:
    """``bench-runs/SUITE-MODEL`` when ``--out`` is not given."""
    stem = Path(opts.suite).stem or "suite"
    return Path("bench-runs") / f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(opts.model).name)}"


def result_settings(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    """The settings that determine results; a run directory never mixes two of these."""
    return {
        "benchmark": suite.format,
        "suite_sha256": suite.content_sha256,
        "model": opts.model,
        "critic": list(opts.critic),
        "eval_critic": opts.eval_specs(),
        "mode": opts.mode,
        "steps": opts.steps,
        "seeds": opts.seeds,
        "seed": opts.seed,
        "dtype": opts.dtype,
        "optimizer": dict(sorted(opts.optimizer.items())),
        "solver": opts.solver or "milr",
        # explicit prompt choices only, so runs made before they existed still resume
        **({"prompt_style": opts.prompt_style} if opts.prompt_style else {}),
        **({"prompt_file": opts.prompt_file} if opts.prompt_file else {}),
    }


def make_run(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    """The content of ``run.json`` for a new run."""
    settings = result_settings(opts, suite)
    from milr import __version__

    return {
        "schema": SCHEMA_VERSION,
        "fingerprint": fingerprint(settings),
        "settings": settings,
        "suite_path": str(Path(suite.source).resolve()),
        "created": now(),
        "milr_version": __version__,
    }


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
