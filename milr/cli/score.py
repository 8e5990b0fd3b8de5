"""`milr score`: score existing images with one critic or a weighted ensemble."""

from __future__ import annotations

import json
from typing import Any

import click

from milr.cli.common import (
    critic_specs_option,
    metadata_option,
    on_error_option,
    parse_metadata,
)
from milr.errors import ExternalServiceError


def load_images(paths: tuple[str, ...]) -> list[Any]:
    """Open every image up front as 8-bit RGB (`milr.images.open_rgb`: EXIF rotation, first
    frame, 16-bit and float greys scaled), so a bad file fails before any model loads."""
    from milr.images import open_rgb

    return [open_rgb(p, "milr score") for p in paths]


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--prompt", "-p", required=True, help="The prompt the images should show.")
@metadata_option
@critic_specs_option
@on_error_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def score(images, prompt, metadata, critic_specs, on_error, as_json) -> None:
    """Score IMAGE... against --prompt with one or more critics (a weighted ensemble)."""
    from milr.critic import evaluate
    from milr.specs import build_critic, resolve_specs

    # parse specs (and .toml files) once, before touching any image or model
    specs, options = resolve_specs(list(critic_specs))
    meta = parse_metadata(metadata)
    pil_images = load_images(images)
    critic = build_critic(specs, on_error=on_error or options.get("on_error"))
    failed: ExternalServiceError | None = None
    try:
        results: list[Any] = evaluate(
            critic, pil_images, [prompt] * len(pil_images), [meta] * len(pil_images)
        )
    except ExternalServiceError as exc:
        # a server or tool failed for some images: print what was scored, then the failures
        exc.names = [str(p) for p in images]
        if exc.results is None:
            raise
        failed, results = exc, list(exc.results)
    reasons = dict(failed.failures) if failed is not None else {}
    out = []
    for i, (path, res) in enumerate(zip(images, results)):
        if res is None:
            why = reasons.get(i, "not scored: the batch failed")
            error = f"{failed.service}: {why}" if failed is not None else why
            out.append({"image": str(path), "score": None, "passed": None, "error": error})
            continue
        out.append(
            {
                "image": str(path),
                "score": res.score,
                "passed": res.passed,
                "critics": res.details["critics"],
            }
        )
    if as_json:
        click.echo(json.dumps({"results": out}, indent=2))
    else:
        _print_text(out)
    if failed is not None:
        raise failed  # one line per failed image on stderr, exit 1 (milr.cli.main)


def _print_text(out: list[dict[str, Any]]) -> None:
    for item in out:
        if item.get("error"):
            click.echo(f"{item['image']}: not scored ({item['error']})")
            continue
        verdict = {True: "pass", False: "fail", None: "-"}[item["passed"]]
        click.echo(f"{item['image']}: score {item['score']:.4f}  verdict {verdict}")
        for label, c in item["critics"].items():
            if c.get("error"):
                click.echo(f"  {label} (weight {c['weight']:g}): error: {c['error']}")
            else:
                v = {True: "pass", False: "fail", None: "-"}[c["passed"]]
                click.echo(f"  {label} (weight {c['weight']:g}): {c['score']:.4f}  {v}")
