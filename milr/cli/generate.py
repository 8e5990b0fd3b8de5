"""`milr generate`: run MILR on one prompt and write images, trajectory and reward plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from milr.cli.common import (
    allow_missing_option,
    check_loop_options,
    compile_option,
    critic_specs_option,
    dry_run_option,
    kv_cache_option,
    metadata_option,
    on_error_option,
    parse_metadata,
    prompt_file_option,
    prompt_style_option,
    revision_option,
)
from milr.errors import MilrUserError
from milr.modes import MODE_HELP, MODES
from milr.optimizer_config import MILRConfig

# cheap (no torch): the choices of the options below
TEXT_PREFIX_RULES = ("paper", "at_least_one")
LATENT_DTYPES = ("model", "float32")


#: Command-line option → `MILRConfig` field.
CONFIG_KEYS = {
    "mode": "mode", "steps": "max_steps", "seed": "seed", "select": "select",
    "text_k": "text_k", "image_k": "image_k", "lr": "lr", "threshold": "threshold",
    "cfg_scale": "cfg_scale", "temperature": "temperature",
    "samples_per_step": "samples_per_step", "stop_on_pass": "stop_on_pass",
    "max_reasoning_tokens": "max_reasoning_tokens", "text_steps": "text_steps",
    "image_steps": "image_steps", "text_prefix": "text_prefix",
    "latent_dtype": "latent_dtype",
}  # fmt: skip


def _config_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    return {dst: opts[src] for src, dst in CONFIG_KEYS.items() if opts.get(src) is not None}


def _config(opts: dict[str, Any]) -> MILRConfig:
    """The run's `MILRConfig`; a bad value is reported under its option's name (``--steps 0 ...``)."""
    try:
        return MILRConfig(**_config_kwargs(opts))
    except MilrUserError as exc:
        text = str(exc)
        for src, dst in CONFIG_KEYS.items():
            if text.startswith(f"{dst}="):
                text = f"--{src.replace('_', '-')} {text[len(dst) + 1 :]}"
                break
        raise MilrUserError(text) from None


_D = MILRConfig.__dataclass_fields__  # the optimizer's defaults, shown in --help


def _default(name: str) -> Any:
    return _D[name].default


@click.command()
@click.argument("prompt")
@click.option(
    "--model", "-M", required=True, help="Model: 'shapes', a Janus checkpoint directory or hub id."
)
@critic_specs_option
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=_default("mode"),
    help="Which latents MILR updates and in what order: "
    + "; ".join(f"{k}: {v}" for k, v in MODE_HELP.items())
    + ".",
)
@click.option("--steps", type=int, default=_default("max_steps"), help="Maximum MILR steps.")
@click.option(
    "--text-steps",
    type=int,
    default=None,
    show_default="--steps",
    help="Text-phase steps of the sequential text_image/image_text modes.",
)
@click.option(
    "--image-steps",
    type=int,
    default=None,
    show_default="--steps",
    help="Image-phase steps of the sequential text_image/image_text modes.",
)
@click.option(
    "--text-prefix",
    type=click.Choice(TEXT_PREFIX_RULES),
    default=None,
    show_default="the checkpoint's recommendation: paper for Janus-Pro, at_least_one for shapes",
    help="Text prefix rule: paper (M=int(text_k*L), EOS latent counted) or at_least_one.",
)
@click.option(
    "--latent-dtype",
    type=click.Choice(LATENT_DTYPES),
    default=None,
    show_default="model",
    help="Latents and Adam state: model (the model's dtype, as the authors) or float32.",
)
@prompt_style_option
@prompt_file_option
@revision_option
@click.option("--seed", type=int, default=_default("seed"), help="Random seed of the run.")
@click.option(
    "--select",
    type=click.Choice(["last", "best"]),
    default=_default("select"),
    help="Return the last image (the paper's choice) or the best-scoring one.",
)
@click.option("--out", "-o", type=click.Path(), default="milr-out", help="Output directory.")
@click.option(
    "--text-k",
    type=float,
    default=_default("text_k"),
    help="Fraction of the reasoning tokens optimised, in (0, 1].",
)
@click.option(
    "--image-k",
    type=float,
    default=_default("image_k"),
    help="Fraction of the image tokens optimised, in (0, 1].",
)
@click.option("--lr", type=float, default=_default("lr"), help="Adam learning rate.")
@click.option(
    "--threshold",
    type=float,
    default=_default("threshold"),
    help="Stop when the reward (score - 1) exceeds this, in [-1, 0].",
)
@click.option(
    "--cfg-scale",
    type=float,
    default=None,
    show_default="the checkpoint's; 5 for Janus-Pro",
    help="Classifier-free guidance scale.",
)
@click.option(
    "--temperature", type=float, default=_default("temperature"), help="Image sampling temperature."
)
@click.option(
    "--samples-per-step",
    type=int,
    default=_default("samples_per_step"),
    help="Candidates per step; K > 1 uses a mean-reward baseline.",
)
@click.option("--stop-on-pass", is_flag=True, help="Also stop when the critic's verdict passes.")
@click.option(
    "--max-reasoning-tokens",
    type=int,
    default=None,
    show_default="the model's; 512 for Janus-Pro",
    help="Cap on the reasoning text's length in tokens.",
)
@click.option(
    "--control",
    type=click.Choice(["resample", "best-of-n"]),
    default=None,
    help="Also run a control after MILR with the same seed, written to OUT/control: resample "
    "(the same loop without the latent update) or best-of-n (steps+1 draws, best kept).",
)
@metadata_option
@on_error_option
@click.option(
    "--device", default=None, show_default="cuda if available", help="cpu, cuda, cuda:1 ..."
)
@click.option(
    "--dtype",
    default=None,
    show_default="bf16 on GPU, fp32 on CPU",
    help="Model dtype: bf16, fp16 or fp32.",
)
@allow_missing_option
@kv_cache_option
@compile_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@dry_run_option
def generate(prompt: str, model: str, critic_specs: tuple[str, ...], **opts: Any) -> None:
    """Generate an image for PROMPT with MILR, rewarded by the --critic ensemble.

    Writes initial.png, final.png, best.png, trajectory.json and reward.png to --out.
    """
    from milr.specs import resolve_specs

    if not prompt.strip():
        raise MilrUserError("empty prompt; pass the text of the image to generate")
    # Validate everything cheap before loading any model.
    config = _config(opts)
    specs, spec_options = resolve_specs(list(critic_specs))
    metadata = parse_metadata(opts["metadata"])
    out = Path(opts["out"])
    if out.exists() and not out.is_dir():
        raise MilrUserError(f"--out {str(out)!r} exists and is not a directory")
    from milr.devices import resolve_dtype, run_device, use_device

    check_loop_options(opts["kv_cache"], opts["compile_steps"])
    device = run_device(opts["device"])  # before any critic or model is built
    resolve_dtype(opts["dtype"], device)
    if opts["prompt_file"] is not None:
        from milr.models.janus_prompts import load_prompt_file

        load_prompt_file(opts["prompt_file"])
    on_error = opts["on_error"] or spec_options.get("on_error")
    if opts["dry_run"]:
        from milr.preflight import format_plan, run_plan
        from milr.weight_sources import with_revision

        plan = run_plan(
            model=with_revision(model, opts["revision"]), reward_specs=specs, eval_specs=None,
            prompts=1, seeds=1, config=config, on_error=on_error,
        )  # fmt: skip
        click.echo(format_plan(plan, "milr generate"))
        return

    from milr.generator import load_generator
    from milr.optimizer import MILR
    from milr.preflight import prepare_critics

    # critics with device=auto follow the generator, for the rest of the command
    click.get_current_context().with_resource(use_device(device))
    # every setup fault (weights, keys, a prompt the critic cannot judge) before the model
    critic = prepare_critics(specs, [("-", prompt, metadata)], on_error=on_error).reward
    generator = load_generator(
        model,
        device=device,
        dtype=opts["dtype"],
        allow_missing=opts["allow_missing"],
        prompt_style=opts["prompt_style"],
        prompt_file=opts["prompt_file"],
        revision=opts["revision"],
    )
    generator.set_loop_options(kv_cache=opts["kv_cache"], compile=opts["compile_steps"])
    bar = None
    if not opts["quiet"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.total_steps, desc="milr", unit="step", leave=True)

    def progress(record: Any, result: Any) -> None:
        # MILR steps 1..N (step 0 is the model's own image); scores as the summary prints them
        if bar is not None:
            if record.step > 0:
                bar.update(1)
            bar.set_postfix(score=f"{record.score:.3f}", best=f"{result.best_score:.3f}")

    try:
        result = MILR(generator, critic, config).run(prompt, metadata, callback=progress)
    except KeyboardInterrupt as exc:
        _close(bar)
        partial = getattr(exc, "milr_result", None)
        if partial is not None and partial.steps:
            partial.save(out)
            click.echo(f"interrupted after {partial.n_steps} steps; wrote {out}", err=True)
        raise
    except Exception as exc:
        _close(bar)
        partial = getattr(exc, "milr_result", None)
        if partial is None or isinstance(exc, MilrUserError):
            raise
        if partial.steps:
            partial.save(out)
        raise click.ClickException(
            f"{exc} (partial results for {partial.n_steps} steps written to {out})"
        ) from exc
    _close(bar)
    result.save(out)
    summary = {
        "out": str(out),
        "stop_reason": result.stop_reason,
        "steps": result.n_steps,
        "initial_score": result.initial_score,
        "final_score": result.final_score,
        "best_score": result.best_score,
        "best_step": result.best_step,
        "critic_calls": result.critic_calls,
        "seconds": round(result.wall_seconds, 3),
    }
    control = None
    if opts["control"]:  # the same loop, update off, the same seed (common random numbers)
        from dataclasses import replace

        control = MILR(generator, critic, replace(config, control=opts["control"])).run(
            prompt, metadata
        )
        control.save(out / "control")
        summary["control"] = {
            "control": opts["control"],
            "out": str(out / "control"),
            "stop_reason": control.stop_reason,
            "steps": control.n_steps,
            "score": control.score,
            "selected_step": control.selected_step,
            "critic_calls": control.critic_calls,
        }
        summary["selected_optimised"] = result.selected_optimised
    if opts["compile_steps"]:  # included in "seconds"
        summary["compile_seconds"] = round(float(generator.compile_s), 3)
    if opts["as_json"]:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"score {result.initial_score:.3f} -> {result.final_score:.3f} "
            f"(best {result.best_score:.3f} at step {result.best_step}) after {result.n_steps} "
            f"steps, stopped: {result.stop_reason}"
            + (
                f"; kept the best image (step {result.best_step})"
                if config.select == "best"
                else ""
            )
            + f"; wrote {out}"
        )
        if control is not None:
            changed = {True: "carries", False: "carries no", None: "?"}[result.selected_optimised]
            click.echo(
                f"control {opts['control']}: score {control.initial_score:.3f} -> "
                f"{control.score:.3f} after {control.n_steps} steps, stopped: "
                f"{control.stop_reason}; MILR's image {changed} change made by the latent "
                f"update; wrote {out / 'control'}"
            )
        if opts["compile_steps"]:
            click.echo(f"compiling the per-token steps took {generator.compile_s:.1f} s")


def _close(bar: Any) -> None:
    if bar is not None:
        bar.close()
