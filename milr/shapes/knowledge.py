"""World knowledge of the shapes world, and the knowledge suite built on it.

ShapesEval states every attribute literally ("a photo of a circle"), so the `shapes` model's plan
is almost always right and only resampling the image can help. The knowledge suite names the
shape **indirectly** ("a photo of a shape like a wheel", "a picture of a shape with a flat
top"): the plan needs a fact of the toy world to be right, as WISE prompts need world knowledge.

`FACTS` is that world's whole knowledge table: 16 facts, four per shape (two in each
category), each with the shape it names, a one-line explanation, and how well the shipped model was taught it (`taught`: the share
of its training plans that use the right shape; the rest use the fact's `confusion`). The model
is taught half of the facts only **partly** (`taught` 0.3), so that its greedy plan names the
confusion while the right shape stays its second choice; the other facts are taught well
(`taught` 0.9). This is a testbed design, aimed at a regime where a wrong plan makes every
resample fail and only a changed plan can help; docs/shapes.md ("The knowledge suite") says
how far the shipped model gets there.

Each suite record is a GenEval metadata line the `shapes` critic judges (``tag``,
``include``, ``exclude``, ``prompt``: exactly one object, of the right shape) with WISE-style
fields beside it (``Prompt``, ``Explanation``, ``category``, ``cue``), e.g.::

    {"tag": "single_object", "include": [{"class": "circle", "count": 1}],
     "exclude": [{"class": "circle", "count": 2}, {"class": "square", "count": 1},
                 {"class": "triangle", "count": 1}, {"class": "diamond", "count": 1}],
     "prompt": "a photo of a shape like a wheel", "Prompt": "a photo of a shape like a wheel",
     "Explanation": "A wheel is round: the shape is a circle.", "category": "objects",
     "cue": "wheel", "suite": "shapes-knowledge", "id": "k012"}
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milr.shapes.world import SHAPES

#: The prompt frames: the cue's phrase follows "... of a shape".
TEMPLATES: tuple[str, ...] = (
    "a photo of a shape {phrase}",
    "a picture of a shape {phrase}",
    "an image of a shape {phrase}",
)

#: Share of training plans with the right shape for a fact taught well / partly.
TAUGHT_WELL = 0.9
TAUGHT_PARTLY = 0.3


@dataclass(frozen=True)
class Fact:
    """One piece of world knowledge: the `phrase` after "a shape" names `shape`.

    `category` is the suite's group (``objects``: things with that outline; ``geometry``: the
    outline described), `confusion` the shape the rest of its training plans use, `taught` the
    share of training plans that use `shape`.
    """

    cue: str
    phrase: str
    shape: str
    category: str
    explanation: str
    confusion: str
    taught: float


FACTS: tuple[Fact, ...] = (
    # objects with the shape's outline
    Fact("wheel", "like a wheel", "circle", "objects",
         "A wheel is round: the shape is a circle.", "diamond", TAUGHT_PARTLY),
    Fact("coin", "like a coin", "circle", "objects",
         "A coin is round: the shape is a circle.", "square", TAUGHT_WELL),
    Fact("pyramid", "like a pyramid", "triangle", "objects",
         "A pyramid seen from the side is a triangle.", "diamond", TAUGHT_WELL),
    Fact("sail", "like a sail", "triangle", "objects",
         "A sail is a triangle of cloth.", "square", TAUGHT_PARTLY),
    Fact("dice", "like a dice", "square", "objects",
         "Each face of a dice is a square.", "circle", TAUGHT_PARTLY),
    Fact("window", "like a window", "square", "objects",
         "A window pane of this world is a square.", "diamond", TAUGHT_WELL),
    Fact("kite", "like a kite", "diamond", "objects",
         "A kite is a diamond.", "triangle", TAUGHT_WELL),
    Fact("gem", "like a gem", "diamond", "objects",
         "A cut gem is drawn as a diamond.", "circle", TAUGHT_PARTLY),
    # the outline described: round, or flat or pointed at the top and the bottom
    Fact("no-corners", "with no corners", "circle", "geometry",
         "The only shape of this world without corners is the circle.", "square", TAUGHT_WELL),
    Fact("round", "that is round", "circle", "geometry",
         "The round shape is the circle.", "triangle", TAUGHT_PARTLY),
    Fact("point-flat", "with a point on top and a flat bottom", "triangle", "geometry",
         "A point on top and a flat bottom: the triangle.", "square", TAUGHT_WELL),
    Fact("flat-bottom-only", "with a flat bottom and no flat top", "triangle", "geometry",
         "Only the triangle and the square have a flat bottom, and the square's top is flat.",
         "circle", TAUGHT_PARTLY),
    Fact("flat-flat", "with a flat top and a flat bottom", "square", "geometry",
         "A flat top and a flat bottom: the square.", "diamond", TAUGHT_PARTLY),
    Fact("flat-top", "with a flat top", "square", "geometry",
         "The square is the only shape with a flat top.", "triangle", TAUGHT_WELL),
    Fact("point-point", "with a point on top and a point at the bottom", "diamond", "geometry",
         "A point on top and one at the bottom: the diamond, a square standing on a corner.",
         "square", TAUGHT_PARTLY),
    Fact("point-bottom", "with a point at the bottom", "diamond", "geometry",
         "The diamond is the only shape with a point at the bottom.", "circle", TAUGHT_WELL),
)  # fmt: skip

#: Words the knowledge prompts add to the shapes vocabulary (appended after the world's words,
#: so every ShapesEval token keeps its id).
KNOWLEDGE_WORDS: tuple[str, ...] = (
    "shape", "like", "wheel", "coin", "pyramid", "sail", "dice", "window", "kite", "gem",
    "no", "corners", "that", "round", "flat", "top", "bottom", "point",
)  # fmt: skip

#: Records per fact in the default suite file (16 facts × 4 = 64 records).
DEFAULT_PER_FACT = 4
DEFAULT_SEED = 0
SUITE_NAME = "shapes-knowledge"


def fact_prompt(fact: Fact, template: str = TEMPLATES[0]) -> str:
    """The prompt text of `fact` in one of the `TEMPLATES`."""
    return template.format(phrase=fact.phrase)


def record(fact: Fact, template: str, rid: str) -> dict[str, Any]:
    """The suite record of `fact` in `template`: GenEval metadata plus WISE-style fields."""
    prompt = fact_prompt(fact, template)
    return {
        "id": rid,
        "tag": "single_object",
        "include": [{"class": fact.shape, "count": 1}],
        # "a shape": exactly one object; a second one, of any shape, fails the prompt
        "exclude": [{"class": fact.shape, "count": 2}]
        + [{"class": s, "count": 1} for s in SHAPES if s != fact.shape],
        "prompt": prompt,
        "Prompt": prompt,
        "Explanation": fact.explanation,
        "category": fact.category,
        "cue": fact.cue,
        "suite": SUITE_NAME,
    }


def make_knowledge(
    per_fact: int = DEFAULT_PER_FACT, seed: int = DEFAULT_SEED
) -> list[dict[str, Any]]:
    """The knowledge suite: `per_fact` records per fact, seeded.

    Each fact's records cycle through the three `TEMPLATES` in a seeded order (so 3 or fewer
    per fact are distinct prompts); the seed also shuffles the records. Ids are ``k000``,
    ``k001``, ... in file order.
    """
    if per_fact < 1:
        raise ValueError(f"per_fact must be at least 1, got {per_fact}")
    rng = random.Random(f"shapes-knowledge-{seed}")
    pairs: list[tuple[Fact, str]] = []
    for fact in FACTS:
        order = list(TEMPLATES)
        rng.shuffle(order)
        pairs.extend((fact, order[i % len(order)]) for i in range(per_fact))
    rng.shuffle(pairs)
    return [record(f, t, f"k{i:03d}") for i, (f, t) in enumerate(pairs)]


def write_knowledge(
    path: str | Path, per_fact: int = DEFAULT_PER_FACT, seed: int = DEFAULT_SEED
) -> Path:
    """Write the knowledge suite (JSONL, one record per line) and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for rec in make_knowledge(per_fact, seed):
            fh.write(json.dumps(rec) + "\n")
    return out


def taught_plan_shape(fact: Fact, rng: random.Random) -> str:
    """The shape one training plan of `fact` uses: `shape` with probability `taught`, else
    `confusion` (how the shipped model is taught the fact only partly)."""
    return fact.shape if rng.random() < fact.taught else fact.confusion
