"""The visual report: contact sheets per group and plots, written next to the summary.

- ``contact/GROUP.png``: one row per record (prompt; the reward critic's first and last score
  and the steps taken; the reasoning text before and after MILR; the base and the MILR image,
  each with its evaluation verdict and score), at most `max_rows` rows per group.
- ``reward_vs_step.png``: mean reward-critic score at each step over all records (a record that
  stopped early keeps its last score), with the base and MILR evaluation scores for reference.
- ``accuracy_vs_budget.png``: fraction of images passing if MILR were stopped after at most
  b steps. Step 0 uses the evaluation verdict of the base image, the last step that of the
  MILR image, and steps in between the reward critic's verdict (exact when the reward critic
  is the evaluation critic, an estimate otherwise; stated on the plot). In a run with
  ``--control`` the control's curve is drawn on the same axes (dashed), from its own
  trajectory the same way.

Contact sheets open with the run's title line (reward critic, mode, seed, oracle or not), a key
to the shapes grid codes when the reasoning uses them, show the control's image in a third
column, and mark MILR fixes whose passing image carries no optimised change (resample fixes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.bench.record import BenchRecord, SideResult, as_records

if TYPE_CHECKING:
    from PIL.Image import Image

THUMB = 160


def _caption(name: str, side: SideResult | None) -> tuple[str, tuple[int, int, int]]:
    """``base: PASS 0.80`` in the verdict's colour, or ``base: error``."""
    from milr.sheet import NEUTRAL, fmt_score, verdict_colour

    if side is None or side.error:
        return f"{name}: error", (150, 80, 0)
    word = {True: "PASS", False: "FAIL", None: "score"}[side.passed]
    return f"{name}: {word} {fmt_score(side.score)}", (
        verdict_colour(side.passed) if side.passed is not None else NEUTRAL
    )


def _image(out: Path, side: SideResult | None) -> Image | None:
    from milr.images import open_rgb

    if side is not None and side.image and (out / side.image).exists():
        return open_rgb(out / side.image, "milr bench report")
    return None


def contact_sheet(
    out: Path, records: list[BenchRecord], title: str, notes: list[str] | None = None
) -> Image:
    """One image: a title and `notes` lines (the run's title line), then per record the
    prompt, the reward critic's scores and steps, the reasoning before and after MILR, and the
    base and MILR images (and the control's, in a run with ``--control``) with their
    evaluation verdicts and scores (drawn by `milr.sheet`, DejaVu Sans). A MILR fix whose
    passing image carries no optimised change is marked as a resample fix; a key to the
    shapes grid codes is added when the reasoning uses them."""
    from milr.sheet import (
        FAIL,
        RESAMPLE_FIX,
        Cell,
        Line,
        Row,
        fmt_score,
        grid_key,
        reasoning_lines,
        render,
    )

    rows = []
    texts: list[str | None] = []
    with_control = False
    for rec in records:
        traj = rec.traj
        lines: list[Line] = []
        if rec.error:
            lines.append(("summary", f"error: {rec.error}", FAIL))
        scores = [v for v in traj.get("scores") or [] if v is not None]
        if traj.get("steps") is not None:
            first = fmt_score(scores[0]) if scores else "-"
            last = fmt_score(scores[-1]) if scores else "-"
            n = traj["steps"]
            lines.append(
                (
                    "summary",
                    f"reward critic {first} → {last}, {n} step{'s' if n != 1 else ''} "
                    f"({traj.get('stop_reason')})",
                )
            )
        if (
            rec.verdict("base") is False
            and rec.verdict("milr") is True
            and traj.get("selected_optimised") is False
        ):
            lines.append(("summary", RESAMPLE_FIX, FAIL))
        reasoning = traj.get("reasoning") or {}
        texts += [reasoning.get("initial"), reasoning.get("final")]
        lines += reasoning_lines(
            reasoning.get("initial"), reasoning.get("final"), int(traj.get("steps") or 0)
        )
        cells = []
        for name, side in rec.sides():
            label = {"base": "base", "milr": "MILR"}.get(name, name)
            caption, colour = _caption(label, side)
            cells.append(Cell(_image(out, side), caption, colour))
        with_control = with_control or rec.control is not None
        rows.append(Row(f"[{rec.prompt_id}#{rec.seed_index}] {rec.prompt}", lines, cells))
    key = grid_key(texts)
    columns = ["prompt, reward scores, reasoning", "base (first sample)", "MILR"]
    return render(
        rows,
        columns + (["control"] if with_control else []),
        title=title,
        notes=list(notes or []) + ([key] if key else []),
        cell=THUMB,
        text_width=360,
    )


def _carry(values: list[Any], length: int) -> list[Any]:
    vals = list(values) or [None]
    return [vals[min(i, len(vals) - 1)] for i in range(length)]


def reward_curve(records: list[BenchRecord]) -> tuple[list[int], list[float]]:
    """Mean reward-critic score per step (records that stopped early carry their last score)."""
    series = [[s for s in r.traj.get("scores") or [] if s is not None] for r in records]
    series = [s for s in series if s]
    if not series:
        return [], []
    length = max(len(s) for s in series)
    means = []
    for i in range(length):
        col = [_carry(s, length)[i] for s in series]
        means.append(sum(col) / len(col))
    return list(range(length)), means


def accuracy_by_budget(
    records: list[BenchRecord], side: str = "milr"
) -> tuple[list[int], list[float]]:
    """Pass rate if MILR (or, ``side="control"``, the control) were stopped after at most b
    steps (see the module docstring). A control that returns its best image (``best-of-n``)
    counts at budget b the verdict of the best-scoring of its first b + 1 images."""
    rows = []
    for r in records:
        base, milr = r.verdict("base"), r.verdict(side)
        if r.error or base is None or milr is None:
            continue
        traj = r.traj if side == "milr" else r.control_traj
        steps = traj.get("steps")
        inner = list(traj.get("passed") or [])
        scores = list(traj.get("scores") or [])
        best = traj.get("selected") == "best" and len(scores) == len(inner)
        n = int(steps) if steps is not None else max(0, len(inner) - 1)
        verdicts = [bool(base)]
        for b in range(1, n):
            if best:
                pick = max(range(b + 1), key=lambda i: (scores[i] or 0.0, -i))
                v = inner[pick]
            else:
                v = inner[b] if b < len(inner) else None
            verdicts.append(bool(v) if v is not None else verdicts[-1])
        if n >= 1:
            verdicts.append(bool(milr))
        rows.append(verdicts)
    if not rows:
        return [], []
    length = max(len(v) for v in rows)
    budgets = list(range(length))
    acc = [sum(_carry(v, length)[b] for v in rows) / len(rows) for b in budgets]
    return budgets, acc


def _by_group(records: list[BenchRecord]) -> dict[str, list[BenchRecord]]:
    groups: dict[str, list[BenchRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    return groups


def _curve_plot(
    path: Path,
    records,
    curve,
    title: str,
    ylabel: str,
    ylim=None,
    step=False,
    control=None,
    control_name: str = "",
) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs, ys = curve(records)
    if not xs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    draw = ax.step if step else ax.plot
    kw: dict[str, Any] = {"where": "post"} if step else {}
    groups = _by_group(records)
    if 1 < len(groups) <= 10:
        for name, recs in groups.items():
            gx, gy = curve(recs)
            if gx:  # a group whose prompts all stopped early keeps its last value to the end
                gy = _carry(gy, len(xs))
                draw(xs, gy, lw=1, alpha=0.55, label=f"{name} ({len(recs)})", **kw)
    main = f"MILR, all ({len(records)})" if control else f"all ({len(records)})"
    draw(xs, ys, color="black", lw=2.2, marker="o", ms=3, label=main, **kw)
    if control:  # the control on the same axes, over the same records
        cx, cy = control(records)
        if cx:
            n = max(len(xs), len(cx))
            draw(
                list(range(n)), _carry(cy, n), color="tab:red", lw=2.2, ls="--", marker="s",
                ms=3, label=f"control: {control_name} ({len(records)})", **kw,
            )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("MILR step" if not step else "step budget")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plots(out: Path, records: list[BenchRecord], summary: dict[str, Any]) -> list[Path]:
    written = []
    settings = summary.get("settings") or {}
    if _curve_plot(
        out / "reward_vs_step.png",
        records,
        reward_curve,
        f"{summary['benchmark']}: reward-critic score vs step (early stops carry their last score)",
        "mean score (reward = score − 1)",
    ):
        written.append(out / "reward_vs_step.png")
    same = settings.get("critic") == settings.get("eval_critic")
    note = "" if same else "\n(steps between first and last: reward-critic verdicts)"
    has_control = any(r.control is not None for r in records)
    if _curve_plot(
        out / "accuracy_vs_budget.png",
        records,
        accuracy_by_budget,
        f"{summary['benchmark']}: accuracy vs step budget{note}",
        "accuracy",
        ylim=(0, 1.02),
        step=True,
        control=(lambda recs: accuracy_by_budget(recs, "control")) if has_control else None,
        control_name=str(settings.get("control") or "control"),
    ):
        written.append(out / "accuracy_vs_budget.png")
    return written


def write_report(
    out: str | Path,
    records: list[BenchRecord] | list[dict[str, Any]],
    summary: dict[str, Any],
    max_rows: int = 24,
) -> list[Path]:
    """Write contact sheets (one per group) and the plots; returns the files written."""
    out = Path(out)
    records = as_records(records)
    folder = out / "contact"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    from milr.sheet import run_title

    settings = summary.get("settings") or {}
    oracle = (summary.get("statistics") or {}).get("oracle")
    notes = [
        run_title(
            " + ".join(settings.get("critic") or ["?"]),
            str(settings.get("mode", "?")),
            settings.get("seed", "?"),
            oracle,
        )
    ]
    for group, recs in _by_group(records).items():
        e = summary["groups"].get(group)
        metric = summary["metric"]
        b = e["base"][metric] if e else None
        m = e["milr"][metric] if e else None
        title = f"{group}: {metric} base {b if b is None else f'{b:.2f}'} -> MILR {m if m is None else f'{m:.2f}'}"
        if any(r.control is not None for r in recs):
            st = ((summary.get("statistics") or {}).get("groups") or {}).get(group) or {}
            cv = (st.get("control") or {}).get("value")
            title += f" (control {'–' if cv is None else f'{cv:.2f}'})"
        sheet = contact_sheet(out, recs[:max_rows], title, notes)
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', group)}.png"
        sheet.save(path)
        written.append(path)
    written += _plots(out, records, summary)
    return written
