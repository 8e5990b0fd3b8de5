"""`rescore`: evaluate a finished run's saved images with another evaluation critic."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from milr.bench.cache import image_sha256
from milr.bench.options import now
from milr.bench.record import BenchRecord
from milr.bench.records import (
    RUN_FILE,
    atomic_write_text,
    fingerprint,
    read_jsonl,
    read_run,
    shard_files,
)
from milr.bench.scoring import open_cache, score_pair
from milr.bench.suites import BenchPrompt
from milr.bench.summary import finalize
from milr.errors import MilrUserError
from milr.images import open_rgb


def rescore(
    out: str | Path, eval_critic: list[str], *, cache: str | None = None, report: bool = True
) -> dict[str, Any]:
    """Re-evaluate a finished run's images with another evaluation critic; no image is regenerated.

    Each shard is rewritten atomically; ``run.json`` is updated last, so an interrupted rescore
    is simply run again (the score cache makes the finished part free).
    """
    from milr import build_critic

    out = Path(out)
    run = read_run(out)
    if run is None:
        raise MilrUserError(f"{out} holds no bench run (no {RUN_FILE})")
    critic = build_critic(list[Any](eval_critic))
    score_cache = open_cache(cache or out / "score_cache.sqlite")
    try:
        for path in shard_files(out):
            records = [BenchRecord.from_dict(d) for d in read_jsonl(path)]
            for rec in records:
                if rec.error or rec.base is None or rec.milr is None:
                    continue
                prompt = BenchPrompt(rec.prompt_id, rec.prompt, rec.group, rec.metadata)
                sides = [rec.base, rec.milr] + ([rec.control] if rec.control else [])
                images = [open_rgb(out / str(side.image), "milr bench rescore") for side in sides]
                hashes = [side.image_sha256 or image_sha256(im) for side, im in zip(sides, images)]
                t = time.perf_counter()
                scored, rec.eval_batch_error = score_pair(
                    critic, images, prompt, score_cache, hashes
                )
                for side, evaluation in zip(sides, scored):
                    side.set_evaluation(evaluation)
                rec.timings["eval_s"] = time.perf_counter() - t
            text = "".join(
                json.dumps(r.to_dict(), ensure_ascii=False, default=str) + "\n" for r in records
            )
            atomic_write_text(path, text)
        if score_cache is not None:
            print(
                f"score cache: {score_cache.hits} hits, {score_cache.misses} misses",
                file=sys.stderr,
            )
    finally:
        if score_cache is not None:
            score_cache.close()
    settings = dict(run["settings"])
    old_eval = settings.get("eval_critic")
    settings["eval_critic"] = list(eval_critic)
    settings["eval_critic_config"] = critic.config()
    history = list(run.get("history", []))
    history.append({"rescored_from": old_eval, "fingerprint": run.get("fingerprint"), "at": now()})
    run.update(settings=settings, fingerprint=fingerprint(settings), history=history)
    atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")
    return finalize(out, report=report)
