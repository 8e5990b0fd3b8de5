"""Summaries in each benchmark's own aggregation, base vs MILR side by side with the delta.

- GenEval / ShapesEval: accuracy (fraction of images whose verdict passes) per tag; overall is
  the mean over tags, as in GenEval.
- WISE: mean evaluation score (the WiScore when the evaluation critic is a WISE judge) per
  category; overall is the weighted sum with WISE's official category weights
  (`milr.bench.suites.WISE_WEIGHTS`), renormalised over the categories present.
- T2I-CompBench: mean evaluation score per category. The benchmark defines no overall number;
  the unweighted mean over categories is shown and labelled as such.

Images whose evaluation failed, and prompts whose generation failed, are left out of the
means and counted apart: ``errors`` / ``eval_errors`` (an image was made but its evaluation
failed) and ``generation_errors`` / ``failed_records`` (the solver failed: no image).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

from milr.bench import protocol as run_protocol
from milr.bench.record import SIDES, BenchRecord, as_records
from milr.bench.records import atomic_write_text, load_all_records, read_run, write_results
from milr.bench.suites import GENEVAL_TAGS, T2I_CATEGORIES, WISE_WEIGHTS


def benchmark_metric(benchmark: str) -> str:
    """The per-group number a benchmark reports: ``accuracy`` or ``score``."""
    return "accuracy" if benchmark in ("geneval", "shapes") else "score"


def _group_order(benchmark: str, groups: list[str]) -> list[str]:
    canon: tuple[str, ...] = ()
    if benchmark in ("geneval", "shapes"):
        canon = GENEVAL_TAGS
    elif benchmark == "wise":
        canon = tuple(WISE_WEIGHTS)
    elif benchmark == "t2i-compbench":
        canon = T2I_CATEGORIES
    known = [g for g in canon if g in groups]
    return known + sorted(g for g in groups if g not in canon)


def _side_stats(recs: list[BenchRecord], side: str) -> dict[str, Any]:
    scores: list[float] = []
    verdicts: list[bool] = []
    errors = generation_errors = 0
    for r in recs:
        s = r.side(side)
        if r.error or s is None:  # the solver failed: no image to evaluate
            generation_errors += 1
            continue
        if not r.side_usable(side):
            errors += 1
            continue
        scores.append(float(s.score))  # type: ignore[arg-type]  # side_usable: not None
        if s.passed is not None:
            verdicts.append(bool(s.passed))
    return {
        "n": len(recs),
        "scored": len(scores),
        "errors": errors,
        "generation_errors": generation_errors,
        "passed": sum(verdicts),
        "with_verdict": len(verdicts),
        "accuracy": (sum(verdicts) / len(verdicts)) if verdicts else None,
        "score": mean(scores) if scores else None,
    }


def _overall(
    benchmark: str,
    per_group: dict[str, dict[str, Any]],
    side: str,
    metric: str,
    wise_weights: dict[str, float] | None = None,
) -> tuple[float | None, str]:
    values = {g: v[side][metric] for g, v in per_group.items() if v[side][metric] is not None}
    if not values:
        return None, "none"
    if benchmark == "wise":
        table = wise_weights or WISE_WEIGHTS
        weights = {g: table.get(g, 0.0) for g in values}
        total = sum(weights.values())
        if total <= 0:
            return mean(values.values()), "mean over categories (no WISE category present)"
        how = "WISE-weighted sum over categories"
        if set(values) != set(table):
            how += " (renormalised: categories missing)"
        return sum(weights[g] * values[g] for g in values) / total, how
    if benchmark == "t2i-compbench":
        return mean(
            values.values()
        ), "unweighted mean over categories (T2I-CompBench defines no overall)"
    return mean(values.values()), "mean over tags"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def summarize(
    records: Iterable[BenchRecord | dict[str, Any]],
    benchmark: str,
    wise_weights: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Aggregate merged records into the benchmark's table; deterministic given the records.

    `wise_weights`: WISE's category weights for the overall (default the legacy ones; a
    WISE_Verified run passes its own, `milr.bench.official`)."""
    records = as_records(records)
    metric = benchmark_metric(benchmark)
    by_group: dict[str, list[BenchRecord]] = defaultdict(list)
    for r in records:
        by_group[r.group].append(r)
    groups: dict[str, dict[str, Any]] = {}
    for g in _group_order(benchmark, list(by_group)):
        recs = by_group[g]
        entry: dict[str, Any] = {side: _side_stats(recs, side) for side in SIDES}
        entry["delta"] = _delta(entry["base"][metric], entry["milr"][metric])
        groups[g] = entry
    overall: dict[str, Any] = {}
    for side in SIDES:
        overall[side], how = _overall(benchmark, groups, side, metric, wise_weights)
    overall["delta"] = _delta(overall["base"], overall["milr"])
    overall["aggregation"] = how
    everything = {side: _side_stats(records, side) for side in SIDES}

    improved = regressed = 0
    steps: list[int] = []
    calls: list[int] = []
    stops: Counter[str] = Counter()
    for r in records:
        b, m = r.verdict("base"), r.verdict("milr")
        if b is False and m is True:
            improved += 1
        if b is True and m is False:
            regressed += 1
        traj = r.traj
        if traj.get("steps") is not None:
            steps.append(int(traj["steps"]))
        if traj.get("critic_calls") is not None:
            calls.append(int(traj["critic_calls"]))
        if traj.get("stop_reason"):
            stops[str(traj["stop_reason"])] += 1
    return {
        "benchmark": benchmark,
        "metric": metric,
        "records": len(records),
        "prompts": len({r.prompt_id for r in records}),
        "failed_records": sum(1 for r in records if r.error),
        "eval_errors": {side: everything[side]["errors"] for side in SIDES},
        "groups": groups,
        "overall": overall,
        "all_images": everything,
        "flips": {"improved": improved, "regressed": regressed},
        "optimizer": {
            "mean_steps": mean(steps) if steps else None,
            "total_critic_calls": sum(calls),
            "stop_reasons": dict(sorted(stops.items())),
        },
    }


def timing_summary(records: Iterable[BenchRecord | dict[str, Any]]) -> dict[str, Any]:
    """Wall-time figures (vary between runs, so kept apart from the results)."""
    records = as_records(records)
    keys = ("optimizer_s", "eval_s", "harness_s", "total_s")
    sums = {k: 0.0 for k in keys}
    for r in records:
        for k in keys:
            sums[k] += float(r.timings.get(k) or 0.0)
    n = max(1, len(records))
    return {
        "sum": sums,
        "mean_per_record": {k: v / n for k, v in sums.items()},
        "harness_overhead": (sums["harness_s"] / (sums["optimizer_s"] + sums["eval_s"]))
        if sums["optimizer_s"] + sums["eval_s"] > 0
        else None,
    }


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.3f}" if pct else f"{v:.3f}"


def _stop_reasons(counts: dict[str, int]) -> str:
    """``threshold 5, max_steps 3``: each stop reason with its count, most frequent first."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{reason} {n}" for reason, n in ranked) or "–"


def to_markdown(summary: dict[str, Any], run: dict[str, Any] | None = None) -> str:
    """The summary as a Markdown report (also what the CLI prints)."""
    metric = summary["metric"]
    col = (
        "Group"
        if summary["benchmark"] == "t2i-compbench"
        else ("Category" if summary["benchmark"] == "wise" else "Tag")
    )
    title = {
        "geneval": "GenEval",
        "shapes": "ShapesEval",
        "wise": "WISE",
        "t2i-compbench": "T2I-CompBench",
    }
    lines = [f"# {title.get(summary['benchmark'], summary['benchmark'])} — base vs MILR", ""]
    if run:
        s = run.get("settings", {})
        lines += [
            f"model `{s.get('model')}`, reward `{' + '.join(s.get('critic', []))}`, "
            f"evaluation `{' + '.join(s.get('eval_critic', []))}`, mode `{s.get('mode')}`, "
            f"steps {s.get('steps')}, seeds {s.get('seeds')} (run seed {s.get('seed')}); "
            f"fingerprint `{run.get('fingerprint')}`",
            "",
        ]
    protocol = run_protocol.protocol_line(run, summary.get("prompts"))
    if protocol:
        lines += [protocol, ""]
    lines += [
        f"Metric: **{metric}** per {col.lower()}; overall = {summary['overall']['aggregation']}.",
        "",
        f"| {col} | images | base | MILR | Δ | generation errors | eval errors (base/MILR) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g, e in summary["groups"].items():
        lines.append(
            f"| {g} | {e['base']['n']} | {_fmt(e['base'][metric])} | {_fmt(e['milr'][metric])} | "
            f"{_fmt(e['delta'], True)} | {e['milr'].get('generation_errors', 0)} | "
            f"{e['base']['errors']}/{e['milr']['errors']} |"
        )
    o = summary["overall"]
    lines.append(
        f"| **overall** | {summary['records']} | **{_fmt(o['base'])}** | **{_fmt(o['milr'])}** | "
        f"**{_fmt(o['delta'], True)}** | {summary['failed_records']} | "
        f"{summary['eval_errors']['base']}/{summary['eval_errors']['milr']} |"
    )
    opt = summary["optimizer"]
    lines += [
        "",
        f"- prompts: {summary['prompts']}, records (prompt × seed): {summary['records']}, "
        f"failed generations: {summary['failed_records']}",
        f"- verdict flips: {summary['flips']['improved']} fail→pass, "
        f"{summary['flips']['regressed']} pass→fail",
        f"- mean MILR steps: {_fmt(opt['mean_steps'])}, reward-critic calls: {opt['total_critic_calls']}, "
        f"stop reasons: {_stop_reasons(opt['stop_reasons'])}",
    ]
    lines += run_protocol.wise_lines(summary.get("wise"))
    timing = summary.get("timing")
    if timing:
        t = timing["sum"]
        oh = timing.get("harness_overhead")
        lines.append(
            f"- time: optimizer {t['optimizer_s']:.1f} s, evaluation {t['eval_s']:.1f} s, "
            f"harness {t['harness_s']:.1f} s"
            + (f" ({100 * oh:.1f}% of model+critic time)" if oh is not None else "")
        )
    if summary.get("statistics"):
        from milr.bench.stats import statistics_markdown

        lines += statistics_markdown(summary["statistics"], metric)
    return "\n".join(lines) + "\n"


def _statistics(
    records: list[BenchRecord], benchmark: str, run: dict[str, Any] | None
) -> dict[str, Any]:
    """Intervals, paired differences, McNemar, the oracle label (`milr.bench.stats`)."""
    from milr.bench.stats import run_statistics

    def weights(groups: list[str]) -> dict[str, float] | None:
        if benchmark == "wise" and any(WISE_WEIGHTS.get(g) for g in groups):
            return {g: WISE_WEIGHTS.get(g, 0.0) for g in groups}
        return None

    return run_statistics(
        records, benchmark_metric(benchmark), weights, (run or {}).get("settings")
    )


def run_benchmark(run: dict[str, Any] | None, records: list[BenchRecord]) -> str:
    """The benchmark of a run: from ``run.json``, else from its first record (GenEval)."""
    settings = (run or {}).get("settings") or {}
    return settings.get("benchmark") or (records[0].benchmark if records else None) or "geneval"


def write_summary(
    out: str | Path, records: Iterable[BenchRecord | dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Summarise a run directory: writes ``summary.json`` and ``summary.md``; returns the summary."""
    from milr.errors import MilrUserError

    out = Path(out)
    run = read_run(out)
    records = as_records(load_all_records(out) if records is None else records)
    if not records:
        raise MilrUserError(f"{out} holds no bench records (records/*.jsonl or results.jsonl)")
    benchmark = run_benchmark(run, records)
    weights = (((run or {}).get("official") or {}).get("protocol") or {}).get("weights")
    summary = summarize(records, benchmark, weights)
    if benchmark == "wise":
        summary["wise"] = run_protocol.wise_overall(run, records)
    summary["statistics"] = _statistics(records, benchmark, run)
    summary["timing"] = timing_summary(records)
    if run:
        summary["fingerprint"] = run.get("fingerprint")
        summary["settings"] = run.get("settings")
        summary["protocol"] = run_protocol.protocol_of(run, summary.get("prompts"))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=False) + "\n")
    atomic_write_text(out / "summary.md", to_markdown(summary, run))
    return summary


def finalize(out: str | Path, report: bool = True) -> dict[str, Any]:
    """Merge the shards into ``results.jsonl``, write the summary and (optionally) the report."""
    out = Path(out)
    raw = load_all_records(out)
    write_results(out, raw)
    records = as_records(raw)
    summary = write_summary(out, records)
    if report:
        try:
            from milr.bench.report import write_report

            write_report(out, records, summary)
        except Exception as exc:  # a broken plot must not lose a finished benchmark
            print(f"warning: report not written: {type(exc).__name__}: {exc}", file=sys.stderr)
            if os.environ.get("MILR_DEBUG"):
                traceback.print_exc()
    return summary
