"""Declared critic parameters (milr.params): one validation rule set, one-line errors, config()."""

from __future__ import annotations

import json
import warnings
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field, SecretStr, ValidationError, model_validator

import milr
from milr import Critic, CriticParams, CriticResult, critic_parameters
from milr.critics.color import ColorCritic
from milr.params import BatchSize, parameters_markdown
from milr.registry import Entry, Registry


class Toy(Critic):
    name: ClassVar[str] = "toy"
    description: ClassVar[str] = "toy critic for parameter tests"

    class Params(CriticParams):
        scale: float = Field(1.0, gt=0, description="a positive scale")
        steps: int = Field(3, ge=1, le=10, description="between 1 and 10")
        label: str = Field("x", description="free text")
        flag: bool = Field(False, description="a switch")
        maybe: bool | None = Field(None, description="a tri-state switch")
        mode: Literal["fast", "exact"] = Field("fast", description="how to score")
        low: float = Field(0.0, description="lower end")
        high: float = Field(1.0, description="upper end")
        token: str | None = Field(
            None, description="an API token", json_schema_extra={"secret": True}
        )
        password: SecretStr | None = Field(None, description="another secret")
        chunk: BatchSize | None = Field(None, description="optional batch size")

        @model_validator(mode="after")
        def _ordered(self) -> Toy.Params:
            if not self.low < self.high:
                raise ValueError(f"need low < high, got low={self.low}, high={self.high}")
            return self

    params: Params

    def setup(self) -> None:
        self.span = self.params.high - self.params.low

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(0.5) for _ in images]


class Required(Critic):
    name: ClassVar[str] = "needs"
    description: ClassVar[str] = "has a required parameter"

    class Params(CriticParams):
        path: str = Field(description="where the weights are")

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(0.5) for _ in images]


class Bare(Critic):
    name: ClassVar[str] = "bare"
    description: ClassVar[str] = "no parameters at all"

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(0.5) for _ in images]


class OldStyle(Critic):
    name: ClassVar[str] = "old"
    description: ClassVar[str] = "validates by hand, the pre-0.2 way"

    def __init__(self, level: float = 0.5) -> None:
        self.level = level

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(self.level) for _ in images]


def err(cls: type[Critic], **kwargs: Any) -> str:
    with pytest.raises(milr.MilrUserError) as info:
        cls(**kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_the_issue_examples_word_for_word():
    assert err(ColorCritic, tolerance=-1) == "critic 'color': parameter 'tolerance'=-1 must be > 0"
    assert err(ColorCritic, tolerence=3) == (
        "critic 'color': unknown parameter 'tolerence'; known: target, tolerance, min_fraction "
        "(did you mean 'tolerance'?)"
    )


def test_bounds_name_the_value_and_range():
    assert err(Toy, steps=0) == "critic 'toy': parameter 'steps'=0 must be >= 1"
    assert err(Toy, steps=11) == "critic 'toy': parameter 'steps'=11 must be <= 10"


def test_a_bool_is_not_a_number():
    assert "'scale'=True is a boolean, not a number" in err(Toy, scale=True)
    assert "'steps'=False is a boolean, not a number" in err(Toy, steps=False)
    # ... but it is a bool where the type says so, Optional included
    t = Toy(flag=True, maybe=False)
    assert t.params.flag is True and t.params.maybe is False


def test_type_errors_and_non_finite_numbers():
    assert err(Toy, scale="abc") == "critic 'toy': parameter 'scale'='abc' must be a number"
    assert err(Toy, steps=2.5) == "critic 'toy': parameter 'steps'=2.5 must be a whole number"
    assert "'scale'=nan must be a finite number" in err(Toy, scale=float("nan"))
    assert "'scale'=inf must be a finite number" in err(Toy, scale=float("inf"))
    assert "must be one of 'fast' or 'exact'" in err(Toy, mode="slow")


def test_spec_values_coerce_to_declared_types():
    # What milr.specs hands over after JSON-parsing `key=value` strings.
    t = Toy(scale=2, steps=4.0, label=123, flag="true")
    assert t.params.scale == 2.0 and isinstance(t.params.scale, float)
    assert t.params.steps == 4 and isinstance(t.params.steps, int)
    assert t.params.label == "123"
    assert t.params.flag is True
    ens = milr.build_critic("color:tolerance=40,target=blue")
    color = ens.members[0][1]
    assert color.params.tolerance == 40.0 and isinstance(color.params.tolerance, float)
    assert color.rgb == (30, 70, 220)


def test_unknown_keyword_suggestions():
    assert err(Toy, scael=1).endswith("(did you mean 'scale'?)")
    assert "did you mean" not in err(Toy, zzz=1)
    assert err(Bare, x=1) == (
        "critic 'bare': unknown parameter 'x'; known: (none: this critic takes no parameters)"
    )


def test_required_parameter_and_cross_field_rule():
    assert err(Required) == ("critic 'needs': parameter 'path' is required: where the weights are")
    assert err(Required, path=None) == err(Required)
    assert err(Toy, low=2.0, high=1.0) == "critic 'toy': need low < high, got low=2.0, high=1.0"


def test_several_problems_on_one_line():
    assert err(Toy, scale=0, steps=0) == (
        "critic 'toy': parameter 'scale'=0 must be > 0; parameter 'steps'=0 must be >= 1"
    )


def test_secrets_never_shown():
    t = Toy(token="sk-TOP-SECRET", password="hunter2")
    assert t.params.token == "sk-TOP-SECRET"
    cfg = t.config()
    assert "token" not in cfg and "password" not in cfg
    assert "sk-TOP-SECRET" not in repr(t) and "hunter2" not in repr(t)
    message = err(Toy, token=12.5, scale=-1)  # coerced to str: fine; bad scale still reported
    assert "12.5" not in message
    # A secret that fails validation is reported without its value.
    with pytest.raises(milr.MilrUserError) as info:
        Toy(password=["sk-LEAK"])
    assert "sk-LEAK" not in str(info.value) and "'password'=***" in str(info.value)
    rows = {r["name"]: r for r in critic_parameters(Toy)}
    assert rows["token"]["secret"] and rows["token"]["default"] is None
    assert rows["password"]["type"] == "secret str | None"


def test_params_are_frozen_and_setup_runs():
    t = Toy(low=1.0, high=4.0)
    assert t.span == 3.0
    with pytest.raises(ValidationError):
        t.params.scale = 5.0  # type: ignore[misc]


def test_config_is_json_with_defaults():
    cfg = Toy(steps=5).config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["steps"] == 5 and cfg["scale"] == 1.0 and cfg["mode"] == "fast"
    assert Bare().config() == {}
    assert repr(ColorCritic(target="blue")) == (
        "ColorCritic(target='blue', tolerance=100.0, min_fraction=None)"
    )


def test_critic_parameters_rows():
    rows = critic_parameters(ColorCritic)
    assert [r["name"] for r in rows] == ["target", "tolerance", "min_fraction"]
    tol = rows[1]
    assert tol == {
        "name": "tolerance",
        "type": "float",
        "default": 100.0,
        "required": False,
        "description": "Euclidean RGB distance (0-255 units) that counts as a match",
        "constraints": {"gt": 0},
        "secret": False,
    }
    assert rows[2]["type"] == "float | None" and rows[2]["constraints"] == {"gt": 0, "le": 1}
    assert critic_parameters(Required)[0]["required"] is True
    chunk = next(r for r in critic_parameters(Toy) if r["name"] == "chunk")
    assert chunk["type"] == "int | None" and chunk["constraints"] == {"ge": 1}
    assert err(Toy, chunk=0) == "critic 'toy': parameter 'chunk'=0 must be >= 1"
    assert critic_parameters(OldStyle) == []
    assert json.dumps(critic_parameters(Toy))


def _registry_with(*classes: type[Critic]) -> Registry:
    reg = Registry()
    for cls in classes:
        reg.critics[cls.name] = Entry(cls.name, cls, "tests", "tests", "0", False)
    return reg


def test_old_style_critic_still_works_with_a_deprecation_warning():
    reg = _registry_with(OldStyle, Toy, Bare)
    with pytest.warns(DeprecationWarning, match=r"class Params\(milr.CriticParams\)"):
        old = reg.create_critic("old", level=0.25)
    assert old.config() == {"level": 0.25}
    assert old.score(_image(), "x").score == 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared critics never warn
        assert reg.create_critic("toy", steps=2).config()["steps"] == 2
        assert reg.create_critic("bare").config() == {}
    assert not OldStyle.declares_params() and Toy.declares_params() and Bare.declares_params()


def test_old_style_critic_own_config_is_kept():
    class OwnConfig(OldStyle):
        name: ClassVar[str] = "own"

        def __init__(self, level: float = 0.5) -> None:
            super().__init__(level)
            self._config = {"level": level, "source": "own"}

    reg = _registry_with(OwnConfig)
    with pytest.warns(DeprecationWarning):
        critic = reg.create_critic("own", level=0.75)
    assert critic.config() == {"level": 0.75, "source": "own"}


def _image():
    from PIL import Image

    return Image.new("RGB", (4, 4), (1, 2, 3))


def test_higher_is_better_false_is_refused_and_true_is_deprecated():
    with pytest.raises(TypeError, match=r"higher_is_better=False.*return 1 - score"):

        class Lower(Critic):  # noqa: F841 - defining the class is the test
            name: ClassVar[str] = "lower"
            higher_is_better: ClassVar[bool] = False

            def score_batch(self, images, prompts, metadata):
                return []

    with pytest.warns(DeprecationWarning, match="higher_is_better is deprecated"):

        class Upper(Critic):  # noqa: F841
            name: ClassVar[str] = "upper"
            higher_is_better: ClassVar[bool] = True

            def score_batch(self, images, prompts, metadata):
                return []


class Undocumented(Critic):
    name: ClassVar[str] = "undocumented"
    description: ClassVar[str] = "a parameter without a description"

    class Params(CriticParams):
        scale: float = 1.0

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(0.5) for _ in images]


class Lenient(Critic):
    """Declares Params but swallows unknown keywords: the contract must catch it."""

    name: ClassVar[str] = "lenient"
    description: ClassVar[str] = "accepts anything"

    class Params(CriticParams):
        scale: float = Field(1.0, description="a scale")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{k: v for k, v in kwargs.items() if k in self.Params.model_fields})

    def score_batch(self, images, prompts, metadata):
        return [CriticResult(0.5) for _ in images]


def _contract(make):
    from milr.testing import CriticContract

    class Suite(CriticContract):
        def make_critic(self):
            return make()

    return Suite()


def test_contract_checks_the_declaration():
    good = _contract(lambda: Toy(steps=2, token="sk-x"))
    good.test_parameters_are_declared_and_documented()
    good.test_unknown_parameter_is_a_clear_error()
    good.test_config_is_json_and_rebuilds_the_critic()
    with pytest.raises(AssertionError, match="'scale' of 'undocumented' needs a one-line"):
        _contract(Undocumented).test_parameters_are_declared_and_documented()
    with pytest.raises(AssertionError, match="accepted an unknown keyword"):
        _contract(Lenient).test_unknown_parameter_is_a_clear_error()


def test_contract_switched_off_checks_skip_not_pass():
    old = _contract(OldStyle)
    for check in (
        old.test_parameters_are_declared_and_documented,
        old.test_unknown_parameter_is_a_clear_error,
        old.test_config_is_json_and_rebuilds_the_critic,
    ):
        with pytest.raises(pytest.skip.Exception, match="declare"):
            check()
    lazy_off = _contract(Bare)
    lazy_off.deterministic = False
    lazy_off.check_lazy_import = False
    with pytest.raises(pytest.skip.Exception, match="deterministic = False"):
        lazy_off.test_deterministic()
    with pytest.raises(pytest.skip.Exception, match="check_lazy_import = False"):
        lazy_off.test_module_import_is_lazy()


def test_parameters_markdown_table():
    table = parameters_markdown(Toy).splitlines()
    assert table[0] == "| name | type | default | allowed | description |"
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert rows["`steps`"] == "| `steps` | `int` | `3` | >= 1, <= 10 | between 1 and 10 |"
    assert "| `mode` | `'fast' | 'exact'` | `\"fast\"` |" in rows["`mode`"]
    assert "(secret)" in rows["`token`"]
    assert parameters_markdown(Required).splitlines()[2].startswith("| `path` | `str` | required |")
    assert parameters_markdown(Bare) == "This critic takes no parameters."


def test_old_parameter_attributes_still_read_with_a_warning():
    critic = ColorCritic(target="blue", tolerance=40)
    with pytest.warns(
        DeprecationWarning,
        match=r"ColorCritic.tolerance is deprecated; read ColorCritic.params.tolerance",
    ):
        assert critic.tolerance == 40.0
    assert critic.rgb == (30, 70, 220)  # ordinary attributes: no warning, no detour
    with pytest.raises(AttributeError, match="no attribute 'tolerence'"):
        critic.tolerence  # noqa: B018
