"""Declared critic parameters: one typed model per critic, validated once, listed for the CLI/docs.

A critic declares its constructor keywords as a nested ``Params`` class (the spelling of
simonw/llm's ``Options``)::

    class ColorCritic(milr.Critic):
        class Params(milr.CriticParams):
            target: str = Field("red", description="colour name or '#rrggbb'")
            tolerance: float = Field(100.0, gt=0, description="RGB distance counted as a match")

        params: Params

        def setup(self) -> None:  # derived state, after validation
            self.rgb = parse(self.params.target)

``Critic.__init__(**kwargs)`` validates the keywords into ``self.params`` (a frozen model) and
then calls ``setup()``. Bad values become one-line `MilrUserError`s naming the critic, the
parameter, the value and the allowed range; ``config()`` is the JSON dump of the params with
secrets left out. The validation rules, in one place:

- unknown keywords are refused, with the known ones listed and the closest one suggested;
- a bool is never a number (``True`` is not 1.0) unless the field's type admits ``bool``;
- numbers are finite (no NaN/inf); ints are accepted for floats, integral floats for ints;
- values from spec strings (JSON-parsed by `milr.specs`) coerce to the declared type, so
  ``text=123`` reaches a ``str`` field as ``"123"``;
- a required field (no default) given as None is reported as missing, with the field's
  ``json_schema_extra={"hint": "..."}`` (how to get the value) or else its description;
- a field is secret when typed ``pydantic.SecretStr`` or declared with
  ``json_schema_extra={"secret": True}``; secret values never appear in errors or ``config()``.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from milr.errors import MilrUserError

__all__ = [
    "BatchSize",
    "CriticParams",
    "Device",
    "dtype_param",
    "VerdictThreshold",
    "critic_parameters",
    "format_constraints",
    "is_secret",
    "parameters_markdown",
    "validate_params",
]


class CriticParams(BaseModel):
    """Base of every critic's parameter declaration (pydantic v2, unknown keys forbidden, frozen).

    Subclass it as a nested class named ``Params`` in a `milr.Critic`; give every field a
    default (or none for a required one), a type, bounds (``Field(gt=..., le=...)``) and a
    one-line ``description``. Cross-field rules go in a ``model_validator(mode="after")``
    raising ``ValueError`` with a one-line message.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        coerce_numbers_to_str=True,
        validate_default=True,
    )

    @field_validator("*", mode="before")
    @classmethod
    def _bool_is_not_a_number(cls, value: Any, info: Any) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if not _admits_bool(annotation) and _admits_number(annotation):
                raise ValueError("is a boolean, not a number")
        return value


# -- parameter types shared by many critics (one rule each) -------------------------------------

#: An optional verdict threshold on the [0, 1] score: ``passed = score >= threshold``.
VerdictThreshold = Annotated[
    float | None,
    Field(ge=0, le=1, description="verdict passes when score >= threshold; None: no verdict"),
]
#: Images per forward pass of a model-backed critic.
BatchSize = Annotated[int, Field(ge=1, description="images per forward pass")]
#: A torch device spelling; resolved (and checked against the hardware) at first use.
Device = Annotated[
    str,
    Field(description="torch device: auto (CUDA when available), cpu, cuda, cuda:N"),
]


def dtype_param(*allowed: str) -> Any:
    """A dtype parameter type: every `milr.devices` spelling in, the canonical name stored.

    ``dtype_param("float32", "float16")`` also restricts the result (no arguments: any dtype or
    ``auto``). Generators and critics thereby accept the same words (``bf16``, ``half``...)::

        dtype: dtype_param("float32", "bfloat16") = Field("float32", description="precision")
    """
    from pydantic import BeforeValidator

    from milr.devices import DTYPE_NAMES, dtype_name

    ok = tuple(allowed) or DTYPE_NAMES

    def canonical(value: Any) -> str:
        try:
            return dtype_name(value, allowed=ok)
        except MilrUserError:
            raise ValueError(
                f"must be one of {', '.join(ok)} (aliases such as bf16, fp16, half, fp32 work too)"
            ) from None

    return Annotated[Literal[ok], BeforeValidator(canonical)]  # type: ignore[valid-type]


# -- annotation helpers -------------------------------------------------------------------------


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return get_args(annotation)
    if origin is typing.Annotated:
        return _union_args(get_args(annotation)[0])
    return (annotation,)


def _admits_bool(annotation: Any) -> bool:
    return any(
        a is bool
        or a is Any
        or (get_origin(a) is Literal and any(isinstance(x, bool) for x in get_args(a)))
        for a in _union_args(annotation)
    )


def _admits_number(annotation: Any) -> bool:
    return any(a in (int, float) for a in _union_args(annotation))


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a parameter's type: ``float``, ``int | None``, ``'a' | 'b'``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in get_args(annotation))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin is typing.Annotated:
        return type_name(get_args(annotation)[0])
    if annotation is SecretStr:
        return "secret str"
    if origin is not None:
        args = ", ".join(type_name(a) for a in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def is_secret(field: FieldInfo) -> bool:
    """True for a field typed `SecretStr` or declared with ``json_schema_extra={"secret": True}``."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret"):
        return True
    return any(a is SecretStr for a in _union_args(field.annotation))


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _metadata(field: FieldInfo) -> list[Any]:
    """The field's constraint objects, including those inside ``Annotated[...] | None``."""
    items = list(field.metadata)
    for arg in _union_args(field.annotation) if len(_union_args(field.annotation)) > 1 else ():
        if get_origin(arg) is typing.Annotated:
            for extra in get_args(arg)[1:]:
                items.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
    return items


def _constraints(field: FieldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in _metadata(field):
        for key, _ in _BOUNDS:
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
        for key in ("min_length", "max_length", "pattern"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def format_constraints(constraints: dict[str, Any]) -> str:
    """``{"gt": 0, "le": 1}`` -> ``"> 0, <= 1"`` (for tables and help text)."""
    parts = [f"{sym} {constraints[key]}" for key, sym in _BOUNDS if key in constraints]
    if "min_length" in constraints:
        parts.append(f"length >= {constraints['min_length']}")
    if "max_length" in constraints:
        parts.append(f"length <= {constraints['max_length']}")
    if "pattern" in constraints:
        parts.append(f"matches {constraints['pattern']!r}")
    return ", ".join(parts)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def critic_parameters(cls: type[Any]) -> list[dict[str, Any]]:
    """The declared parameters of a critic class, for ``milr critics`` and the docs.

    Returns one dict per parameter, required ones first, otherwise in declaration order, with keys ``name``, ``type`` (readable
    string), ``default`` (JSON-able; None when ``required``), ``required`` (bool),
    ``description`` (one line), ``constraints`` (``{"gt": 0, "le": 1}``-style dict) and
    ``secret`` (bool; a secret's default is never shown). An undeclared (old-style) critic
    returns an empty list.
    """
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, CriticParams)):
        return []
    out = []
    for name, field in params.model_fields.items():
        required = field.is_required()
        secret = is_secret(field)
        default = None if required or secret else field.get_default(call_default_factory=True)
        out.append(
            {
                "name": name,
                "type": type_name(field.annotation),
                "default": _jsonable(default),
                "required": required,
                "description": field.description or "",
                "constraints": _constraints(field),
                "secret": secret,
            }
        )
    return sorted(out, key=lambda row: not row["required"])  # stable: declaration order kept


def parameters_markdown(cls: type[Any]) -> str:
    """A Markdown table of a critic's declared parameters (what the docs pages show).

    Columns: name, type, default (``required`` for a required one, ``secret`` hides a secret's
    default), allowed range, description. An undeclared critic gives a one-line note instead.
    """
    rows = critic_parameters(cls)
    if not rows:
        declared = getattr(cls, "declares_params", lambda: False)()
        return "This critic takes no parameters." if declared else "Parameters not declared."

    def cell(text: str) -> str:  # outside code spans a '|' would split the cell
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| name | type | default | allowed | description |", "|---|---|---|---|---|"]
    for row in rows:
        if row["required"]:
            default = "required"
        elif row["secret"]:
            default = "(secret)"
        else:
            default = f"`{json.dumps(row['default'], ensure_ascii=False)}`"
        allowed = format_constraints(row["constraints"])
        lines.append(
            f"| `{row['name']}` | `{row['type']}` | {cell(default)} | "
            f"{cell(allowed) or '—'} | {cell(row['description'])} |"
        )
    return "\n".join(lines)


# -- validation ---------------------------------------------------------------------------------

_TYPE_WORDS = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "finite_number": "must be a finite number",
    "list_type": "must be a list",
    "dict_type": "must be a table/dict",
}
_BOUND_TYPES = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _closest(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _message(critic: str, model: type[CriticParams], error: Any, secret_names: set[str]) -> str:
    loc = error.get("loc") or ()
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    field = str(loc[0]) if loc else None
    if kind == "extra_forbidden" and field is not None:
        known = list(model.model_fields)
        listing = ", ".join(known) if known else "(none: this critic takes no parameters)"
        return f"critic {critic!r}: unknown parameter {field!r}; known: {listing}{_closest(field, known)}"
    if field is None:  # a model-level (cross-field) rule
        reason = ctx.get("error", error.get("msg", ""))
        return f"critic {critic!r}: {reason}"
    info = model.model_fields.get(field)
    if (
        info is not None
        and info.is_required()
        and (kind == "missing" or error.get("input") is None)
    ):
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        hint = extra.get("hint") or info.description
        return f"critic {critic!r}: parameter {field!r} is required" + (f": {hint}" if hint else "")
    value = "***" if field in secret_names else repr(error.get("input"))
    if kind in _BOUND_TYPES:
        key, sym = _BOUND_TYPES[kind]
        declared = _constraints(model.model_fields[field]) if field in model.model_fields else {}
        rule = f"must be {sym} {declared.get(key, ctx.get(key))}"
    elif kind in _TYPE_WORDS:
        rule = _TYPE_WORDS[kind]
    elif kind == "literal_error":
        rule = f"must be one of {ctx.get('expected', '')}"
    elif kind == "value_error":
        rule = str(ctx.get("error", error.get("msg", "")))
    else:
        msg = str(error.get("msg", "is invalid"))
        rule = msg[:1].lower() + msg[1:]
    return f"critic {critic!r}: parameter {field!r}={value} {rule}"


def validate_params(model: type[CriticParams], critic: str, kwargs: dict[str, Any]) -> CriticParams:
    """Validate keyword arguments into ``model``; raise one-line `MilrUserError` on any problem.

    Every problem found is reported, joined by ``"; "`` on one line.
    """
    try:
        return model(**kwargs)
    except ValidationError as exc:
        secrets = {n for n, f in model.model_fields.items() if is_secret(f)}
        seen: list[str] = []
        for err in exc.errors(include_url=False):
            msg = _message(critic, model, err, secrets)
            if msg not in seen:
                seen.append(msg)
        prefix = f"critic {critic!r}: "
        text = seen[0] + "".join(
            "; " + (m[len(prefix) :] if m.startswith(prefix) else m) for m in seen[1:]
        )
        raise MilrUserError(text) from None


def dump_params(params: CriticParams) -> dict[str, Any]:
    """JSON-serialisable dict of the values, secrets left out."""
    fields = type(params).model_fields
    keep = {n for n, f in fields.items() if not is_secret(f)}
    return _jsonable(params.model_dump(mode="json", include=keep))  # type: ignore[no-any-return]
