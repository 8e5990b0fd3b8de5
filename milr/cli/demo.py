"""`milr demo`: MILR on a few ShapesEval prompts with the shipped `shapes` model, offline on CPU.

Writes, per prompt, ``initial.png``, ``final.png``, ``reward.png`` and ``trajectory.json``,
plus ``contact_sheet.png`` (prompt, initial, final) and ``summary.json``, and prints a table
of initial and final verdicts and steps.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import click

from milr.errors import MilrUserError

#: Prompts of the demo: colour, counting, position and colour binding. The shipped model's
#: first sample fails each of them at seed 42 (benchmarks/results/shapes_bench_full.json).
DEMO_PROMPTS: tuple[str, ...] = (
    "a photo of a green circle",
    "a photo of three triangles",
    "a photo of a yellow circle below a blue square",
    "a photo of a blue diamond and an orange square",
)


def check_out_dir(out: str | Path) -> Path:
    """The output directory, created and proven writable, or `MilrUserError` before any work."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise MilrUserError(
            f"--out {str(path)!r} is a file, not a directory; pass a directory path"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".milr-write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise MilrUserError(
            f"--out {str(path)!r} is not writable ({exc.strerror or exc}); pass a directory you can write to"
        ) from None
    return path


def slug(text: str, index: int) -> str:
    """A file-system-safe folder name for a prompt."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
    return f"{index:02d}-{s or 'prompt'}"


def contact_sheet(rows: list[tuple[str, Any, Any, str, str]], path: Path, scale: int = 3) -> Path:
    """One row per prompt: the prompt, the initial image and the final image, with verdicts."""
    from PIL import Image, ImageDraw

    cell = 64 * scale
    text_w = 270
    pad = 8
    head = 22
    width = text_w + 2 * (cell + pad) + pad
    height = head + len(rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), "prompt", fill=(0, 0, 0))
    draw.text((text_w, 4), "initial", fill=(0, 0, 0))
    draw.text((text_w + cell + pad, 4), "final (MILR)", fill=(0, 0, 0))
    for i, (prompt, initial, final, v0, v1) in enumerate(rows):
        y = head + i * (cell + pad)
        words, lines, line = prompt.split(), [], ""
        for w in words:
            if len(line) + len(w) + 1 > 36:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for j, ln in enumerate(lines):
            draw.text((pad, y + 4 + 14 * j), ln, fill=(0, 0, 0))
        draw.text((pad, y + 8 + 14 * len(lines)), f"{v0} -> {v1}", fill=(80, 80, 80))
        for k, img in enumerate((initial, final)):
            if img is not None:
                x = text_w + k * (cell + pad)
                sheet.paste(
                    img.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y)
                )
                draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=(200, 200, 200))
    sheet.save(path)
    return path


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "fail", None: "-"}[passed]


@click.command()
@click.option(
    "--out",
    "-o",
    type=click.Path(),
    default="milr-demo",
    show_default=True,
    help="Output directory (created; must be writable).",
)
@click.option(
    "--prompt",
    "-p",
    "prompts",
    multiple=True,
    help="Prompt to run instead of the built-in ones (repeatable).",
)
@click.option(
    "--steps", type=int, default=20, show_default=True, help="Maximum MILR steps per prompt."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--mode", type=click.Choice(["both", "text", "image"]), default="both", show_default=True
)
def demo(out: str, prompts: tuple[str, ...], steps: int, seed: int, mode: str) -> None:
    """Run MILR on a few ShapesEval prompts with the shipped `shapes` model (offline, CPU).

    Each prompt's initial and final images, reward curve and trajectory go to OUT/<prompt>/,
    a contact sheet to OUT/contact_sheet.png, and a table of verdicts is printed.
    """
    if steps < 1:
        raise MilrUserError(f"--steps {steps} must be at least 1")
    out_dir = check_out_dir(out)
    prompt_list = list(prompts) or list(DEMO_PROMPTS)
    for p in prompt_list:
        if not p.strip():
            raise MilrUserError(
                "--prompt '' is empty; pass a prompt such as 'a photo of two red circles'"
            )

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from milr.generator import load_generator
    from milr.optimizer import MILR, MILRConfig
    from milr.registry import get_registry

    # the model is tiny: per-op overhead dominates, and extra threads only contend for cores
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    click.echo("loading the shapes model and critic ...", err=True)
    generator = load_generator("shapes", device="cpu")
    from milr.critics.shapes import ShapesCritic

    critic = get_registry().create_critic("shapes")
    assert isinstance(critic, ShapesCritic)
    metas = [critic.metadata_for(p, {}) for p in prompt_list]  # bad prompts fail before any run
    # the shapes model writes 5-20 token plans: the paper's M = int(0.1 * L) would be 0 for
    # the shortest (left unoptimised), so the demo keeps milr 0.1's at-least-one-token rule
    config = MILRConfig(mode=mode, max_steps=steps, seed=seed, text_prefix="at_least_one")
    rows, table = [], []
    for i, (prompt, meta) in enumerate(zip(prompt_list, metas, strict=True)):
        click.echo(f"[{i + 1}/{len(prompt_list)}] {prompt}", err=True)

        def progress(record, result) -> None:
            click.echo(
                f"    step {record.step:2d}  score {record.score:.2f}  {_verdict(record.passed)}",
                err=True,
            )

        result = MILR(generator, critic, config).run(prompt, meta, callback=progress)
        folder = result.save(out_dir / slug(prompt, i + 1))
        first, last = result.steps[0], result.steps[-1]
        rows.append(
            (
                prompt,
                result.initial_image,
                result.image,
                _verdict(first.passed),
                _verdict(last.passed),
            )
        )
        table.append(
            {
                "prompt": prompt,
                "initial": _verdict(first.passed),
                "final": _verdict(result.steps[result.selected_step].passed),
                "initial_score": first.score,
                "final_score": result.score,
                "steps": result.n_steps,
                "seconds": round(result.wall_seconds, 2),
                "folder": folder.name,
            }
        )
    sheet = contact_sheet(rows, out_dir / "contact_sheet.png")
    (out_dir / "summary.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    click.echo(format_table(table))
    n0 = sum(r["initial"] == "pass" for r in table)
    n1 = sum(r["final"] == "pass" for r in table)
    click.echo(
        f"\npassed: {n0}/{len(table)} initially, {n1}/{len(table)} after MILR "
        f"({time.perf_counter() - t0:.0f}s). Contact sheet: {sheet}"
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table: prompt, initial verdict, final verdict, steps."""
    w = max([len("prompt"), *(len(r["prompt"]) for r in rows)])
    lines = [f"{'prompt':<{w}}  initial  final  steps", f"{'-' * w}  -------  -----  -----"]
    for r in rows:
        lines.append(f"{r['prompt']:<{w}}  {r['initial']:<7}  {r['final']:<5}  {r['steps']:>5}")
    return "\n".join(lines)
