"""`shapes`: an exact GenEval-rules judge for the synthetic shapes world (weight-free).

A procedural detector (`milr.shapes.detect`: colour segmentation + shape templates) finds the
objects; the shared GenEval rules engine (`milr.geneval_rules`) applies the prompt's
metadata, so verdicts follow GenEval exactly (confidence 0.3, 0.9 for counting; colours;
relations). Metadata comes from the ``include``/``exclude``/``tag`` keys when given, otherwise
it is derived from the prompt ("a photo of two red circles").

Score: 1.0 when every clause passes. Otherwise the mean clause credit, where a passed clause
counts 1, an include clause with the right class count but a wrong colour or position 0.5,
one with too few objects ``0.5 × found / count``, and a failed exclude clause 0. So more of
the prompt satisfied means a higher score, and only a passing image reaches 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critics._images import to_rgb
from milr.geneval_rules import RuleParams

if TYPE_CHECKING:
    from PIL.Image import Image


class ShapesCritic(Critic):
    """GenEval verdicts for shapes-world images: procedural detector + shared rules engine."""

    name: ClassVar[str] = "shapes"
    description: ClassVar[str] = (
        "Exact GenEval-rules judge for the synthetic shapes world (procedural detector, no weights)"
    )
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "tag", "include", "exclude")

    class Params(RuleParams):
        """GenEval's thresholds (the procedural detector's confidences follow GenEval's scale)."""

    params: Params

    def setup(self) -> None:
        self.rules = self.params.rule_config()

    def metadata_for(self, prompt: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """GenEval metadata of one item: the given clauses, else parsed from the prompt."""
        from milr.geneval_rules import GENEVAL_COLORS, clauses_from_prompt
        from milr.shapes.world import SHAPES

        if metadata and ("include" in metadata or "exclude" in metadata):
            return metadata
        try:
            return clauses_from_prompt(prompt, classes=SHAPES, colors=GENEVAL_COLORS)
        except MilrUserError as exc:
            raise MilrUserError(
                f"shapes critic: {exc}. Prompts look like 'a photo of two red circles' or "
                "'a photo of a blue square left of a yellow triangle' (shapes: "
                f"{', '.join(SHAPES)}), or pass GenEval metadata"
            ) from None

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """The item's clauses (given or parsed) must name shapes-world classes and colours."""
        from milr.geneval_rules import GENEVAL_COLORS, validate_metadata
        from milr.shapes.world import SHAPES

        meta = self.metadata_for(prompt, metadata or {})
        try:
            validate_metadata(meta, list(SHAPES), GENEVAL_COLORS)
        except MilrUserError as exc:
            raise MilrUserError(
                f"shapes critic: {exc}; this critic judges only the synthetic shapes world "
                "(for GenEval's COCO classes use --critic geneval:weights=yolov8x.pt)"
            ) from None

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        from milr.geneval_rules import GENEVAL_COLORS, Detection, evaluate_rules
        from milr.shapes.detect import detect
        from milr.shapes.world import SHAPES

        out = []
        for image, prompt, meta in zip(images, prompts, metadata, strict=True):
            rgb = to_rgb(image, self.name)
            meta = self.metadata_for(prompt, meta or {})
            found = detect(rgb)
            dets = [
                Detection(d["class"], tuple(d["box"]), d["confidence"], d["color"]) for d in found
            ]
            res = evaluate_rules(
                meta, dets, config=self.rules, classes=SHAPES, colors=GENEVAL_COLORS
            )
            score = 1.0 if res.passed else clause_credit(res)
            out.append(
                CriticResult(
                    score,
                    res.passed,
                    {
                        "tag": meta.get("tag"),
                        "reason": res.reason,
                        "clauses": [c.to_dict() for c in res.clauses],
                        "detections": found,
                    },
                )
            )
        return out


def clause_credit(res: Any) -> float:
    """Partial credit of a failed verdict: mean over clauses (see the module docstring)."""
    credits = []
    for c in res.clauses:
        if c.passed:
            credits.append(1.0)
        elif c.kind == "exclude":
            credits.append(0.0)
        elif c.found >= c.count:
            credits.append(0.5)
        else:
            credits.append(0.5 * min(c.found, c.count) / c.count)
    return float(sum(credits) / len(credits)) if credits else 0.0


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(ShapesCritic)
