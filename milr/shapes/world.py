"""The shapes world: deterministic 64×64 scenes of flat coloured shapes on a 4×4 grid, with truth.

A scene is a list of `Obj` (shape, colour, grid cell). Each shape is drawn 12 px wide,
centred in its 16 px cell, on a white background, without anti-aliasing, so a scene's pixels
are a pure function of its objects. The ground truth of a scene is the list of its objects'
boxes in GenEval's detection form, so the same GenEval rules decide whether a prompt holds for
the truth and for what a detector sees in a generated image.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milr.colors import NAMED_COLORS

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID  # 16 px
SHAPE_SIZE = 12
MARGIN = (CELL - SHAPE_SIZE) // 2  # 2 px
BACKGROUND = (255, 255, 255)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
#: Flat fill colours (RGB), taken from the one named-colour table (`milr.colors`); the shapes
#: model was trained on these pixels, so their values are pinned by a test.
COLORS: dict[str, tuple[int, int, int]] = {
    name: NAMED_COLORS[name] for name in ("red", "orange", "yellow", "green", "blue", "purple")
}
NUMBERS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Obj:
    """One object of a scene: a shape of a colour in grid cell (row, col), both 0-based."""

    shape: str
    color: str
    row: int
    col: int

    @property
    def box(self) -> list[float]:
        """Pixel box ``[x0, y0, x1, y1]`` (x1, y1 exclusive), GenEval's xyxy convention."""
        x0 = self.col * CELL + MARGIN
        y0 = self.row * CELL + MARGIN
        return [float(x0), float(y0), float(x0 + SHAPE_SIZE), float(y0 + SHAPE_SIZE)]

    def to_detection(self) -> dict[str, Any]:
        """The object as a perfect detection (confidence 1)."""
        return {"class": self.shape, "box": self.box, "confidence": 1.0, "color": self.color}


def shape_mask(shape: str, width: int = SHAPE_SIZE, height: int = SHAPE_SIZE) -> np.ndarray:
    """Boolean mask of `shape` filling a ``height × width`` box (pixel-centre sampling)."""
    import numpy as np

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    ys = (np.arange(height) + 0.5) / height  # 0..1 downwards
    xs = (np.arange(width) + 0.5) / width
    y, x = np.meshgrid(ys, xs, indexing="ij")
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "circle":
        return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25
    if shape == "diamond":
        return np.abs(x - 0.5) + np.abs(y - 0.5) <= 0.5
    # triangle: apex at top centre, base along the bottom
    return np.abs(x - 0.5) <= 0.5 * y


def render(objects: list[Obj] | tuple[Obj, ...]) -> Image:
    """Draw a scene as a 64×64 RGB PIL image (deterministic)."""
    from PIL import Image as PILImage

    return PILImage.fromarray(render_array(objects))


def render_array(objects: list[Obj] | tuple[Obj, ...]) -> np.ndarray:
    """Draw a scene as a ``(64, 64, 3)`` uint8 array."""
    import numpy as np

    arr = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    arr[:] = BACKGROUND
    cells = set()
    for obj in objects:
        if (obj.row, obj.col) in cells:
            raise ValueError(f"two objects in cell ({obj.row}, {obj.col})")
        if not (0 <= obj.row < GRID and 0 <= obj.col < GRID):
            raise ValueError(f"cell ({obj.row}, {obj.col}) is outside the {GRID}x{GRID} grid")
        if obj.color not in COLORS:
            raise ValueError(f"unknown colour {obj.color!r}; expected one of {tuple(COLORS)}")
        cells.add((obj.row, obj.col))
        x0, y0, x1, y1 = (int(v) for v in obj.box)
        region = arr[y0:y1, x0:x1]
        region[shape_mask(obj.shape)] = COLORS[obj.color]
    return arr


def ground_truth(objects: list[Obj] | tuple[Obj, ...]) -> list[dict[str, Any]]:
    """The scene's objects as perfect detections (class, box, confidence 1, colour).

    Listed in reading order (row, then column): GenEval keeps the most confident detections
    first, and this is how ties between equally confident objects are broken everywhere.
    """
    return [obj.to_detection() for obj in sorted(objects, key=lambda o: (o.row, o.col))]


def cell_word(row: int, col: int) -> str:
    """The plan's word for a grid cell: ``r{row}c{col}``, 1-based (``r1c1`` is top left)."""
    return f"r{row + 1}c{col + 1}"


CELL_WORDS: tuple[str, ...] = tuple(cell_word(r, c) for r in range(GRID) for c in range(GRID))


def plan_text(objects: list[Obj] | tuple[Obj, ...]) -> str:
    """The reasoning text for a scene: each object with its colour and cell, in reading order.

    Example: ``"red circle at r1c3 . blue square at r3c2 ."`` (cell ``r{row}c{column}``,
    1-based). One word per cell keeps the plan easy to bind to image positions.
    """
    parts = []
    for obj in sorted(objects, key=lambda o: (o.row, o.col)):
        parts.append(f"{obj.color} {obj.shape} at {cell_word(obj.row, obj.col)} .")
    return " ".join(parts)


def parse_plan(text: str) -> list[Obj]:
    """Read objects back from a plan written by `plan_text` (lenient: skips malformed parts)."""
    words = text.replace(".", " . ").split()
    out: list[Obj] = []
    seen: set[tuple[int, int]] = set()
    for i in range(len(words) - 3):
        color, shape, at, cell = words[i : i + 4]
        if color in COLORS and shape in SHAPES and at == "at" and cell in CELL_WORDS:
            rc = (int(cell[1]) - 1, int(cell[3]) - 1)
            if rc not in seen:
                seen.add(rc)
                out.append(Obj(shape, color, *rc))
    return out


def relation_holds(a_box: list[float], b_box: list[float], relation: str) -> bool:
    """GenEval's relation of box A to box B: shrunk centre offset, ±0.5 thresholds."""
    import math

    ax, ay = (a_box[0] + a_box[2]) / 2, (a_box[1] + a_box[3]) / 2
    bx, by = (b_box[0] + b_box[2]) / 2, (b_box[1] + b_box[3]) / 2
    dx, dy = ax - bx, ay - by
    sx = 0.1 * ((a_box[2] - a_box[0]) + (b_box[2] - b_box[0]))
    sy = 0.1 * ((a_box[3] - a_box[1]) + (b_box[3] - b_box[1]))
    length = math.hypot(dx, dy)
    shx = math.copysign(max(abs(dx) - sx, 0.0), dx)
    shy = math.copysign(max(abs(dy) - sy, 0.0), dy)
    if length == 0 or (shx == 0 and shy == 0):
        return False
    nx, ny = shx / length, shy / length
    return {
        "left of": nx < -0.5,
        "right of": nx > 0.5,
        "above": ny < -0.5,
        "below": ny > 0.5,
    }[relation]


# --- scenes for prompts -------------------------------------------------------------------


def _free_cells(rng: random.Random, n: int) -> list[tuple[int, int]]:
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    return rng.sample(cells, n)


def scene_for(metadata: dict[str, Any], rng: random.Random) -> list[Obj]:
    """A random scene that satisfies a ShapesEval metadata record (its `include` clauses).

    Unstated colours are drawn at random; positions are random cells, resampled until every
    `position` relation holds by GenEval's rule.
    """
    include = metadata["include"]
    for _ in range(1000):
        counts = [int(c.get("count", 1)) for c in include]
        cells = _free_cells(rng, sum(counts))
        objs: list[Obj] = []
        groups: list[list[Obj]] = []
        k = 0
        for clause, n in zip(include, counts, strict=True):
            group = []
            for _ in range(n):
                color = clause.get("color") or rng.choice(list(COLORS))
                group.append(Obj(clause["class"], color, *cells[k]))
                k += 1
            groups.append(group)
            objs.extend(group)
        ok = True
        for clause, group in zip(include, groups, strict=True):
            if "position" in clause:
                rel, j = clause["position"][0], int(clause["position"][1])
                ok = ok and all(relation_holds(a.box, b.box, rel) for a in group for b in groups[j])
        if ok:
            return objs
    raise ValueError(f"cannot build a scene for {metadata!r}")


def corrupt(objects: list[Obj], rng: random.Random) -> list[Obj]:
    """A near-miss variant of a scene: one object recoloured, reshaped, moved, added or removed."""
    objs = list(objects)
    used = {(o.row, o.col) for o in objs}
    free = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in used]
    kind = rng.choice(["color", "shape", "move", "add", "remove", "swap"])
    i = rng.randrange(len(objs))
    o = objs[i]
    if kind == "color":
        objs[i] = Obj(o.shape, rng.choice([c for c in COLORS if c != o.color]), o.row, o.col)
    elif kind == "shape":
        objs[i] = Obj(rng.choice([s for s in SHAPES if s != o.shape]), o.color, o.row, o.col)
    elif kind == "move" and free:
        objs[i] = Obj(o.shape, o.color, *rng.choice(free))
    elif kind == "add" and free:
        objs.append(Obj(o.shape, rng.choice([o.color, *COLORS]), *rng.choice(free)))
    elif kind == "remove" and len(objs) > 1:
        objs.pop(i)
    elif kind == "swap" and len(objs) > 1:
        j = rng.choice([j for j in range(len(objs)) if j != i])
        p = objs[j]
        objs[i] = Obj(o.shape, o.color, p.row, p.col)
        objs[j] = Obj(p.shape, p.color, o.row, o.col)
    else:
        objs[i] = Obj(o.shape, rng.choice([c for c in COLORS if c != o.color]), o.row, o.col)
    return objs
