"""MixedReward's GroundingDINO score (the MILR authors' ``reward_gdino.py``, from T2I-R1), restated.

Used by the ``grounding`` critic on its NMS'd boxes; see `milr.critics.grounding` for the rules
in words and the two deliberate deviations (``above`` is scored; NMS on corner boxes).
"""

from __future__ import annotations

from typing import Any

from milr.geneval_rules import Detection

#: Position words of MixedReward's ``determine_position`` mapped to a direction.
_DIRECTIONS = {"left of": "left", "right of": "right", "above": "up", "below": "down"}


def mixed_reward_score(
    metadata: dict[str, Any], detections: list[Detection], size: tuple[int, int]
) -> tuple[float, str]:
    """MixedReward's GroundingDINO score of one image, and which task rule was used.

    ``detections`` are the boxes that passed the box threshold and per-class NMS (pixels);
    ``size`` is the image's ``(width, height)``, used to normalise boxes as the original does.
    Rules (module docstring): ``spatial`` when an include clause has a ``position``,
    ``numeracy`` when one has a ``count`` (always, for GenEval metadata), else ``object``.
    Returns a score in [0, 1] (``spatial`` tops out at 0.9 by construction).
    """
    include = metadata.get("include", [])
    found: dict[str, list[Detection]] = {}
    for d in detections:
        found.setdefault(d.cls, []).append(d)
    if not include:
        return 0.0, "object"
    pos = next((c for c in include if "position" in c), None)
    if pos is not None:
        others = [c for c in include if c is not pos]
        obj1 = pos["class"]
        obj2 = others[0]["class"] if others else include[0]["class"]
        score = 0.2 * (obj1 in found) + 0.2 * (obj2 in found)
        if obj1 in found and obj2 in found:
            a = max(found[obj1], key=lambda d: d.confidence)
            b = max(found[obj2], key=lambda d: d.confidence)
            score += position_score(pos["position"][0], a.box, b.box, size) / 2
        return float(score), "spatial"
    if any("count" in c for c in include):
        total = 0.0
        for c in include:
            n = len(found.get(c["class"], []))
            total += 1.0 if n == c.get("count", 1) else (0.2 if n else 0.0)
        return total / len(include), "numeracy"
    return sum(c["class"] in found for c in include) / len(include), "object"


def position_score(
    relation: str,
    box1: tuple[float, ...],
    box2: tuple[float, ...],
    size: tuple[int, int],
    iou_threshold: float = 0.1,
) -> float:
    """MixedReward's ``determine_position``: how well box1 stands in ``relation`` to box2, in [0, 1].

    Boxes are pixel ``(x1, y1, x2, y2)``, normalised by ``size`` (width, height) first. With
    the centre offset ``(dx, dy) = centre2 - centre1``: the relation's axis must dominate
    (``|dx| > |dy|`` for left/right, ``|dy| > |dx|`` for above/below) with the right sign (box1
    left of box2 means ``dx > 0``; above means ``dy > 0``, image y grows downward); then the
    score is 1 when the boxes' IoU is below ``iou_threshold`` and ``iou_threshold / IoU``
    otherwise. Anything else scores 0.
    """
    w, h = float(size[0]), float(size[1])
    a = (box1[0] / w, box1[1] / h, box1[2] / w, box1[3] / h)
    b = (box2[0] / w, box2[1] / h, box2[2] / w, box2[3] / h)
    dx = (b[0] + b[2]) / 2 - (a[0] + a[2]) / 2
    dy = (b[1] + b[3]) / 2 - (a[1] + a[3]) / 2
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    direction = _DIRECTIONS.get(relation)
    ok = {
        "left": dx > 0 and abs(dx) > abs(dy),
        "right": dx < 0 and abs(dx) > abs(dy),
        "up": dy > 0 and abs(dy) > abs(dx),
        "down": dy < 0 and abs(dy) > abs(dx),
    }.get(direction or "", False)
    if not ok:
        return 0.0
    return 1.0 if iou < iou_threshold else iou_threshold / iou
