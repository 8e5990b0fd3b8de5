"""Record shards (atomic fsynced appends, torn tails), seeds, fingerprints, score cache, summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import milr
from milr.bench.cache import ScoreCache, cached_evaluate, image_sha256
from milr.bench.records import (
    RecordShard,
    check_or_write_run,
    derive_seed,
    fingerprint,
    load_all_records,
    merge_records,
    read_jsonl,
    shard_path,
)
from milr.bench.summary import summarize, to_markdown
from milr.errors import MilrUserError


def test_derived_seeds_are_stable_across_processes_and_hash_salt():
    here = [derive_seed(42, "00017", 0), derive_seed(42, "00017", 1), derive_seed(7, "00017", 0)]
    assert len(set(here)) == 3 and all(0 <= s < 2**31 for s in here)
    code = "from milr.bench.records import derive_seed; print(derive_seed(42, '00017', 0))"
    for salt in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert int(out) == here[0]
    assert derive_seed(42, "00017", 0) == 19039747  # pinned: changing it breaks resumed runs


def test_append_is_fsynced_whole_lines_and_torn_tail_is_cut(tmp_path):
    path = shard_path(tmp_path, 0)
    with RecordShard(path) as shard:
        for i in range(3):
            shard.append({"prompt_id": str(i), "seed_index": 0, "x": "é" * i})
    data = path.read_bytes()
    assert data.count(b"\n") == 3 and data.endswith(b"\n")
    path.write_bytes(data + b'{"prompt_id": "3", "seed_in')  # crash mid-write
    assert [r["prompt_id"] for r in read_jsonl(path)] == ["0", "1", "2"]
    with RecordShard(path) as shard:  # reopening cuts the torn line before appending
        shard.append({"prompt_id": "3", "seed_index": 0})
    assert [json.loads(x)["prompt_id"] for x in path.read_bytes().splitlines()] == [
        "0",
        "1",
        "2",
        "3",
    ]
    # a complete record that only lost its newline is kept
    path.write_bytes(path.read_bytes() + b'{"prompt_id": "4", "seed_index": 0}')
    with RecordShard(path) as shard:
        shard.append({"prompt_id": "5", "seed_index": 0})
    assert [r["prompt_id"] for r in read_jsonl(path)] == ["0", "1", "2", "3", "4", "5"]


def test_corruption_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "records" / "rank-00000.jsonl"
    path.parent.mkdir()
    path.write_text('{"prompt_id": "0"}\nnot json\n{"prompt_id": "2"}\n')
    with pytest.raises(MilrUserError, match=r"rank-00000.jsonl:2: corrupt record"):
        load_all_records(tmp_path)


def test_merge_prefers_success_and_sorts_naturally():
    recs = [
        {"prompt_id": "10", "seed_index": 0, "error": None, "v": 1},
        {"prompt_id": "2", "seed_index": 0, "error": None, "v": 1},
        {"prompt_id": "2", "seed_index": 0, "error": "boom", "v": 2},
        {"prompt_id": "10", "seed_index": 0, "error": None, "v": 3},
    ]
    merged = merge_records(recs)
    assert [(r["prompt_id"], r["v"]) for r in merged] == [("2", 1), ("10", 3)]


def test_run_fingerprint_refuses_to_mix_and_names_the_settings(tmp_path):
    a = {"model": "shapes", "steps": 20, "critic": ["shapes"]}
    run = {"fingerprint": fingerprint(a), "settings": a, "created": "t0"}
    assert check_or_write_run(tmp_path, run, force=False)["fingerprint"] == run["fingerprint"]
    assert check_or_write_run(tmp_path, dict(run), force=False)["fingerprint"] == run["fingerprint"]
    b = {"model": "shapes", "steps": 30, "critic": ["geneval"]}
    run_b = {"fingerprint": fingerprint(b), "settings": b, "created": "t1"}
    # no records yet: nothing to mix, the new settings simply replace the old
    assert check_or_write_run(tmp_path, run_b, force=False)["settings"] == b
    check_or_write_run(tmp_path, run, force=True)
    with RecordShard(shard_path(tmp_path, 0)) as shard:
        shard.append({"prompt_id": "0", "seed_index": 0})
    with pytest.raises(MilrUserError) as info:
        check_or_write_run(tmp_path, run_b, force=False)
    msg = str(info.value)
    assert (
        "steps: 20 -> 30" in msg and 'critic: ["shapes"] -> ["geneval"]' in msg and "--force" in msg
    )
    assert "model" not in msg
    forced = check_or_write_run(tmp_path, run_b, force=True)
    assert forced["history"][0]["settings"] == a and len(forced["forced_changes"]) == 2
    assert json.loads((tmp_path / "run.json").read_text())["settings"] == b


def test_records_without_run_json_are_not_adopted_silently(tmp_path):
    with RecordShard(shard_path(tmp_path, 0)) as shard:
        shard.append({"prompt_id": "0", "seed_index": 0})
    run = {"fingerprint": "x", "settings": {}}
    with pytest.raises(MilrUserError, match="no run.json"):
        check_or_write_run(tmp_path, run, force=False)


def test_score_cache_keys_on_content_prompt_metadata_and_critic_config(tmp_path):
    cache = ScoreCache(tmp_path / "c.sqlite")
    red = milr.build_critic(["color:target=red,min_fraction=0.5"])
    blue = milr.build_critic(["color:target=blue,min_fraction=0.5"])
    im = Image.new("RGB", (8, 8), (220, 30, 30))
    same_pixels = Image.new("RGB", (8, 8), (220, 30, 30))
    (r1,) = cached_evaluate(red, [im], ["a red square"], [{}], cache)
    assert (cache.hits, cache.misses) == (0, 1) and r1.passed is True
    (r2,) = cached_evaluate(red, [same_pixels], ["a red square"], [{}], cache)
    assert (
        (cache.hits, cache.misses) == (1, 1) and r2.score == r1.score and r2.details == r1.details
    )
    cached_evaluate(red, [im], ["another prompt"], [{}], cache)
    cached_evaluate(red, [im], ["a red square"], [{"tag": "colors"}], cache)
    (r3,) = cached_evaluate(blue, [im], ["a red square"], [{}], cache)
    assert cache.misses == 4 and r3.passed is False and len(cache) == 4
    assert image_sha256(im) != image_sha256(Image.new("RGB", (8, 8), (220, 30, 31)))
    cache.close()
    reopened = ScoreCache(tmp_path / "c.sqlite")  # persistent
    cached_evaluate(red, [im], ["a red square"], [{}], reopened)
    assert (reopened.hits, reopened.misses) == (1, 0)


def _rec(pid, group, base, milr_, err=None, eval_err=False):
    def side(p):
        if err:
            return None
        if eval_err:
            return {"score": None, "passed": None, "error": "x"}
        return {"score": float(p), "passed": bool(p), "error": None}

    return {
        "prompt_id": pid,
        "seed_index": 0,
        "group": group,
        "error": err,
        "base": side(base),
        "milr": side(milr_),
        "trajectory": {"steps": 3, "stop_reason": "max_steps", "critic_calls": 4},
    }


def test_geneval_summary_is_mean_over_tags_with_errors_counted():
    recs = [
        _rec("0", "single_object", 1, 1),
        _rec("1", "single_object", 0, 1),
        _rec("2", "counting", 0, 0),
        _rec("3", "counting", 0, 1),
        _rec("4", "counting", 0, 0),
        _rec("5", "counting", 0, 0, err="RuntimeError: boom"),
        _rec("6", "position", 1, 0, eval_err=False),
        _rec("7", "position", 0, 0, eval_err=True),
    ]
    s = summarize(recs, "geneval")
    assert list(s["groups"]) == ["single_object", "counting", "position"]
    assert s["groups"]["single_object"]["base"]["accuracy"] == 0.5
    assert s["groups"]["counting"]["milr"]["accuracy"] == pytest.approx(1 / 3)
    # the failed generation is not an evaluation error (main counted it as both)
    assert s["groups"]["counting"]["milr"]["errors"] == 0
    assert s["groups"]["counting"]["milr"]["generation_errors"] == 1
    assert s["groups"]["position"]["milr"]["errors"] == 1
    assert s["overall"]["base"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["overall"]["milr"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert s["overall"]["delta"] == pytest.approx(s["overall"]["milr"] - s["overall"]["base"])
    assert s["failed_records"] == 1 and s["eval_errors"] == {"base": 1, "milr": 1}
    assert s["flips"] == {"improved": 2, "regressed": 1}
    assert s["overall"]["aggregation"] == "mean over tags"
    md = to_markdown(s)
    assert "| Tag | images | base | MILR | Δ | generation errors | eval errors (base/MILR) |" in md
    assert "| counting | 4 | 0.000 | 0.333 | +0.333 | 1 | 0/0 |" in md
    assert "| position | 2 | 1.000 | 0.000 | -1.000 | 0 | 1/1 |" in md
    assert "| **overall** | 8 |" in md and md.count(" | 1 | 1/1 |") == 1
    assert "stop reasons: max_steps 8\n" in md and "{" not in md


def test_stop_reasons_print_readably_most_frequent_first():
    recs = [_rec(str(i), "counting", 0, 1) for i in range(5)]
    for r, reason in zip(recs, ["threshold", "max_steps", "threshold", "interrupted", "threshold"]):
        r["trajectory"]["stop_reason"] = reason
    md = to_markdown(summarize(recs, "geneval"))
    assert "stop reasons: threshold 3, interrupted 1, max_steps 1\n" in md


def test_wise_summary_uses_official_category_weights():
    scores = {
        "Cultural": 0.2,
        "Time": 0.4,
        "Space": 0.6,
        "Biology": 0.1,
        "Physics": 0.3,
        "Chemistry": 0.5,
    }
    recs = []
    for i, (cat, sc) in enumerate(scores.items()):
        recs.append(
            {
                "prompt_id": str(i),
                "seed_index": 0,
                "group": cat,
                "error": None,
                "base": {"score": sc, "passed": None},
                "milr": {"score": sc + 0.1, "passed": None},
            }
        )
    s = summarize(recs, "wise")
    expect = 0.4 * 0.2 + 0.167 * 0.4 + 0.133 * 0.6 + 0.1 * 0.1 + 0.1 * 0.3 + 0.1 * 0.5
    assert s["metric"] == "score"
    assert s["overall"]["base"] == pytest.approx(expect)
    assert s["overall"]["milr"] == pytest.approx(expect + 0.1)
    assert list(s["groups"]) == list(scores)
    partial = summarize(recs[:2], "wise")
    assert partial["overall"]["base"] == pytest.approx((0.4 * 0.2 + 0.167 * 0.4) / 0.567)
    assert "renormalised" in partial["overall"]["aggregation"]


def test_t2i_summary_is_per_category_mean_score():
    recs = [
        {
            "prompt_id": "color_0",
            "seed_index": 0,
            "group": "color",
            "base": {"score": 0.2},
            "milr": {"score": 0.6},
        },
        {
            "prompt_id": "color_1",
            "seed_index": 0,
            "group": "color",
            "base": {"score": 0.4},
            "milr": {"score": 0.8},
        },
        {
            "prompt_id": "shape_0",
            "seed_index": 0,
            "group": "shape",
            "base": {"score": 0.5},
            "milr": {"score": 0.5},
        },
    ]
    s = summarize(recs, "t2i-compbench")
    assert s["groups"]["color"]["base"]["score"] == pytest.approx(0.3)
    assert s["groups"]["color"]["delta"] == pytest.approx(0.4)
    assert s["overall"]["milr"] == pytest.approx((0.7 + 0.5) / 2)
    assert "unweighted" in s["overall"]["aggregation"]


def test_record_writer_writes_files_before_records_in_order_and_surfaces_errors(tmp_path):
    from milr.bench.record import BenchRecord
    from milr.bench.writer import RecordWriter

    seen = []
    with RecordShard(shard_path(tmp_path, 0)) as store:
        writer = RecordWriter(store, seen.append, depth=2)
        for i in range(6):
            rec = BenchRecord(prompt_id=str(i))
            writer.submit(rec, [(tmp_path / "images" / f"{i}.bin", lambda i=i: bytes([i]) * 10)])
        writer.close()
    recs = read_jsonl(shard_path(tmp_path, 0))
    assert (
        [r["prompt_id"] for r in recs] == [str(i) for i in range(6)] == [r.prompt_id for r in seen]
    )
    assert all((tmp_path / "images" / f"{i}.bin").read_bytes() == bytes([i]) * 10 for i in range(6))
    assert all(r["timings"]["write_s"] >= 0 for r in recs)

    def boom():
        raise OSError("disk full")

    with RecordShard(shard_path(tmp_path, 1)) as store:
        writer = RecordWriter(store, lambda r: None)
        writer.submit(BenchRecord(prompt_id="a"), [(tmp_path / "x.bin", boom)])
        with pytest.raises(OSError, match="disk full"):
            writer.close()
    assert read_jsonl(shard_path(tmp_path, 1)) == []  # no record without its file
