"""Export a run's images in the layout each benchmark's official evaluator reads.

Whatever the prompt ids of the suite, the names are the evaluators' own:

- GenEval / ShapesEval (``djghosh13/geneval``, ``evaluation/evaluate_images.py``): it visits
  only sub-folders whose names are all digits, reads ``metadata.jsonl`` there as one JSON
  object, and evaluates ``samples/NNNN.png``. milr writes ``DEST/00000/metadata.jsonl`` (the
  suite line, without milr's optional ``id`` key) and ``DEST/00000/samples/0000.png`` (one PNG
  per seed), folders numbered by the prompt's position in the suite file.
- WISE (``PKU-YuanGroup/WISE``, ``gpt_eval.py``): it looks for ``IMAGE_DIR/{prompt_id}.png``
  for each ``prompt_id`` of the prompt JSON; milr writes ``DEST/{prompt_id}.png`` for seed 0.
- T2I-CompBench (``Karine-Huang/T2I-CompBench``: ``BLIPvqa_eval/BLIP_vqa.py``,
  ``CLIPScore_eval/CLIP_similarity.py``, ...): each category is evaluated from
  ``OUT_DIR/samples/``; the prompt is read back from the file name (the text before the first
  ``_``) and files are ordered by the number after the last ``_``. milr writes
  ``DEST/{category}/samples/{prompt}_{n:06d}.png``, ``n`` counting the category's images in
  suite order; a prompt containing ``_`` or ``/`` cannot be named that way and is refused.

`DEST` must be empty or absent, so no image of an earlier export is evaluated by mistake.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from milr.bench.record import SIDES, BenchRecord, load_records
from milr.bench.records import read_run
from milr.bench.suites import load_suite
from milr.bench.summary import run_benchmark
from milr.errors import MilrUserError

FORMATS = ("geneval", "shapes", "wise", "t2i-compbench")


def export_run(run_dir: str | Path, dest: str | Path, side: str = "milr") -> int:
    """Copy `side`'s images of a run into the benchmark's official layout under `dest`.

    Returns the number of images written. Raises `MilrUserError` for an unknown side, a run
    without records, a benchmark with no known layout, a non-empty `dest`, or a T2I-CompBench
    prompt that cannot be a file name. Records whose solver or image failed are skipped (and
    counted on stderr).
    """
    if side not in SIDES:
        raise MilrUserError(f"--side {side!r}: use base or milr")
    run_dir, dest = Path(run_dir), Path(dest)
    records = load_records(run_dir)
    if not records:
        raise MilrUserError(f"{run_dir} holds no bench records")
    run = read_run(run_dir)
    benchmark = run_benchmark(run, records)
    if benchmark not in FORMATS:
        raise MilrUserError(
            f"no official layout known for benchmark {benchmark!r}; export supports "
            f"{', '.join(FORMATS)}"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise MilrUserError(
            f"export destination {str(dest)!r} is not an empty folder; the official evaluators "
            "read every image there, so pass a new or empty folder"
        )
    usable = [r for r in records if not r.error and (s := r.side(side)) is not None and s.image]
    skipped = len(records) - len(usable)
    order = _suite_order(run_dir, run, benchmark, records)
    usable.sort(key=lambda r: (order(r), r.seed_index))
    targets = {
        "wise": _wise_targets,
        "t2i-compbench": _t2i_targets,
    }.get(benchmark, _geneval_targets)(dest, usable, order)
    for rec, target in targets:
        image = rec.side(side)
        assert image is not None and image.image is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / image.image, target)
    if skipped:
        print(
            f"warning: {skipped} record(s) without a {side} image (failed) were not exported",
            file=sys.stderr,
        )
    return len(targets)


def _suite_order(
    run_dir: Path, run: dict | None, benchmark: str, records: list[BenchRecord]
) -> Callable[[BenchRecord], int]:
    """Each record's position in its suite: from the record, else from the (unchanged) suite file.

    Records written before ``suite_index`` existed fall back to the suite named in run.json when
    its content hash still matches, and otherwise to the order of the run's results (a warning
    says so; every exported folder still carries its own prompt's metadata).
    """
    if all(r.suite_index is not None for r in records):
        return lambda r: int(r.suite_index)  # type: ignore[arg-type]
    settings = (run or {}).get("settings") or {}
    path = (run or {}).get("suite_path")
    if path and Path(path).exists():
        try:
            suite = load_suite(path, benchmark)
        except MilrUserError:
            suite = None
        if suite is not None and suite.content_sha256 == settings.get("suite_sha256"):
            return lambda r: (
                r.suite_index if r.suite_index is not None else suite.index_of(r.prompt_id)
            )
    print(
        f"warning: {run_dir} records carry no suite positions and the suite file is gone or "
        "changed; numbering prompts in the order of results.jsonl",
        file=sys.stderr,
    )
    rank = {key: i for i, key in enumerate(dict.fromkeys(r.prompt_id for r in records))}
    return lambda r: rank[r.prompt_id]


def _geneval_targets(
    dest: Path, records: list[BenchRecord], order: Callable[[BenchRecord], int]
) -> list[tuple[BenchRecord, Path]]:
    out = []
    written: set[Path] = set()
    for rec in records:
        folder = dest / f"{order(rec):05d}"
        if folder not in written:
            folder.mkdir(parents=True, exist_ok=True)
            meta = {k: v for k, v in rec.metadata.items() if k != "id"}
            (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n", encoding="utf-8")
            written.add(folder)
        out.append((rec, folder / "samples" / f"{rec.seed_index:04d}.png"))
    return out


def _wise_targets(
    dest: Path, records: list[BenchRecord], order: Callable[[BenchRecord], int]
) -> list[tuple[BenchRecord, Path]]:
    dest.mkdir(parents=True, exist_ok=True)
    return [
        (rec, dest / f"{rec.metadata.get('prompt_id', rec.prompt_id)}.png")
        for rec in records
        if rec.seed_index == 0  # gpt_eval.py grades one image per prompt
    ]


def _t2i_targets(
    dest: Path, records: list[BenchRecord], order: Callable[[BenchRecord], int]
) -> list[tuple[BenchRecord, Path]]:
    out = []
    counters: dict[str, int] = {}
    for rec in records:
        prompt = rec.prompt.strip()
        bad = [c for c in ("_", "/", "\\", "\0") if c in prompt]
        if bad or len(prompt.encode("utf-8")) > 240:
            why = f"contains {bad[0]!r}" if bad else "is too long for a file name"
            raise MilrUserError(
                f"prompt {rec.prompt_id!r} ({prompt[:60]!r}) {why}; T2I-CompBench's evaluators "
                "read the prompt back from the file name {prompt}_{index}.png, so it cannot be "
                "exported in their layout"
            )
        n = counters.get(rec.group, 0)
        counters[rec.group] = n + 1
        out.append((rec, dest / rec.group / "samples" / f"{prompt}_{n:06d}.png"))
    return out
