"""Export a run's images in a benchmark's own layout, for its official evaluator.

- GenEval / ShapesEval: ``OUT/00000/metadata.jsonl`` (the prompt's metadata line) and
  ``OUT/00000/samples/0000.png`` … one image per seed, the layout GenEval's evaluator reads.
- WISE: ``OUT/{prompt_id}.png`` (seed 0), the naming WISE's ``gpt_eval.py`` expects.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from milr.bench.records import load_all_records, read_run
from milr.errors import MilrUserError

SIDES = ("base", "milr")


def export_run(run_dir: str | Path, dest: str | Path, side: str = "milr") -> int:
    """Copy `side`'s images of a run into the benchmark's layout under `dest`; returns the count."""
    if side not in SIDES:
        raise MilrUserError(f"--side {side!r}: use base or milr")
    run_dir, dest = Path(run_dir), Path(dest)
    records = load_all_records(run_dir)
    if not records:
        raise MilrUserError(f"{run_dir} holds no bench records")
    benchmark = ((read_run(run_dir) or {}).get("settings") or {}).get("benchmark") or records[
        0
    ].get("benchmark")
    if benchmark not in ("geneval", "shapes", "wise"):
        raise MilrUserError(
            f"no official layout known for benchmark {benchmark!r}; export supports geneval, shapes, wise"
        )
    count = 0
    for rec in records:
        img = (rec.get(side) or {}).get("image")
        if rec.get("error") or not img:
            continue
        src = run_dir / img
        if benchmark == "wise":
            if int(rec.get("seed_index", 0)) != 0:
                continue
            target = dest / f"{rec['prompt_id']}.png"
        else:
            folder = dest / str(rec["prompt_id"])
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            meta = {k: v for k, v in rec["metadata"].items() if k != "id"}
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n", encoding="utf-8")
            target = folder / "samples" / f"{int(rec.get('seed_index', 0)):04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        count += 1
    return count
