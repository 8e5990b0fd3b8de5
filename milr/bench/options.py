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
from milr.generator import SAMPLING_SCHEME


@dataclass
class BenchOptions:
    """Everything `milr bench` takes. The fields in `result_settings` enter the fingerprint."""

    suite: str
    model: str = "shapes"
    critic: list[str] = field(default_factory=lambda: ["shapes"])
    eval_critic: list[str] | None = None
    mode: str = "both"
    steps: int = 30
    #: Images per prompt; None: the named suite's protocol (GenEval 4, T2I-CompBench 10,
    #: WISE 1; `milr.bench.official`), 1 for a suite file given by path.
    seeds: int | None = None
    seed: int = 42
    out: str | None = None
    limit: int | None = None
    format: str | None = None
    device: str | None = None
    dtype: str | None = None
    allow_missing: bool = False
    prompt_style: str | None = None
    prompt_file: str | None = None
    #: Hub revision of ``model`` (None: its default branch); in the fingerprint when set.
    revision: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    solver: str | None = None
    #: A control run beside MILR in the same run (`MILRConfig.control`): ``resample`` or
    #: ``best-of-n``; None: MILR alone. Its image is each record's ``control`` side.
    control: str | None = None
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
    #: The generation loops' KV cache and compiled steps (`Generator.set_loop_options`). Not
    #: part of the fingerprint: results are the same (tested in float64).
    kv_cache: str | None = None
    compile: bool = False

    def eval_specs(self) -> list[str]:
        """The evaluation critic specs (``--eval-critic``, else the reward ``--critic``)."""
        return list(self.eval_critic or self.critic)

    def validate(self) -> None:
        """Refuse impossible counts before anything loads (`MilrUserError` naming the flag)."""
        if self.steps < 0:
            raise MilrUserError(f"--steps {self.steps} must be >= 0")
        if self.seeds is not None and self.seeds < 1:
            raise MilrUserError(f"--seeds {self.seeds} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise MilrUserError(f"--limit {self.limit} must be >= 1")
        if not self.critic:
            raise MilrUserError("no reward critic; pass --critic SPEC (see `milr critics`)")
        from milr.optimizer_config import CONTROLS

        if self.control is not None and self.control not in CONTROLS:
            raise MilrUserError(
                f"--control {self.control!r}: use one of {', '.join(CONTROLS)} (or leave it out)"
            )
        from milr.engine.engine import parse_batch_prompts

        self.batch_prompts = parse_batch_prompts(self.batch_prompts)


def default_out(opts: BenchOptions) -> Path:
    """``bench-runs/SUITE-MODEL`` when ``--out`` is not given."""
    stem = re.sub(r"[^A-Za-z0-9_.,-]", "_", Path(opts.suite).stem) or "suite"
    return Path("bench-runs") / f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(opts.model).name)}"


#: Version of the run identity `result_settings` writes. 2: the values are resolved (critic
#: configurations, prompt file content, text_prefix and latent_dtype with their defaults, the
#: mode semantics); a ``run.json`` without it was written by an earlier milr (docs/bench.md).
IDENTITY_VERSION = 2
#: What the sequential mode names mean: ``text_image`` / ``image_text`` run ``text_steps`` steps
#: of one modality, then ``image_steps`` of the other (before milr 0.1 they alternated).
MODE_SEMANTICS = "sequential-text_image-image_text"


def critic_config(specs: list[str]) -> dict[str, Any]:
    """The resolved configuration of the critic `specs` build: presets and spec files expanded,
    every parameter with its default, template-file hashes (`milr.Ensemble.config`). Builds the
    critics, which load no weights (that happens at first use)."""
    from milr.specs import build_critic

    return build_critic(list[Any](specs)).config()


def _file_sha256(path: str, flag: str) -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    except OSError as exc:
        raise MilrUserError(f"{flag} {path!r} cannot be read ({exc.strerror or exc})") from None


def resolved_optimizer(options: dict[str, Any]) -> dict[str, Any]:
    """`MILRConfig`'s hyper-parameters with `options` (``--opt``) applied: every default is
    recorded, so an explicit default equals an unset one and a changed default is seen.
    ``text_prefix`` unset is ``"checkpoint"`` (the checkpoint's recommendation); mode, steps
    and seed are recorded on their own; keys a ``--solver`` of its own takes are kept as given."""
    from dataclasses import asdict

    from milr.optimizer_config import MILRConfig

    resolved = {
        k: v
        for k, v in asdict(MILRConfig()).items()
        if k not in ("mode", "max_steps", "seed", "extra", "control")
    }
    resolved.update(options)
    if resolved.get("text_prefix") is None:
        resolved["text_prefix"] = "checkpoint"
    return dict(sorted(resolved.items()))


def result_settings(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    """The settings that determine results; a run directory never mixes two of these.

    Values are recorded resolved, so what changed on disk or in milr is seen on resume: the
    critics' configurations (a ``preset:NAME`` or spec file whose content changed), the prompt
    file's content (not its path), every optimizer hyper-parameter with its default
    (`resolved_optimizer`: ``text_prefix``, ``latent_dtype``, ...), the mode semantics and
    the image sampling scheme (`milr.generator.SAMPLING_SCHEME`). ``--batch-prompts``, ``--limit``, the device and paths of outputs stay out.
    ``control`` is recorded only when set (runs without one keep their fingerprint).
    """
    settings = {
        "identity": IDENTITY_VERSION,
        "benchmark": suite.format,
        "suite_sha256": suite.content_sha256,
        "model": opts.model,
        **({"model_revision": opts.revision} if opts.revision else {}),
        "critic": list(opts.critic),
        "critic_config": critic_config(list(opts.critic)),
        "eval_critic": opts.eval_specs(),
        "eval_critic_config": critic_config(opts.eval_specs()),
        "mode": opts.mode,
        "mode_semantics": MODE_SEMANTICS,
        "sampling": SAMPLING_SCHEME,
        "steps": opts.steps,
        "seeds": opts.seeds,
        "seed": opts.seed,
        "dtype": opts.dtype,
        "optimizer": resolved_optimizer(opts.optimizer),
        "solver": opts.solver or "milr",
        "prompt_style": opts.prompt_style or "default",
        "prompt_file_sha256": (
            _file_sha256(opts.prompt_file, "--prompt-file") if opts.prompt_file else None
        ),
    }
    if opts.control:
        settings["control"] = opts.control
    return settings


def make_run(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    """The content of ``run.json`` for a new run."""
    settings = result_settings(opts, suite)
    from milr import __version__

    run = {
        "schema": SCHEMA_VERSION,
        "fingerprint": fingerprint(settings),
        "settings": settings,
        "suite_path": None if suite.official else str(Path(suite.source).resolve()),
        "created": now(),
        "milr_version": __version__,
    }
    if suite.official:  # the named suite: protocol, pinned files (repo, commit, path, sha256)
        run["official"] = suite.official
    return run


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
