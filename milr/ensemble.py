"""Weighted and routed ensembles of critics. Weights live here, never inside the critics.

Two composites, both critics themselves:

- `Ensemble`: every member scores every image; the score is the weighted mean. A member's
  weight may depend on the image's benchmark tag (``weights_by_tag``), which is how MixedReward's
  0.5/0.5 (GenEval ``colors``/``color_attr``) vs 0.75/0.25 (other tags) is expressed.
- `Route`: each image goes only to the members whose ``when`` list holds its metadata value
  (T2I-CompBench category -> that category's evaluator); several members for one value are
  averaged by their weights (T2I-CompBench's ``complex`` = mean of three evaluators).

The *tag* of an image is the first string among ``metadata["tag"]`` (GenEval),
``metadata["category"]`` (T2I-CompBench) and ``metadata["wise_category"]`` (WISE, as
`milr.bench` loads it), in that order (`TAG_FIELDS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from milr.critic import Critic, CriticResult, critic_label
from milr.ensemble_batch import (  # Member: defined there, below both modules
    Member,
    combine_or_none,
    external_failure,
    raise_external,
    run_members,
)
from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

ON_ERROR_POLICIES = ("raise", "skip")
#: Metadata fields read, in this order, for an image's tag (conditional weights, routes).
TAG_FIELDS: tuple[str, ...] = ("tag", "category", "wise_category")


def metadata_tag(
    metadata: Mapping[str, Any] | None, fields: Sequence[str] = TAG_FIELDS
) -> tuple[str, str] | None:
    """``(field, value)`` of the first of ``fields`` holding a string in ``metadata``, else None."""
    if not isinstance(metadata, Mapping):
        return None
    for name in fields:
        value = metadata.get(name)
        if isinstance(value, str):
            return name, value
    return None


def check_weight(weight: Any, what: str, error: type[MilrUserError] = MilrUserError) -> float:
    """A member weight as a float, or `error` (one line naming `what` and the value).

    The one rule for every weight milr reads (ensemble members, ``weights_by_tag`` entries,
    spec strings and files, route members): an ``int`` or ``float``, finite and ``>= 0``. A
    bool is not a number, nor is a numeric string (``weight = "0.5"`` in TOML is refused, as
    ``weight=True`` is). `what` names the value, e.g. ``"weight for critic 'color'"``.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise error(f"{what} = {weight!r} is not a number; use e.g. 0.5")
    w = float(weight)
    if not math.isfinite(w) or w < 0:
        raise error(f"{what} = {weight!r} must be a finite number >= 0")
    return w


def _members(items: Sequence[Any], kind: str) -> list[tuple[str, Member]]:
    """Validate members (`Member` or ``(critic, weight)`` pairs) and give each a unique label."""
    if not items:
        raise MilrUserError(
            f"{'an' if kind == 'ensemble' else 'a'} {kind} needs at least one critic"
        )
    out: list[tuple[str, Member]] = []
    counts: dict[str, int] = {}
    for item in items:
        m = item if isinstance(item, Member) else Member(*item)
        if not isinstance(m.critic, Critic):
            raise MilrUserError(f"{kind} member {m.critic!r} is not a milr.Critic")
        base = m.label or critic_label(m.critic)
        w = check_weight(m.weight, f"weight for critic {base!r}")
        table = None
        if m.weights_by_tag is not None:
            if kind != "ensemble":
                raise MilrUserError(
                    f"route member {base!r}: weights_by_tag belongs to ensembles; a route "
                    "member takes weight and when"
                )
            if not isinstance(m.weights_by_tag, Mapping):
                raise MilrUserError(
                    f"weights_by_tag for critic {base!r} must be a table {{tag = weight}}, "
                    f"got {m.weights_by_tag!r}"
                )
            table = {}
            for tag, tw in m.weights_by_tag.items():
                if not isinstance(tag, str) or not tag:
                    raise MilrUserError(f"weights_by_tag for critic {base!r}: bad tag {tag!r}")
                table[tag] = check_weight(tw, f"weights_by_tag.{tag} for critic {base!r}")
        when = None
        if m.when is not None:
            if kind != "route":
                raise MilrUserError(
                    f"critic {base!r}: when= belongs to route members; in an ensemble use "
                    "weights_by_tag"
                )
            if isinstance(m.when, str) or not all(isinstance(v, str) for v in m.when):
                raise MilrUserError(
                    f"route member {base!r}: when must be a list of strings, got {m.when!r}"
                )
            when = tuple(m.when)
        counts[base] = counts.get(base, 0) + 1
        label = base if counts[base] == 1 else f"{base}#{counts[base]}"
        out.append((label, Member(m.critic, w, table, when, label)))
    labels = [label for label, _ in out]
    dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dupes:
        raise MilrUserError(f"{kind} labels {dupes} are used twice; give each member its own label")
    return out


def _check_members(
    members: list[tuple[str, Member]], labels: list[str], prompt: str, metadata: dict[str, Any]
) -> None:
    """`Critic.check_item` of the members named by `labels`; a refusal names the member."""
    if len(members) == 1:
        members[0][1].critic.check_item(prompt, metadata)
        return
    chosen = set(labels)
    for label, m in members:
        if label not in chosen:
            continue
        try:
            m.critic.check_item(prompt, metadata)
        except MilrUserError as exc:
            text = f"critic {label!r} of the ensemble: {exc}"
            try:
                err = type(exc)(text)
            except TypeError:
                err = MilrUserError(text)
            raise err from None


def _check_policy(on_error: str) -> None:
    if on_error not in ON_ERROR_POLICIES:
        raise MilrUserError(
            f"on_error={on_error!r} is not a policy; use one of {', '.join(ON_ERROR_POLICIES)}"
        )


class _Composite(Critic):
    """What `Ensemble` and `Route` share: labelled members, and run context passed to each."""

    _members: list[tuple[str, Member]]

    @property
    def labels(self) -> list[str]:
        """The members' labels, in member order."""
        return [label for label, _ in self._members]

    def bind(self, *, generator: Any = None) -> None:
        for _, m in self._members:
            m.critic.bind(generator=generator)

    def prepare(self) -> None:
        """Prepare every member (in member order; the first failure raises)."""
        for _, m in self._members:
            m.critic.prepare()

    def weights_ids(self) -> list[str]:
        """Every member's checkpoints, each once, in member order."""
        return list(dict.fromkeys(w for _, m in self._members for w in m.critic.weights_ids()))


class Ensemble(_Composite):
    """A critic made of members: the weighted mean of their scores.

    ``members``: `Member` objects or ``(critic, weight)`` pairs (weights finite, >= 0).

    - Score: ``sum(w_i * s_i) / sum(w_i)`` over the members that produced a result, where
      ``w_i`` is the member's ``weights_by_tag[tag]`` when the image's tag (`metadata_tag`) is a
      key, else its ``weight``. Every member scores every image, also at weight 0 (a monitor).
    - Verdict: True when every member that gives a verdict passes, None when none gives one.
    - Details: ``{"critics": {LABEL: {"score", "weight", "passed", "details"}}}``; ``weight`` is
      the weight used for that image; members with ``weights_by_tag`` add ``"weight_rule"``
      (``"tag:colors"`` or ``"default"``).
    - ``on_error="raise"`` (default) re-raises a member's exception; ``"skip"`` records it in the
      details and leaves the member out of that image's mean. When every member is skipped the
      ensemble raises `EnsembleError`, since there is no score to give.
    - A member that fails at an external service for some images (`ExternalServiceError`, e.g.
      a judge server refusing one image) fails only those images: every member still scores
      the batch, and the ensemble raises one `ExternalServiceError` whose ``failures`` are the
      images without a score (under ``raise``: any member failed there; under ``skip``: no
      member is left) and whose ``results`` hold the ensemble's result for every other image,
      so nothing already paid for is lost.
    - Contract violations always raise: a critic that returns NaN must not be averaged away.

    Raises `MilrUserError` for no members, a bad weight or policy, weights that are all 0, and
    (at scoring time) an image whose tag gives every member weight 0.
    """

    name: ClassVar[str] = "ensemble"
    description: ClassVar[str] = "Weighted mean of several critics"

    def __init__(
        self, members: Sequence[Member | tuple[Any, ...]], on_error: str = "raise"
    ) -> None:
        _check_policy(on_error)
        self._members = _members(members, "ensemble")
        self.members: list[tuple[str, Critic, float]] = [
            (label, m.critic, m.weight) for label, m in self._members
        ]
        if not any(
            m.weight > 0 or any(w > 0 for w in (m.weights_by_tag or {}).values())
            for _, m in self._members
        ):
            raise MilrUserError(
                "ensemble weights sum to 0; give at least one critic a positive weight"
            )
        self.on_error = on_error
        self._by_label = dict(self._members)

    def config(self) -> dict[str, Any]:
        members = []
        for label, m in self._members:
            entry: dict[str, Any] = {
                "label": label,
                "name": type(m.critic).name,
                "weight": m.weight,
                "config": m.critic.config(),
            }
            if m.weights_by_tag is not None:
                entry["weights_by_tag"] = dict(sorted(m.weights_by_tag.items()))
            members.append(entry)
        return {"on_error": self.on_error, "members": members}

    def weight_for(self, label: str, metadata: Mapping[str, Any] | None) -> tuple[float, str]:
        """The weight member ``label`` has for an image with ``metadata``, and its rule."""
        m = self._by_label[label]
        if m.weights_by_tag is None:
            return m.weight, "default"
        found = metadata_tag(metadata)
        if found is not None and found[1] in m.weights_by_tag:
            return m.weights_by_tag[found[1]], f"tag:{found[1]}"
        return m.weight, "default"

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """Every member must accept the item (each scores every image), and its tag must give
        some member a positive weight; a member's refusal is prefixed with its label."""
        if not any(self.weight_for(label, metadata)[0] > 0 for label, _ in self._members):
            found = metadata_tag(metadata)
            where = f"tag {found[1]!r} (metadata {found[0]!r})" if found else "no tag"
            raise MilrUserError(
                f"ensemble: an item with {where} gives every critic weight 0; give one a "
                "positive weight or a weights_by_tag entry"
            )
        _check_members(self._members, [lb for lb, _ in self._members], prompt, metadata)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        everyone = list(range(len(images)))
        outcome = run_members(
            self._members,
            {label: everyone for label, _ in self._members},
            images,
            prompts,
            metadata,
            self.on_error,
        )
        out: list[CriticResult | None] = []
        failed: dict[int, dict[str, str]] = {}
        for i in everyone:
            chosen = [(label, *self.weight_for(label, metadata[i])) for label, _ in self._members]
            if not any(w > 0 for _, w, _ in chosen):
                found = metadata_tag(metadata[i])
                where = f"tag {found[1]!r} (metadata {found[0]!r})" if found else "no tag"
                raise MilrUserError(
                    f"ensemble: image {i} has {where}, for which every critic has weight 0; "
                    "give one a positive weight or a weights_by_tag entry"
                )
            pairs = [(lb, w) for lb, w, _ in chosen]
            combined = combine_or_none(i, pairs, outcome)
            why = external_failure(i, self.labels, outcome, self.on_error, combined is not None)
            if why is not None or combined is None:
                failed[i] = why or {}
                out.append(None)
                continue
            score, passed, critics = combined
            for label, _, rule in chosen:
                if self._by_label[label].weights_by_tag is not None:
                    critics[label]["weight_rule"] = rule
            out.append(CriticResult(score=score, passed=passed, details={"critics": critics}))
        if failed:
            raise_external("ensemble", failed, out, outcome)
        return [r for r in out if r is not None]


class Route(_Composite):
    """A critic that sends each image to the members its metadata value is routed to.

    ``members``: `Member` objects with ``when`` (the values routed to them). ``field``: the
    metadata key read (None: the image's tag, see `TAG_FIELDS`). ``default``: the label of the
    member used for a value no ``when`` lists (and for metadata without the field); None makes
    such an image a `MilrUserError` naming the value and the routed ones.

    - Each member scores only the images routed to it, in one batch call.
    - Score: weighted mean (member ``weight``) of the members chosen for the image, so a value
      listed by three members gets their mean. Verdict as in `Ensemble`, over those members.
    - Details: ``{"route": {"field", "value", "critics": [labels]}, "critics": {LABEL: ...}}``
      with only the chosen members.
    - ``on_error`` and external-service failures: as in `Ensemble`.
    """

    name: ClassVar[str] = "route"
    description: ClassVar[str] = "Routes each image to its category's critic(s)"

    def __init__(
        self,
        members: Sequence[Member],
        field: str | None = None,
        default: str | None = None,
        on_error: str = "raise",
    ) -> None:
        _check_policy(on_error)
        self._members = _members(members, "route")
        labels = [label for label, _ in self._members]
        if field is not None and (not isinstance(field, str) or not field):
            raise MilrUserError(f"route: field={field!r} must be a metadata key such as 'category'")
        if default is not None and default not in labels:
            raise MilrUserError(
                f"route: default={default!r} is not a member label; labels: {', '.join(labels)}"
            )
        #: metadata value -> labels of the members it is routed to
        self.routes: dict[str, list[str]] = {}
        for label, m in self._members:
            if not m.when and label != default:
                raise MilrUserError(
                    f"route member {label!r} has no when = [...] values and is not the default; "
                    "list the metadata values it judges"
                )
            for value in m.when or ():
                self.routes.setdefault(value, []).append(label)
        self.field = field
        self.default = default
        self.on_error = on_error

    def config(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "default": self.default,
            "on_error": self.on_error,
            "members": [
                {
                    "label": label,
                    "name": type(m.critic).name,
                    "weight": m.weight,
                    "when": list(m.when or ()),
                    "config": m.critic.config(),
                }
                for label, m in self._members
            ],
        }

    def route(self, metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None, list[str]]:
        """``(field, value, labels)`` for an image; `MilrUserError` when it cannot be routed."""
        if self.field is None:
            found = metadata_tag(metadata)
            key, value = found if found is not None else (None, None)
        else:
            key = self.field
            raw = metadata.get(self.field) if isinstance(metadata, Mapping) else None
            value = raw if isinstance(raw, str) else None
        chosen = self.routes.get(value, []) if value is not None else []
        if chosen:
            return key, value, chosen
        if self.default is not None:
            return key, value, [self.default]
        routed = ", ".join(sorted(self.routes))
        if value is None:
            want = repr(self.field) if self.field else " or ".join(repr(f) for f in TAG_FIELDS)
            raise MilrUserError(
                f"route: the metadata has no string {want} to route on (routed values: "
                f"{routed}); pass benchmark metadata or declare a default member"
            )
        raise MilrUserError(
            f"route: {key}={value!r} is routed to no critic (routed values: {routed}); add it "
            "to a member's when = [...] or declare a default member"
        )

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """The item must route (see `route`) and the members it goes to must accept it."""
        _, _, labels = self.route(metadata)
        _check_members(self._members, labels, prompt, metadata)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        routes = [self.route(m) for m in metadata]
        subsets: dict[str, list[int]] = {label: [] for label, _ in self._members}
        for i, (_, _, labels) in enumerate(routes):
            for label in labels:
                subsets[label].append(i)
        outcome = run_members(self._members, subsets, images, prompts, metadata, self.on_error)
        weights = {label: m.weight for label, m in self._members}
        out: list[CriticResult | None] = []
        failed: dict[int, dict[str, str]] = {}
        for i, (key, value, labels) in enumerate(routes):
            if not any(weights[lb] > 0 for lb in labels):
                raise MilrUserError(
                    f"route: {key}={value!r} goes to {labels}, whose weights are all 0"
                )
            combined = combine_or_none(i, [(lb, weights[lb]) for lb in labels], outcome)
            why = external_failure(i, labels, outcome, self.on_error, combined is not None)
            if why is not None or combined is None:
                failed[i] = why or {}
                out.append(None)
                continue
            score, passed, critics = combined
            details = {
                "route": {"field": key, "value": value, "critics": labels},
                "critics": critics,
            }
            out.append(CriticResult(score=score, passed=passed, details=details))
        if failed:
            raise_external("route", failed, out, outcome)
        return [r for r in out if r is not None]
