"""`milr download`: fetch everything a `milr bench`/`milr generate` run would load, then list it.

It loads what the run would load, the same way (the generator through `load_generator`, every
reward and evaluation critic through `milr.preflight.prepare_critics`), so whatever a library
downloads on first use lands in that library's standard cache with its own progress bars. A
login node with internet runs it once; compute nodes then run with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import click

from milr.cli.common import prompt_file_option, prompt_style_option, revision_option
from milr.errors import MilrUserError


@click.command()
@click.option(
    "--model",
    "-M",
    default="shapes",
    help="Model: 'shapes', a Janus checkpoint directory or hub id.",
)
@click.option(
    "--critic",
    "-c",
    "critic",
    multiple=True,
    show_default="shapes",
    help="Reward critic spec (repeatable), as in bench.",
)
@click.option(
    "--eval-critic", "eval_critic", multiple=True, help="Evaluation critic spec (repeatable)."
)
@prompt_style_option
@prompt_file_option
@revision_option
@click.option(
    "--device",
    default="cpu",
    help="Where to load while fetching (cpu needs no GPU on the login node).",
)
@click.option(
    "--dtype", default="bf16", help="Model dtype while fetching (bf16 halves the memory of fp32)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the cached entries as JSON lines.")
def download(
    model: str,
    critic: tuple[str, ...],
    eval_critic: tuple[str, ...],
    prompt_style: str | None,
    prompt_file: str | None,
    revision: str | None,
    device: str,
    dtype: str,
    as_json: bool,
) -> None:
    """Prefetch the model and every critic a run with these options loads, and list the cache.

    Prints one line per checkpoint: id, revision, size and path.
    """
    from milr.devices import resolve_dtype, run_device, use_device
    from milr.specs import resolve_specs

    critic = critic or ("shapes",)  # bench's default
    resolve_specs(list(critic))  # malformed specs fail before anything loads
    if eval_critic:
        resolve_specs(list(eval_critic))
    dev = run_device(device)
    resolve_dtype(dtype, dev, "--dtype")
    if prompt_file is not None:
        from milr.models.janus_prompts import load_prompt_file

        load_prompt_file(prompt_file)

    from milr.generator import load_generator
    from milr.preflight import prepare_critics

    with use_device(dev):
        critics = prepare_critics(list(critic), [], list(eval_critic) or None)
        kwargs: dict[str, Any] = {
            "device": dev,
            "dtype": dtype,
            "prompt_style": prompt_style,
            "prompt_file": prompt_file,
        }
        if revision is not None:
            if "revision" not in inspect.signature(load_generator).parameters:
                raise MilrUserError(
                    f"--revision {revision!r}: this milr's generator loader does not take a "
                    "revision; drop --revision"
                )
            kwargs["revision"] = revision
        load_generator(model, **kwargs)
    from milr.weight_sources import with_revision

    ids = [with_revision(model, revision), *critics.reward.weights_ids()]
    if critics.evaluation is not None and not critics.shared:
        ids += critics.evaluation.weights_ids()
    for entry in cached_entries(list(dict.fromkeys(ids))):
        if as_json:
            click.echo(json.dumps(entry))
        else:
            size = "-" if entry["size"] is None else _human(entry["size"])
            click.echo(
                f"{entry['id']}  {entry['revision'] or '-'}  {size}  {entry['path'] or '-'}"
                f"  ({entry['where']})"
            )


def cached_entries(ids: list[str]) -> list[dict[str, Any]]:
    """Where each of `ids` is now (`milr.weight_sources.locate`): one entry per cached
    revision of a Hub repo (id, revision, size in bytes, snapshot path), else one entry with
    the local or cached path, or, when not cached, the source it would be downloaded from.

    ``where``: ``local``, ``huggingface`` (the Hub cache), ``ultralytics`` / ``open_clip``
    (that library's own cache), ``built in``, or a ``not cached: ...`` phrase.
    """
    from milr.hub import is_hub_id
    from milr.weight_sources import locate, split_revision

    repos: dict[str, Any] = {}
    try:
        from huggingface_hub import scan_cache_dir

        from milr.hub import cache_dir

        repos = {r.repo_id: r for r in scan_cache_dir(cache_dir()).repos}
    except Exception:  # huggingface_hub missing, or no cache folder yet
        repos = {}
    out: list[dict[str, Any]] = []
    for wid in ids:
        loc = locate(wid)
        pinned = split_revision(wid)[1]
        if pinned is not None and loc.status == "cached":
            out.append(_entry(wid, pinned, loc.size, loc.path, "huggingface"))
            continue
        if loc.status == "cached" and is_hub_id(wid) and wid in repos:
            for rev in sorted(repos[wid].revisions, key=lambda r: r.last_modified):
                name = ",".join(sorted(rev.refs)) or rev.commit_hash
                out.append(
                    _entry(wid, name, rev.size_on_disk, str(rev.snapshot_path), "huggingface")
                )
            continue
        where = {
            "local": "local",
            "builtin": "built in",
            "library": "its library's own cache (milr cannot tell)",
        }.get(loc.status)
        if loc.status == "cached":
            where = "huggingface" if loc.library == "huggingface_hub" else str(loc.library)
        elif loc.status == "download":
            where = f"not cached: would be downloaded by {loc.library} from {loc.source}"
        out.append(_entry(wid, pinned, loc.size, loc.path if loc.status != "download" else None,
                          str(where)))  # fmt: skip
    return out


def _entry(wid: str, rev: str | None, size: int | None, path: str | None, where: str) -> dict:
    return {"id": wid, "revision": rev, "size": size, "path": path, "where": where}


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GB"
