"""ShapesEval: seeded GenEval-format prompt files for the shapes world (all six GenEval tags).

Each line is a GenEval metadata record, e.g.
``{"tag": "position", "include": [{"class": "triangle", "count": 1, "color": "yellow"},
{"class": "square", "count": 1, "color": "blue", "position": ["left of", 0]}],
"prompt": "a photo of a blue square left of a yellow triangle"}``.
Run ``python -m milr.shapes.evalset --out shapeseval.jsonl`` to write the default file, and
``python -m milr.shapes.evalset --suite knowledge --out knowledge.jsonl`` for the knowledge suite
(shapes named indirectly; see `milr.shapes.knowledge`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from milr.geneval_rules import TAGS
from milr.shapes.world import COLORS, NUMBERS, PLURALS, RELATIONS, SHAPES

#: Prompts per tag in the default ShapesEval file (6 × 64 = 384 prompts).
DEFAULT_PER_TAG = 64
DEFAULT_SEED = 0


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _single_object(rng: random.Random) -> dict[str, Any]:
    s = rng.choice(SHAPES)
    return {
        "tag": "single_object",
        "include": [{"class": s, "count": 1}],
        "prompt": f"a photo of {_article(s)} {s}",
    }


def _two_object(rng: random.Random) -> dict[str, Any]:
    a, b = rng.sample(SHAPES, 2)
    return {
        "tag": "two_object",
        "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
        "prompt": f"a photo of {_article(a)} {a} and {_article(b)} {b}",
    }


def _counting(rng: random.Random) -> dict[str, Any]:
    s, n = rng.choice(SHAPES), rng.choice([2, 3, 4])
    clause: dict[str, Any] = {"class": s, "count": n}
    words = f"{NUMBERS[n]} {PLURALS[s]}"
    if rng.random() < 0.5:  # half the counting prompts also bind a colour ("two red circles")
        c = rng.choice(list(COLORS))
        clause["color"] = c
        words = f"{NUMBERS[n]} {c} {PLURALS[s]}"
    return {
        "tag": "counting",
        "include": [clause],
        "exclude": [{"class": s, "count": n + 1}],
        "prompt": f"a photo of {words}",
    }


def _colors(rng: random.Random) -> dict[str, Any]:
    s, c = rng.choice(SHAPES), rng.choice(list(COLORS))
    return {
        "tag": "colors",
        "include": [{"class": s, "count": 1, "color": c}],
        "prompt": f"a photo of {_article(c)} {c} {s}",
    }


def _position(rng: random.Random) -> dict[str, Any]:
    a, b = rng.sample(SHAPES, 2)  # prompt: "a photo of a <a> <rel> a <b>"
    ca, cb = rng.sample(list(COLORS), 2)
    rel = rng.choice(RELATIONS)
    return {
        "tag": "position",
        "include": [
            {"class": b, "count": 1, "color": cb},
            {"class": a, "count": 1, "color": ca, "position": [rel, 0]},
        ],
        "prompt": f"a photo of {_article(ca)} {ca} {a} {rel} {_article(cb)} {cb} {b}",
    }


def _color_attr(rng: random.Random) -> dict[str, Any]:
    a, b = rng.sample(SHAPES, 2)
    ca, cb = rng.sample(list(COLORS), 2)
    return {
        "tag": "color_attr",
        "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
        "prompt": f"a photo of {_article(ca)} {ca} {a} and {_article(cb)} {cb} {b}",
    }


GENERATORS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "single_object": _single_object,
    "two_object": _two_object,
    "counting": _counting,
    "colors": _colors,
    "position": _position,
    "color_attr": _color_attr,
}


def random_metadata(rng: random.Random, tag: str | None = None) -> dict[str, Any]:
    """One random ShapesEval record (of `tag`, or of a uniformly drawn tag)."""
    return GENERATORS[tag or rng.choice(TAGS)](rng)


def make_shapeseval(
    per_tag: int = DEFAULT_PER_TAG, seed: int = DEFAULT_SEED
) -> list[dict[str, Any]]:
    """The ShapesEval records: `per_tag` per tag, distinct prompts first, then repeats; seeded."""
    rng = random.Random(f"shapeseval-{seed}")
    records: list[dict[str, Any]] = []
    for tag in TAGS:
        seen: dict[str, dict[str, Any]] = {}
        tries = 0
        while len(seen) < per_tag and tries < 50 * per_tag:
            rec = GENERATORS[tag](rng)
            seen.setdefault(rec["prompt"], rec)
            tries += 1
        pool = list(seen.values())
        rng.shuffle(pool)
        # tags with fewer distinct prompts than `per_tag` (single_object has 4) cycle through them
        records.extend(pool[i % len(pool)] for i in range(per_tag))
    return records


def write_shapeseval(
    path: str | Path, per_tag: int = DEFAULT_PER_TAG, seed: int = DEFAULT_SEED
) -> Path:
    """Write a ShapesEval prompt file (GenEval metadata JSONL) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for rec in make_shapeseval(per_tag, seed):
            fh.write(json.dumps(rec) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m milr.shapes.evalset --out FILE [--suite shapeseval|knowledge] [--per-tag N]
    [--seed S]`` (for the knowledge suite `--per-tag` counts records per fact, default 4)."""
    import argparse

    from milr.shapes import knowledge

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--suite",
        choices=("shapeseval", "knowledge"),
        default="shapeseval",
        help="ShapesEval (literal prompts, six GenEval tags) or the knowledge suite",
    )
    parser.add_argument(
        "--per-tag",
        type=int,
        default=None,
        help=f"records per tag (ShapesEval, default {DEFAULT_PER_TAG}) or per fact "
        f"(knowledge, default {knowledge.DEFAULT_PER_FACT})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.per_tag is not None and args.per_tag < 1:
        parser.error(f"--per-tag {args.per_tag}: use a count of at least 1")
    if args.suite == "knowledge":
        n = knowledge.DEFAULT_PER_FACT if args.per_tag is None else args.per_tag
        path = knowledge.write_knowledge(args.out, n, args.seed)
        print(f"wrote {n * len(knowledge.FACTS)} knowledge prompts to {path}")
        return
    n = DEFAULT_PER_TAG if args.per_tag is None else args.per_tag
    path = write_shapeseval(args.out, n, args.seed)
    print(f"wrote {n * len(TAGS)} prompts to {path}")


if __name__ == "__main__":
    main()
