"""Each benchmark's protocol at run time, and what a summary says about it.

- `default_seeds`: images per prompt when ``--seeds`` is not given (the named suite's protocol);
- `check_gradable`: categories the evaluation critic cannot grade, refused before generation;
- `protocol_of` / `protocol_line`: the summary header's protocol sentence ("non-standard
  protocol" when the run's count or prompts differ from the official ones);
- `wise_overall` / `wise_lines`: a WISE run's overall under the legacy and the Verified category
  weights, and whose wording each WISE judge used.

The protocols and pinned files themselves live in `milr.bench.official`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from milr.bench.official import (
    FORMAT_PROTOCOL,
    SUITES,
    WISE_LEGACY_WEIGHTS,
    WISE_VERIFIED_WEIGHTS,
)
from milr.errors import MilrUserError

# --- protocol at run time -----------------------------------------------------------------


def default_seeds(suite: Any) -> int:
    """Images per prompt when ``--seeds`` is not given: the named suite's protocol, else 1."""
    official = getattr(suite, "official", None)
    return int(official["protocol"]["seeds"]) if official else 1


def check_gradable(suite: Any, specs: list[str]) -> None:
    """Refuse, before anything is generated, prompts the evaluation critic cannot grade: a
    ``route`` critic (``preset:t2i-compbench``) with no member for a category and no default.

    One-line `MilrUserError` naming the category, its prompt count and the fix."""
    from milr.ensemble import metadata_tag
    from milr.specs import resolve_specs

    parsed, _ = resolve_specs(list(specs))
    for spec in parsed:
        if spec.name != "route" or spec.params.get("default") is not None:
            continue
        field = spec.params.get("field")
        routed: set[str] = set()
        for member in spec.params.get("member") or []:
            if isinstance(member, Mapping):
                routed.update(str(v) for v in member.get("when") or ())
        missing: Counter[str] = Counter()
        for p in suite.prompts:
            if field:
                value = p.metadata.get(field)
            else:
                found = metadata_tag(p.metadata)
                value = found[1] if found else None
            if isinstance(value, str) and value not in routed:
                missing[value] += 1
        if missing:
            what = ", ".join(f"{v!r} ({n} prompts)" for v, n in missing.items())
            label = spec.label or spec.name
            graded = [g for g in suite.groups if g in routed]
            pick = (
                f"pick graded categories (e.g. {suite.format}:{','.join(graded)})"
                if suite.format == "t2i-compbench" and graded
                else "leave those prompts out"
            )
            raise MilrUserError(
                f"{what} has no evaluator in the evaluation critic {label!r} (it grades "
                f"{', '.join(sorted(routed))}); {pick} or pass an --eval-critic that grades it"
            )


def protocol_of(run: Mapping[str, Any] | None, prompts: int | None = None) -> dict[str, Any] | None:
    """What the summary states about the protocol of a run (``run.json``), or None; `prompts`
    (the number of prompts with records) marks a run of fewer than the suite's prompts."""
    if not run:
        return None
    settings = run.get("settings") or {}
    official = run.get("official")
    seeds = settings.get("seeds")
    if official:
        proto = official["protocol"]
        total = official.get("prompts_total")
        subset = prompts is not None and total is not None and prompts < total
        standard = seeds == proto["seeds"] and not subset
        return {
            "subset": [prompts, total] if subset else None,
            "name": proto["name"],
            "official_data": True,
            "standard": standard,
            "seeds": seeds,
            "protocol_seeds": proto["seeds"],
            "prompts": proto["prompts"],
            "files": official.get("files") or [],
            "categories": official.get("categories") or [],
            "weights_source": proto.get("weights_source"),
        }
    p = FORMAT_PROTOCOL.get(settings.get("benchmark") or "")
    if p is None:
        return None
    return {
        "subset": None,
        "name": p.name,
        "official_data": False,
        "standard": False,
        "seeds": seeds,
        "protocol_seeds": p.seeds,
        "prompts": p.prompts,
        "files": [],
        "categories": [],
        "weights_source": p.weights_source or None,
    }


def protocol_line(run: Mapping[str, Any] | None, prompts: int | None = None) -> str | None:
    """The summary header's protocol sentence ("non-standard protocol" when it differs)."""
    info = protocol_of(run, prompts)
    if info is None:
        return None
    n, want = info["seeds"], info["protocol_seeds"]
    imgs = f"{n} image{'s' if n != 1 else ''} per prompt"
    if info["official_data"]:
        files = "; ".join(
            f"{f['repo']}@{f['commit'][:7]} {f['path']} (sha256 {f['sha256'][:12]})"
            for f in info["files"]
        )
        where = f"prompts: {files}"
        if info["standard"]:
            return f"Protocol: **{info['name']}** official — {imgs}, {info['prompts']}; {where}."
        if n != want:
            imgs += f" (the {info['name']} protocol is {want})"
        if info["subset"]:
            imgs += f", only {info['subset'][0]} of the {info['subset'][1]} prompts"
        return f"Protocol: **non-standard protocol** — {imgs}; {where}."
    return (
        f"Protocol: **non-standard protocol** — a suite file given by path, {imgs} (the "
        f"{info['name']} protocol: {want} per prompt on the pinned official prompts, "
        f"`milr bench {_name_for(run)}`)."
    )


def _name_for(run: Mapping[str, Any] | None) -> str:
    bench = ((run or {}).get("settings") or {}).get("benchmark") or ""
    return bench if bench in SUITES else "NAME"


# --- WISE judges --------------------------------------------------------------------------


def _walk(obj: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(obj, Mapping):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def wise_judges(run: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The WISE judges of a run's evaluation critic: ``{"label", "rubric", "wise_repo"}``."""
    settings = (run or {}).get("settings") or {}
    found = []
    for member in _walk(settings.get("eval_critic_config") or {}):
        config = member.get("config")
        if not isinstance(config, Mapping) or config.get("rubric") not in ("wise", "wise-verified"):
            continue
        found.append(
            {
                "label": member.get("label"),
                "rubric": config.get("rubric"),
                "wise_repo": config.get("wise_repo"),
                "instructions_sha256": config.get("template_sha256"),
            }
        )
    return found


def wise_overall(run: Mapping[str, Any] | None, records: Iterable[Any]) -> dict[str, Any]:
    """What a WISE summary adds: the judges (whose wording each used) and the overall WiScore
    under both the legacy and the Verified category weights, per side; per judge when the
    evaluation critic holds several WISE judges (e.g. ``preset:wise`` and
    ``preset:wise-verified`` together), from each judge's own scores."""
    from milr.bench.record import as_records

    judges = wise_judges(run)
    recs = as_records(records)
    labels: list[str | None] = [j["label"] for j in judges] if len(judges) > 1 else [None]
    overall = []
    for label in labels:
        for side in ("base", "milr"):
            per = _wise_category_means(recs, side, label)
            if per:
                overall.append(
                    {
                        "judge": label,
                        "side": side,
                        "legacy": weighted_overall(per, WISE_LEGACY_WEIGHTS),
                        "verified": weighted_overall(per, WISE_VERIFIED_WEIGHTS),
                    }
                )
    return {
        "judges": judges,
        "overall": overall,
        "weights": {"legacy": WISE_LEGACY_WEIGHTS, "verified": WISE_VERIFIED_WEIGHTS},
    }


def wise_lines(info: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines for `wise_overall`'s result."""
    if not info:
        return []
    lines = []
    for j in info.get("judges") or []:
        if j.get("wise_repo"):
            lines.append(
                f"- judge `{j['label']}`: WISE's own instructions, read from the clone "
                f"`{j['wise_repo']}` (instructions sha256 {str(j['instructions_sha256'])[:12]})"
            )
        else:
            lines.append(
                f"- judge `{j['label']}`: **milr's own wording**, not WISE's (pass "
                "wise_repo=PATH to the preset for WISE's instructions); not comparable with "
                "published WISE numbers"
            )
    for o in info.get("overall") or []:
        parts = [
            f"{title} {o[key]:.3f}"
            for title, key in (("legacy weights", "legacy"), ("Verified weights", "verified"))
            if o.get(key) is not None
        ]
        who = f" judge `{o['judge']}`" if o.get("judge") else ""
        lines.append(f"- overall{who} ({o['side']}): " + ", ".join(parts))
    if info.get("overall"):
        lines.append(
            "- weights: legacy "
            + SUITES["wise"].protocol.weights_source
            + "; Verified "
            + SUITES["wise-verified"].protocol.weights_source
        )
    return lines


def _wise_category_means(recs: list[Any], side: str, label: str | None) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for r in recs:
        s = r.side(side)
        if s is None or not r.side_usable(side):
            continue
        score = s.score
        if label is not None:
            member = ((s.details or {}).get("critics") or {}).get(label) or {}
            score = member.get("score")
        if score is None:
            continue
        values.setdefault(r.group, []).append(float(score))
    return {g: sum(v) / len(v) for g, v in values.items() if v}


def weighted_overall(
    per_category: Mapping[str, float], weights: Mapping[str, float]
) -> float | None:
    """Σ w·score over the categories present, renormalised; None when none is weighted."""
    total = sum(weights.get(g, 0.0) for g in per_category)
    if total <= 0:
        return None
    return sum(weights.get(g, 0.0) * v for g, v in per_category.items()) / total
