"""GenEval rules engine: include/exclude clauses, counts, colours and relative positions.

A pure-Python (numpy-free) restatement of the official GenEval evaluator, shared
by every detector-backed critic (``geneval`` with YOLO, ``shapes`` with its own detector).
Detectors produce :class:`Detection` objects; :func:`evaluate_rules` applies the metadata.

Semantics, step by step:

1. Detections per class are kept when ``confidence > threshold`` (0.3; 0.9 when the metadata
   ``tag`` is ``"counting"``), most confident first, at most ``max_objects`` (16) per class.
2. Each ``include`` clause needs at least ``count`` detections of its class; only the ``count``
   most confident are used further. With ``color``, at least ``count`` of those (i.e. all of
   them) must have that colour. With ``position: [relation, i]`` every used object must stand
   in ``relation`` to every object used by include clause ``i``, which must itself have matched.
3. Each ``exclude`` clause fails when ``count`` or more detections of its class were kept.
4. ``passed`` is true when every clause is satisfied. The partial-credit ``score`` is the
   fraction of clauses (include and exclude together) that are satisfied, so ``score == 1.0``
   exactly when ``passed``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from milr.errors import MilrUserError
from milr.params import CriticParams

#: GenEval's 80 object names (COCO classes with GenEval's spelling), in COCO index order.
GENEVAL_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse",
    "tv remote", "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: GenEval's ten colour names (zero-shot CLIP labels).
GENEVAL_COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)  # fmt: skip

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)

NUMBER_WORDS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10,
}  # fmt: skip

_INCLUDE_KEYS = frozenset({"class", "count", "color", "position"})
_EXCLUDE_KEYS = frozenset({"class", "count"})


@dataclass
class Detection:
    """One detected object: class name, pixel box ``(x1, y1, x2, y2)``, confidence, colour.

    ``color`` is a colour name, a mapping colour -> probability (argmax is used), or ``None``
    when not yet classified (then :func:`evaluate_rules` asks its ``color_fn``). ``mask`` is an
    optional boolean ``[H, W]`` array of the object's pixels (segmenting detectors), used for
    colour crops; the rules never read it and `to_dict` leaves it out.
    """

    cls: str
    box: tuple[float, float, float, float]
    confidence: float
    color: str | Mapping[str, float] | None = None
    mask: Any = field(default=None, repr=False, compare=False)

    @property
    def color_name(self) -> str | None:
        """The colour as one name (argmax of probabilities), or None when unclassified."""
        if self.color is None or isinstance(self.color, str):
            return self.color
        if not self.color:
            return None
        return max(self.color.items(), key=lambda kv: kv[1])[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for critic details."""
        out: dict[str, Any] = {
            "class": self.cls,
            "box": [round(float(v), 2) for v in self.box],
            "confidence": round(float(self.confidence), 4),
        }
        if self.color is not None:
            out["color"] = self.color_name
            if not isinstance(self.color, str):
                out["color_probs"] = {k: round(float(v), 4) for k, v in self.color.items()}
        return out


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rules engine; defaults are the official GenEval values."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    position_margin: float = 0.1
    #: Component of the (shrunk, normalised) offset a relation needs; 0.5 in GenEval.
    relation_cutoff: float = 0.5
    #: Compare confidences and compute relations in float32, step by step, as GenEval's
    #: evaluator does on mmdet's float32 outputs (decides borderline cases the same way).
    float32: bool = False

    def __post_init__(self) -> None:
        for name in ("threshold", "counting_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise MilrUserError(f"{name}={v!r} must be a number in [0, 1)")
        if (
            isinstance(self.max_objects, bool)
            or not isinstance(self.max_objects, int)
            or self.max_objects < 1
        ):
            raise MilrUserError(f"max_objects={self.max_objects!r} must be an integer >= 1")
        if not isinstance(self.position_margin, (int, float)) or self.position_margin < 0:
            raise MilrUserError(f"position_margin={self.position_margin!r} must be a number >= 0")
        if not isinstance(self.relation_cutoff, (int, float)) or not 0 <= self.relation_cutoff < 1:
            raise MilrUserError(
                f"relation_cutoff={self.relation_cutoff!r} must be a number in [0, 1)"
            )

    def threshold_for(self, tag: str | None) -> float:
        """Confidence threshold for a metadata tag (stricter for counting)."""
        return self.counting_threshold if tag == "counting" else self.threshold


class RuleParams(CriticParams):
    """The rules engine's thresholds as declared critic parameters (GenEval's defaults).

    Critics that judge detections with :func:`evaluate_rules` (``geneval``, ``shapes``, any
    detector plugin) subclass this for their ``Params`` and call :meth:`rule_config`.
    """

    threshold: float = Field(
        0.3, ge=0, lt=1, description="detection confidence kept (strictly above); GenEval: 0.3"
    )
    counting_threshold: float = Field(
        0.9, ge=0, lt=1, description="confidence kept for the 'counting' tag; GenEval: 0.9"
    )
    max_objects: int = Field(16, ge=1, description="most confident detections kept per class")
    position_margin: float = Field(
        0.1, ge=0, description="box-size share shrinking centre offsets in relations; GenEval: 0.1"
    )

    def rule_config(self) -> RuleConfig:
        return RuleConfig(
            self.threshold, self.counting_threshold, self.max_objects, self.position_margin
        )


@dataclass
class ClauseResult:
    """Outcome of one include/exclude clause."""

    kind: str  # "include" | "exclude"
    index: int
    cls: str
    count: int
    passed: bool
    found: int
    reason: str = ""
    color: str | None = None
    position: tuple[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "index": self.index,
            "class": self.cls,
            "count": self.count,
            "passed": self.passed,
            "found": self.found,
        }
        if self.color is not None:
            out["color"] = self.color
        if self.position is not None:
            out["position"] = list(self.position)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class RulesResult:
    """Verdict of one image: pass/fail, why it failed, per-clause outcomes, partial credit."""

    passed: bool
    score: float
    reason: str
    clauses: list[ClauseResult] = field(default_factory=list)
    threshold: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "score": self.score,
            "reason": self.reason,
            "threshold": self.threshold,
            "clauses": [c.to_dict() for c in self.clauses],
        }


# --------------------------------------------------------------------------- schema


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_metadata(
    metadata: Any,
    classes: Iterable[str] | None = GENEVAL_CLASSES,
    colors: Iterable[str] = GENEVAL_COLORS,
) -> dict[str, Any]:
    """Check GenEval metadata and return a normalised copy; `MilrUserError` names the bad field.

    ``classes=None`` accepts any class name. Extra top-level keys (``prompt``, ``text``, ...)
    are kept, since an ensemble passes the same metadata to every critic; unknown keys inside
    a clause are rejected (they are usually typos such as ``colour``).
    """
    if not isinstance(metadata, Mapping):
        raise MilrUserError(
            f"GenEval metadata must be a JSON object, got {type(metadata).__name__}"
        )
    vocab = None if classes is None else set(classes)
    color_set = tuple(colors)
    tag = metadata.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise MilrUserError(f"GenEval metadata field 'tag' must be a string, got {tag!r}")
    out: dict[str, Any] = dict(metadata)
    include = metadata.get("include", [])
    exclude = metadata.get("exclude", [])
    for key, value in (("include", include), ("exclude", exclude)):
        if not isinstance(value, list):
            raise MilrUserError(
                f"GenEval metadata field {key!r} must be a list of clauses, got {type(value).__name__}"
            )
    if not include and not exclude:
        raise MilrUserError(
            "GenEval metadata has no clauses: field 'include' (or 'exclude') must list at least one"
        )

    def check_class_count(clause: Any, where: str, allowed: frozenset[str]) -> tuple[str, int]:
        if not isinstance(clause, Mapping):
            raise MilrUserError(f"GenEval metadata field {where} must be an object, got {clause!r}")
        unknown = sorted(set(clause) - allowed)
        if unknown:
            raise MilrUserError(
                f"GenEval metadata field {where} has unknown key(s) {unknown}; allowed: {sorted(allowed)}"
            )
        if "class" not in clause:
            raise MilrUserError(f"GenEval metadata field {where}.class is missing")
        cls = clause["class"]
        if not isinstance(cls, str) or not cls:
            raise MilrUserError(
                f"GenEval metadata field {where}.class must be a non-empty string, got {cls!r}"
            )
        if vocab is not None and cls not in vocab:
            raise MilrUserError(
                f"GenEval metadata field {where}.class={cls!r} is not a known class of this detector; "
                f"known: {', '.join(sorted(vocab))}"
            )
        if "count" not in clause:
            raise MilrUserError(f"GenEval metadata field {where}.count is missing")
        count = clause["count"]
        if not _is_int(count) or count < 1:
            raise MilrUserError(
                f"GenEval metadata field {where}.count must be an integer >= 1, got {count!r}"
            )
        return cls, count

    new_include = []
    for i, clause in enumerate(include):
        where = f"include[{i}]"
        cls, count = check_class_count(clause, where, _INCLUDE_KEYS)
        norm: dict[str, Any] = {"class": cls, "count": count}
        if "color" in clause:
            color = clause["color"]
            if color not in color_set:
                raise MilrUserError(
                    f"GenEval metadata field {where}.color={color!r} is not one of {', '.join(color_set)}"
                )
            norm["color"] = color
        if "position" in clause:
            pos = clause["position"]
            if not isinstance(pos, (list, tuple)) or len(pos) != 2:
                raise MilrUserError(
                    f"GenEval metadata field {where}.position must be [relation, clause_index], got {pos!r}"
                )
            rel, target = pos
            if rel not in RELATIONS:
                raise MilrUserError(
                    f"GenEval metadata field {where}.position[0]={rel!r} is not one of {', '.join(RELATIONS)}"
                )
            if not _is_int(target) or not 0 <= target < i:
                raise MilrUserError(
                    f"GenEval metadata field {where}.position[1]={target!r} must index an earlier "
                    f"include clause (0..{i - 1})"
                    if i
                    else f"GenEval metadata field {where}.position: the first clause cannot have a "
                    "position (it needs an earlier clause as target)"
                )
            norm["position"] = [rel, target]
        new_include.append(norm)
    new_exclude = []
    for i, clause in enumerate(exclude):
        cls, count = check_class_count(clause, f"exclude[{i}]", _EXCLUDE_KEYS)
        new_exclude.append({"class": cls, "count": count})
    out["include"] = new_include
    out["exclude"] = new_exclude
    return out


# --------------------------------------------------------------------------- geometry


def f32(x: float) -> float:
    """``x`` rounded to the nearest IEEE float32 (as a Python float)."""
    return struct.unpack("f", struct.pack("f", x))[0]  # type: ignore[no-any-return]


def _relative_position_f32(
    box_a: Sequence[float], box_b: Sequence[float], margin: float, cutoff: float
) -> set[str]:
    """`relative_position` in float32 arithmetic, one rounding per operation, as numpy does on
    GenEval's float32 boxes (``evaluate_images.py``): centres ``(x1 + x2) / 2``, sizes
    ``|x2 - x1|``, the margin ``float32(margin) * (size_a + size_b)``, and the offset length
    ``sqrt(dx*dx + dy*dy)`` (``np.linalg.norm`` of a float32 pair)."""
    a = [f32(float(v)) for v in box_a]
    b = [f32(float(v)) for v in box_b]
    m, cut, eps = f32(margin), f32(cutoff), f32(1e-3)
    off, shrunk = [], []
    for k in (0, 1):
        ca = f32(f32(a[k] + a[k + 2]) / 2)
        cb = f32(f32(b[k] + b[k + 2]) / 2)
        o = f32(ca - cb)
        size = f32(abs(f32(a[k + 2] - a[k])) + abs(f32(b[k + 2] - b[k])))
        left = max(f32(abs(o) - f32(m * size)), 0.0)
        off.append(o)
        shrunk.append(math.copysign(left, o) if o != 0 else 0.0)
    if all(abs(s) < eps for s in shrunk):
        return set()
    norm = f32(math.sqrt(f32(f32(off[0] * off[0]) + f32(off[1] * off[1]))))
    dx, dy = f32(shrunk[0] / norm), f32(shrunk[1] / norm)
    return _relations(dx, dy, cut)


def _relations(dx: float, dy: float, cutoff: float) -> set[str]:
    rels = set()
    if dx < -cutoff:
        rels.add("left of")
    if dx > cutoff:
        rels.add("right of")
    if dy < -cutoff:
        rels.add("above")
    if dy > cutoff:
        rels.add("below")
    return rels


def relative_position(
    box_a: Sequence[float],
    box_b: Sequence[float],
    margin: float = 0.1,
    cutoff: float = 0.5,
    *,
    float32: bool = False,
) -> set[str]:
    """Relations of box A to box B (``left of``, ``right of``, ``above``, ``below``).

    The centre offset A - B is shrunk per axis by ``margin`` x (sum of both box sizes on that
    axis) and clamped at zero; if less than 1e-3 px is left on both axes there is no relation.
    Otherwise the shrunk offset is divided by the length of the raw offset and a component
    beyond ``cutoff`` gives the relation (image y grows downward, so negative y is ``above``).
    ``float32=True`` computes it as GenEval's evaluator does on float32 boxes.
    """
    if float32:
        return _relative_position_f32(box_a, box_b, margin, cutoff)
    ax1, ay1, ax2, ay2 = (float(v) for v in box_a)
    bx1, by1, bx2, by2 = (float(v) for v in box_b)
    off = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2, (ay1 + ay2) / 2 - (by1 + by2) / 2)
    dims = (abs(ax2 - ax1) + abs(bx2 - bx1), abs(ay2 - ay1) + abs(by2 - by1))
    shrunk = [
        math.copysign(max(abs(o) - margin * d, 0.0), o) for o, d in zip(off, dims, strict=True)
    ]
    if all(abs(s) < 1e-3 for s in shrunk):
        return set()
    norm = math.hypot(*off)
    return _relations(shrunk[0] / norm, shrunk[1] / norm, cutoff)


# --------------------------------------------------------------------------- evaluation

ColorFn = Callable[[Sequence[Detection], str], Sequence[str]]


def group_detections(
    detections: Mapping[str, Sequence[Detection]] | Iterable[Detection],
    threshold: float,
    max_objects: int,
    *,
    float32: bool = False,
) -> dict[str, list[Detection]]:
    """Keep detections with confidence > threshold, most confident first, max per class.

    ``float32=True`` compares ``float32(confidence) > float32(threshold)``, as GenEval does
    with mmdet's float32 scores (a score of exactly 0.3 in float32 is then not kept).
    """
    if float32:
        threshold = f32(threshold)
    if isinstance(detections, Mapping):
        flat: list[Detection] = [d for dets in detections.values() for d in dets]
    else:
        flat = list(detections)
    groups: dict[str, list[Detection]] = {}
    for det in flat:
        if not isinstance(det, Detection):
            raise TypeError(f"expected Detection objects, got {type(det).__name__}")
        conf = f32(det.confidence) if float32 else det.confidence
        if conf > threshold:
            groups.setdefault(det.cls, []).append(det)
    for cls, dets in groups.items():
        dets.sort(key=lambda d: -d.confidence)
        groups[cls] = dets[:max_objects]
    return groups


def detections_needing_color(
    metadata: Mapping[str, Any],
    detections: Mapping[str, Sequence[Detection]] | Iterable[Detection],
    config: RuleConfig | None = None,
) -> list[Detection]:
    """The detections whose colour :func:`evaluate_rules` will read (lets critics batch CLIP)."""
    config = config or RuleConfig()
    groups = group_detections(
        detections,
        config.threshold_for(metadata.get("tag")),
        config.max_objects,
        float32=config.float32,
    )
    need: list[Detection] = []
    seen: set[int] = set()
    for clause in metadata.get("include", []):
        if "color" not in clause:
            continue
        found = groups.get(clause["class"], [])[: clause["count"]]
        if len(found) < clause["count"]:
            continue
        for det in found:
            if id(det) not in seen and det.color is None:
                seen.add(id(det))
                need.append(det)
    return need


def evaluate_rules(
    metadata: Mapping[str, Any],
    detections_by_class: Mapping[str, Sequence[Detection]] | Iterable[Detection],
    color_fn: ColorFn | None = None,
    *,
    config: RuleConfig | None = None,
    classes: Iterable[str] | None = None,
    colors: Iterable[str] = GENEVAL_COLORS,
) -> RulesResult:
    """Apply GenEval metadata to one image's detections (a dict by class or a flat list).

    ``color_fn(detections, cls) -> colour names`` is called for used objects of a clause with
    ``color`` whose :attr:`Detection.color` is unset (the answer is stored on the detection). ``classes`` restricts class names in the
    metadata (``None``: any). Raises `MilrUserError` for metadata outside the schema.
    """
    config = config or RuleConfig()
    meta = validate_metadata(metadata, classes, colors)
    threshold = config.threshold_for(meta.get("tag"))
    groups = group_detections(
        detections_by_class, threshold, config.max_objects, float32=config.float32
    )

    results: list[ClauseResult] = []
    matched: list[list[Detection] | None] = []
    for i, clause in enumerate(meta["include"]):
        cls, count = clause["class"], clause["count"]
        found = groups.get(cls, [])[:count]
        res = ClauseResult(
            "include", i, cls, count, True, len(groups.get(cls, [])),
            color=clause.get("color"),
            position=tuple(clause["position"]) if "position" in clause else None,  # type: ignore[arg-type]
        )  # fmt: skip
        if len(found) < count:
            res.passed = False
            res.reason = f"expected {cls}>={count}, found {len(found)}"
        else:
            if "color" in clause:
                want = clause["color"]
                names = _colors_of(found, cls, color_fn)
                n_ok = names.count(want)
                if n_ok < count:
                    res.passed = False
                    seen = ", ".join(f"{names.count(c)} {c}" for c in dict.fromkeys(names))
                    res.reason = (
                        f"expected {want} {cls}>={count}, found {n_ok} {want}; colours seen: {seen}"
                    )
            if "position" in clause and res.passed:
                rel, target = clause["position"]
                targets = matched[target]
                if targets is None:
                    res.passed = False
                    res.reason = (
                        f"no target for {cls} to be {rel} (include clause {target} did not match)"
                    )
                else:
                    for obj in found:
                        for tgt in targets:
                            rels = relative_position(
                                obj.box,
                                tgt.box,
                                config.position_margin,
                                config.relation_cutoff,
                                float32=config.float32,
                            )
                            if rel not in rels:
                                res.passed = False
                                got = " and ".join(sorted(rels)) or "no relation to"
                                res.reason = (
                                    f"expected {cls} {rel} {tgt.cls}, found {cls} {got} {tgt.cls}"
                                )
                                break
                        if not res.passed:
                            break
        matched.append(found if res.passed else None)
        results.append(res)
    for i, clause in enumerate(meta["exclude"]):
        cls, count = clause["class"], clause["count"]
        n = len(groups.get(cls, []))
        res = ClauseResult("exclude", i, cls, count, n < count, n)
        if not res.passed:
            res.reason = f"expected {cls}<{count}, found {n}"
        results.append(res)
    n_ok = sum(r.passed for r in results)
    passed = n_ok == len(results)
    return RulesResult(
        passed=passed,
        score=n_ok / len(results),
        reason="; ".join(r.reason for r in results if not r.passed),
        clauses=results,
        threshold=threshold,
    )


def _colors_of(found: list[Detection], cls: str, color_fn: ColorFn | None) -> list[str]:
    missing = [d for d in found if d.color_name is None]
    if missing:
        if color_fn is None:
            raise ValueError(
                f"a clause on {cls!r} needs object colours but the detections carry none and no color_fn was given"
            )
        names = list(color_fn(missing, cls))
        if len(names) != len(missing):
            raise ValueError(
                f"color_fn returned {len(names)} colours for {len(missing)} detections"
            )
        for det, name in zip(missing, names, strict=True):
            det.color = name
    return [d.color_name or "" for d in found]


# --------------------------------------------------------------------------- prompts

_PREFIX_RE = re.compile(
    r"^(?:a |an )?(?:photo|image|picture|painting|rendering|drawing)\s+of\s+", re.IGNORECASE
)


def plural_forms(name: str) -> set[str]:
    """Singular and plural spellings of a class name (regular, GenEval's naive "+s", -ies, -ves)."""
    forms = {name, name + "s", name + "es"}
    if name.endswith("y") and name[-2:-1] not in "aeiou":
        forms.add(name[:-1] + "ies")
    if name.endswith("fe"):
        forms.add(name[:-2] + "ves")
    elif name.endswith("f"):
        forms.add(name[:-1] + "ves")
    if name == "person":
        forms.add("people")
    return forms


class PromptParseError(MilrUserError):
    """A prompt outside the simple GenEval phrasings; pass GenEval metadata instead."""


def clauses_from_prompt(
    prompt: str,
    classes: Iterable[str] = GENEVAL_CLASSES,
    colors: Iterable[str] = GENEVAL_COLORS,
) -> dict[str, Any]:
    """Derive GenEval metadata from a simple GenEval phrasing, or raise `PromptParseError`.

    Understood: ``[a photo of] <obj> [(and | left of | right of | above | below) <obj>]`` where
    ``<obj>`` is ``(a | an | one | two ... ten | <digits>) [<colour>] <class name, singular or
    plural>``. Counts above one add GenEval's ``exclude`` clause (count + 1).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptParseError(f"cannot derive GenEval clauses from an empty prompt {prompt!r}")
    class_list = list(classes)
    color_list = list(colors)
    forms: dict[str, str] = {}
    for cls in class_list:
        for form in plural_forms(cls.lower()):
            forms.setdefault(form, cls)
    text = " ".join(prompt.strip().rstrip(".!").split()).lower()
    body = _PREFIX_RE.sub("", text, count=1)

    def parse_obj(phrase: str) -> dict[str, Any]:
        words = phrase.split()
        if len(words) < 2:
            raise PromptParseError(
                f"cannot parse {phrase!r} in prompt {prompt!r}: expected '<a|an|number> [colour] <object>'"
            )
        det = words[0]
        if det in ("a", "an"):
            count = 1
        elif det in NUMBER_WORDS:
            count = NUMBER_WORDS[det]
        elif det.isdigit() and int(det) >= 1:
            count = int(det)
        else:
            raise PromptParseError(
                f"cannot parse {phrase!r} in prompt {prompt!r}: it should start with a, an or a number"
            )
        rest = words[1:]
        color = None
        if len(rest) > 1 and rest[0] in color_list:
            color, rest = rest[0], rest[1:]
        noun = " ".join(rest)
        cls = forms.get(noun)
        if cls is None:
            raise PromptParseError(
                f"cannot parse prompt {prompt!r}: {noun!r} is not a known object class "
                f"(known: {', '.join(class_list[:8])}, ...); pass GenEval metadata instead"
            )
        clause: dict[str, Any] = {"class": cls, "count": count}
        if color is not None:
            clause["color"] = color
        return clause

    rel_re = "|".join(re.escape(r) for r in RELATIONS)
    m = re.fullmatch(rf"(.+?) ({rel_re}) (.+)", body)
    if m:
        subj, rel, obj = parse_obj(m.group(1)), m.group(2), parse_obj(m.group(3))
        obj_clause = dict(obj)
        subj_clause = dict(subj, position=[rel, 0])
        include = [obj_clause, subj_clause]
        tag = "position"
    else:
        parts = body.split(" and ")
        if len(parts) > 2:
            raise PromptParseError(
                f"cannot parse prompt {prompt!r}: more than two objects; pass GenEval metadata instead"
            )
        include = [parse_obj(p) for p in parts]
        n_color = sum("color" in c for c in include)
        if len(include) == 2:
            tag = "color_attr" if n_color else "two_object"
        elif include[0]["count"] > 1:
            tag = "counting"
        elif n_color:
            tag = "colors"
        else:
            tag = "single_object"
    meta: dict[str, Any] = {"tag": tag, "include": include}
    exclude = [{"class": c["class"], "count": c["count"] + 1} for c in include if c["count"] > 1]
    if exclude:
        meta["exclude"] = exclude
    meta["prompt"] = prompt
    return meta
