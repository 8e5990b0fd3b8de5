"""`milr bench export` (issue #11.E), the typed bench record, and surfaced batch failures (#10.4).

Runs here are real `run_bench` runs in-process, with a weight-free solver (flat colour images)
and the built-in `color` critic; the export is checked against the file names each official
evaluator reads (see `milr.bench.export`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from plugin_fixtures import allow, make_distribution
from test_bench_suites import WISE_ITEMS

import milr
from milr.bench.export import export_run
from milr.bench.record import BenchRecord, SideResult, load_records
from milr.bench.records import read_jsonl, shard_files
from milr.bench.runner import BenchOptions, Outcome, run_bench
from milr.bench.scoring import score_pair
from milr.bench.suites import BenchPrompt
from milr.errors import MilrUserError

RED, BLUE = (220, 30, 30), (30, 70, 220)


class FlatSolver:
    """Base image blue, MILR image red: deterministic and weight-free."""

    def __init__(self, opts, device):
        self.critic = milr.build_critic(list(opts.critic))

    def solve(self, prompt, seed):
        base, final = Image.new("RGB", (8, 8), BLUE), Image.new("RGB", (8, 8), RED)
        return Outcome(base, final, {"steps": 1, "scores": [0.0, 1.0]}, None)


def _run(tmp_path: Path, suite: Path, seeds: int = 1, critic: str = "color:target=red") -> Path:
    out = tmp_path / "run"
    opts = BenchOptions(
        suite=str(suite),
        critic=[critic],
        steps=1,
        seeds=seeds,
        out=str(out),
        progress=False,
        report=False,
    )
    run_bench(opts, solver_factory=FlatSolver)
    return out


#: GenEval lines whose ids are neither digits nor in sorted order.
GENEVAL_LINES = [
    {"id": "red-circle-a", "tag": "single_object", "include": [{"class": "dog", "count": 1}],
     "prompt": "a photo of a dog"},
    {"id": "b-two", "tag": "counting", "include": [{"class": "cat", "count": 2}],
     "prompt": "a photo of two cats"},
    {"id": "a-last", "tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}],
     "prompt": "a photo of a red car"},
]  # fmt: skip


@pytest.fixture
def geneval_suite(tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in GENEVAL_LINES))
    return path


def _official_geneval_reader(root: Path) -> list[tuple[str, dict, list[str]]]:
    """What GenEval's evaluate_images.py visits: digit folders, metadata.jsonl, samples/N.png."""
    seen = []
    for sub in sorted(p.name for p in root.iterdir()):
        folder = root / sub
        if not folder.is_dir() or not sub.isdigit():
            continue
        meta = json.loads((folder / "metadata.jsonl").read_text())
        names = sorted(
            n for n in (p.name for p in (folder / "samples").iterdir()) if re.match(r"\d+\.png", n)
        )
        seen.append((sub, meta, names))
    return seen


def test_geneval_export_numbers_folders_in_suite_order_whatever_the_ids(tmp_path, geneval_suite):
    out = _run(tmp_path, geneval_suite, seeds=2)
    dest = tmp_path / "geneval"
    assert export_run(out, dest) == 6
    seen = _official_geneval_reader(dest)
    assert [s[0] for s in seen] == ["00000", "00001", "00002"]
    for (_, meta, names), line in zip(seen, GENEVAL_LINES):
        assert meta == {k: v for k, v in line.items() if k != "id"}
        assert names == ["0000.png", "0001.png"]
    assert sorted(p.name for p in dest.iterdir()) == ["00000", "00001", "00002"]
    with Image.open(dest / "00001" / "samples" / "0000.png") as im:
        assert im.getpixel((0, 0)) == RED  # the MILR side by default
    base = tmp_path / "geneval-base"
    export_run(out, base, side="base")
    with Image.open(base / "00001" / "samples" / "0001.png") as im:
        assert im.getpixel((0, 0)) == BLUE


def test_geneval_export_of_records_without_suite_positions_uses_the_suite_file(
    tmp_path, geneval_suite
):
    out = _run(tmp_path, geneval_suite)
    for shard in shard_files(out):  # records as milr wrote them before suite_index existed
        recs = read_jsonl(shard)
        for rec in recs:
            del rec["suite_index"]
        shard.write_text("".join(json.dumps(r) + "\n" for r in recs))
    (out / "results.jsonl").unlink()
    assert all(r.suite_index is None for r in load_records(out))
    export_run(out, tmp_path / "g")
    seen = _official_geneval_reader(tmp_path / "g")
    assert [m["prompt"] for _, m, _ in seen] == [line["prompt"] for line in GENEVAL_LINES]


def test_export_refuses_a_non_empty_destination(tmp_path, geneval_suite):
    out = _run(tmp_path, geneval_suite)
    dest = tmp_path / "d"
    (dest / "00007" / "samples").mkdir(parents=True)
    with pytest.raises(MilrUserError, match="not an empty folder"):
        export_run(out, dest)


def test_wise_export_names_images_by_prompt_id(tmp_path):
    suite = tmp_path / "wise.json"
    suite.write_text(json.dumps(WISE_ITEMS))
    out = _run(tmp_path, suite, seeds=2)
    dest = tmp_path / "wise"
    assert export_run(out, dest) == len(WISE_ITEMS)  # gpt_eval.py grades seed 0 only
    # gpt_eval.py: os.path.join(image_dir, f"{prompt_id}.png") for each prompt of the JSON
    for item in WISE_ITEMS:
        assert (dest / f"{item['prompt_id']}.png").is_file()
    assert len(list(dest.iterdir())) == len(WISE_ITEMS)


def test_t2i_export_writes_category_samples_named_by_prompt_and_index(tmp_path):
    suite_dir = tmp_path / "t2i"
    suite_dir.mkdir()
    (suite_dir / "color_val.txt").write_text("a red book and a blue cup\na green bench\n")
    (suite_dir / "spatial_val.txt").write_text("a dog on the left of a cat\n")
    out = _run(tmp_path, suite_dir, seeds=2)
    dest = tmp_path / "t2i-out"
    assert export_run(out, dest) == 6
    assert sorted(p.name for p in dest.iterdir()) == ["color", "spatial"]
    names = sorted((dest / "color" / "samples").iterdir())
    # BLIP_vqa.py / CLIP_similarity.py: prompt = name.split("_")[0], order = int(last "_" part)
    parsed = sorted((int(p.name.split("_")[-1].split(".")[0]), p.name.split("_")[0]) for p in names)
    assert parsed == [
        (0, "a red book and a blue cup"),
        (1, "a red book and a blue cup"),
        (2, "a green bench"),
        (3, "a green bench"),
    ]
    assert [p.name for p in (dest / "spatial" / "samples").iterdir()] in (
        ["a dog on the left of a cat_000000.png", "a dog on the left of a cat_000001.png"],
        ["a dog on the left of a cat_000001.png", "a dog on the left of a cat_000000.png"],
    )


def test_t2i_export_refuses_a_prompt_the_evaluator_cannot_read_back(tmp_path):
    suite = tmp_path / "color_val.txt"
    suite.write_text("a red_ish apple\n")
    out = _run(tmp_path, suite)
    with pytest.raises(MilrUserError, match=r"prompt 'color_00000' .* contains '_'"):
        export_run(out, tmp_path / "x")


# --- the typed record ---------------------------------------------------------------------

OLD_RECORD = {  # a schema-1 record as written before BenchRecord, plus a field from the future
    "schema": 1,
    "prompt_id": "00003",
    "seed_index": 1,
    "seed": 123,
    "prompt": "a red car",
    "group": "colors",
    "benchmark": "geneval",
    "metadata": {"tag": "colors"},
    "base": {"image": "images/00003/1-base.png", "image_sha256": "ab", "score": 0.25,
             "passed": False, "details": {"fraction": 0.25}, "error": None},
    "milr": {"image": "images/00003/1-milr.png", "image_sha256": "cd", "score": None,
             "passed": None, "details": {}, "error": "RuntimeError: boom"},
    "trajectory": {"steps": 2},
    "error": None,
    "trajectory_file": "images/00003/1-trajectory.json",
    "timings": {"optimizer_s": 1.0, "write_s": 0.1},
    "rank": 0,
    "host": "h",
    "finished_at": "2026-11-30T10:00:00+00:00",
    "future_field": [1, 2],
}  # fmt: skip


def test_old_records_load_and_round_trip_unchanged():
    rec = BenchRecord.from_dict(OLD_RECORD)
    assert rec.key == ("00003", 1) and rec.suite_index is None
    assert rec.base is not None and rec.base.scored and rec.side_usable("base")
    assert not rec.side_usable("milr") and rec.any_error and rec.verdict("base") is False
    assert rec.extra == {"future_field": [1, 2]}
    again = rec.to_dict()
    assert again == OLD_RECORD and list(again) == list(OLD_RECORD)  # keys and their order


def test_failed_generation_record_round_trips():
    data = {**OLD_RECORD, "base": None, "milr": None, "trajectory": None,
            "error": "ValueError: x", "traceback": "Traceback ..."}  # fmt: skip
    del data["trajectory_file"]
    rec = BenchRecord.from_dict(data)
    assert rec.base is None and rec.traj == {} and not rec.side_usable("base")
    assert rec.to_dict() == data


# --- a batch failure is recorded, not swallowed -------------------------------------------


class BatchShy(milr.Critic):
    """Scores one image at a time; a batch of several raises."""

    name = "batch-shy"
    description = "fails on batches"

    def score_batch(self, images, prompts, metadata):
        if len(images) > 1:
            raise RuntimeError("batch of 2 exceeds GPU memory")
        return [milr.CriticResult(0.75, True, {}) for _ in images]


def test_score_pair_records_the_batch_error_and_scores_each_image_alone():
    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), RED)]
    scored, batch_error = score_pair(
        BatchShy(), images, BenchPrompt("p", "x", "g"), None, ["h1", "h2"]
    )
    assert batch_error == "RuntimeError: batch of 2 exceeds GPU memory"
    assert [s.score for s in scored] == [0.75, 0.75] and all(s.error is None for s in scored)


BATCH_SHY_PLUGIN = """
    import milr

    class BatchShy(milr.Critic):
        name = "batch-shy"
        description = "fails on batches"

        def score_batch(self, images, prompts, metadata):
            if len(images) > 1:
                raise RuntimeError("batch of 2 exceeds GPU memory")
            return [milr.CriticResult(0.75, True, {}) for _ in images]

    @milr.hookimpl
    def register_critics(register):
        register(BatchShy)
"""


def test_bench_record_carries_the_batch_error(tmp_path, geneval_suite, fresh_plugins):
    site = tmp_path / "site"
    make_distribution(site, "milr-batch-shy", "0.1", {"shy": BATCH_SHY_PLUGIN}, {"shy": "shy"})
    fresh_plugins.syspath_prepend(str(site))
    allow(fresh_plugins, "milr-batch-shy")
    out = _run(tmp_path, geneval_suite, critic="batch-shy")
    recs = load_records(out)
    assert len(recs) == 3 and all(
        r.eval_batch_error == "RuntimeError: batch of 2 exceeds GPU memory" for r in recs
    )
    assert all(r.milr is not None and r.milr.score == 0.75 and not r.any_error for r in recs)
    raw = read_jsonl(out / "results.jsonl")
    assert all(r["eval_batch_error"].startswith("RuntimeError") for r in raw)


def test_side_result_rejects_unknown_side_names():
    rec = BenchRecord(prompt_id="x", base=SideResult(score=1.0))
    with pytest.raises(ValueError, match="side 'final'"):
        rec.side("final")
