"""`route`: one critic per metadata value (T2I-CompBench category -> its evaluator).

Written in a TOML spec file (members hold lists, so there is no spec-string form)::

    [[critic]]
    name = "route"
    field = "category"            # optional; default: the image's tag (tag, category, wise_category)
    default = "clip"              # optional: the member label for values no member lists

    [[critic.member]]
    name = "vqa"
    when = ["color", "shape", "texture", "complex"]
    weights = "/models/blip-vqa-base"

    [[critic.member]]
    name = "clip"
    when = ["non_spatial", "complex"]
    weights = "/models/clip-vit-b-32.bin"

Each member table takes ``name``, ``when`` (the values routed to it), ``weight`` (among the
members chosen for one image; default 1) and ``label``; its other keys are the member critic's
own parameters. The routing, scoring and breakdown are `milr.ensemble.Route`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.ensemble import Member, Route, check_weight

if TYPE_CHECKING:
    from PIL.Image import Image

_RESERVED = ("name", "when", "weight", "label")


class RouteMember(BaseModel):
    """One ``[[critic.member]]`` table: a critic spec plus its routing values."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, description="registered critic name")
    when: tuple[str, ...] = Field((), description="metadata values routed to this member")
    weight: float = Field(
        1.0, description="weight among the members chosen for an image (milr.ensemble.check_weight)"
    )
    label: str | None = Field(None, description="name in the breakdown; default the critic name")

    @field_validator("when", mode="before")
    @classmethod
    def _values(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"must be a list of values such as [{value!r}], not a string")
        return value

    def critic_params(self) -> dict[str, Any]:
        """The member critic's own parameters (every key besides name/when/weight/label)."""
        return dict(self.model_extra or {})


def _member(i: int, raw: dict[str, Any]) -> RouteMember:
    """Validate member ``i`` (0-based); a problem is one line naming the member and the key."""
    name = raw.get("name", "?")
    if "weight" in raw:  # the one weight rule of ensembles and spec files
        check_weight(raw["weight"], f"critic 'route': member {i + 1} ({name!r}): 'weight'")
    try:
        return RouteMember.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(part) for part in err.get("loc", ())) or "?"
            reason = str((err.get("ctx") or {}).get("error", err.get("msg", "is invalid")))
            if err.get("type") == "missing":
                problems.append(f"{key!r} is required")
            else:
                problems.append(f"{key!r}={err.get('input')!r}: {reason}")
        raise MilrUserError(
            f"critic 'route': member {i + 1} ({name!r}): " + "; ".join(problems)
        ) from None


class RouteCritic(Critic):
    """Scores each image with the member(s) its metadata value is routed to.

    Score in [0, 1]: the weighted mean of the chosen members' scores; verdict: all of theirs
    that give one pass (None when none does). Details: ``route`` (``field``, ``value``,
    ``critics``) and ``critics`` (the chosen members' score, weight, passed, details). An image
    whose value no member lists (or whose metadata lacks the field) raises `MilrUserError`
    naming it, unless ``default`` names a member. Members are built through the registry, so
    any registered critic (but not a nested route) can be one.
    """

    name: ClassVar[str] = "route"
    description: ClassVar[str] = "Routes each image to its category's critic(s) (TOML only)"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "tag", "category", "wise_category")

    class Params(CriticParams):
        member: list[dict[str, Any]] = Field(
            min_length=1,
            description="[[critic.member]] tables: name, when = [values], weight, label, "
            "and the member critic's parameters",
            json_schema_extra={"hint": "add [[critic.member]] tables in a TOML spec file"},
        )
        field: str | None = Field(
            None,
            min_length=1,
            description="metadata key routed on; None: tag, else category, else wise_category",
        )
        default: str | None = Field(
            None, description="label of the member for unrouted values; None: unrouted is an error"
        )
        on_error: Literal["raise", "skip"] = Field(
            "raise", description="a failing member: raise, or record it and average the rest"
        )

    params: Params

    def setup(self) -> None:
        from milr.registry import get_registry

        registry = get_registry()
        members = []
        for i, raw in enumerate(self.params.member):
            m = _member(i, raw)
            if m.name == self.name:
                raise MilrUserError(
                    f"critic 'route': member {i + 1} is itself a route; list its members here"
                )
            try:
                critic = registry.create_critic(m.name, **m.critic_params())
            except MilrUserError as exc:
                raise type(exc)(f"critic 'route': member {i + 1} ({m.name!r}): {exc}") from exc
            members.append(Member(critic, m.weight, when=m.when, label=m.label))
        try:
            self.route = Route(
                members, self.params.field, self.params.default, self.params.on_error
            )
        except MilrUserError as exc:
            raise MilrUserError(f"critic 'route': {exc}") from exc

    def bind(self, *, generator: Any = None) -> None:
        self.route.bind(generator=generator)

    def prepare(self) -> None:
        self.route.prepare()

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        self.route.check_item(prompt, metadata)

    def weights_ids(self) -> list[str]:
        return self.route.weights_ids()

    def config(self) -> dict[str, Any]:
        """The routing and every member's own `config()` (cache keys see member changes)."""
        return self.route.config()

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        return self.route.score_batch(images, prompts, metadata)


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(RouteCritic)
