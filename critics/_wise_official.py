"""WISE's own judge protocol, read at run time from the user's clone of the WISE repository.

milr never ships WISE's instructions: `load_protocol` parses the clone's grading script with
`ast` (it is never imported or run) and takes from it

- the messages ``build_evaluation_messages(prompt_data, image_base64)`` returns: each message's
  role and its content parts in order, a text part being a string constant or an f-string
  whose only placeholders are ``prompt_data['FIELD']`` (filled from the WISE record's fields,
  e.g. ``Prompt`` and ``Explanation``), an image part ``data:image/png;base64,{image_base64}``;
- the request settings the script passes: ``max_tokens``, ``temperature`` and (WISE_Verified)
  ``chat_template_kwargs``, from a call's keyword arguments or a payload dict literal.

The legacy protocol (the WISE paper's, GPT-4o-2024-05-13) lives in ``WISE_legacy/gpt_eval.py``
(``gpt_eval.py`` at the top of older clones); WISE_Verified's (a vLLM-served judge) in
``vllm_eval.py``. Replies are read as those scripts read them (`parse_legacy`,
`parse_verified`). Anything the reader does not recognise is a one-line `MilrUserError` naming
the script and line.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milr import MilrUserError
from milr.critics.rubrics import RubricReply, RubricReplyError

#: Grading scripts looked for in a clone, per rubric, first found wins.
SCRIPTS: dict[str, tuple[str, ...]] = {
    "wise": ("WISE_legacy/gpt_eval.py", "gpt_eval.py"),
    "wise-verified": ("vllm_eval.py",),
}
FUNCTION = "build_evaluation_messages"
_SETTINGS = ("max_tokens", "temperature", "chat_template_kwargs")


@dataclass(frozen=True)
class Part:
    """A content part: ``text`` pieces (str literals or ``("field", NAME)``) or the image."""

    kind: str  # "text" or "image_url"
    pieces: tuple[Any, ...] = ()
    image_prefix: str = ""


@dataclass(frozen=True)
class Protocol:
    """WISE's messages and request settings as read from one grading script."""

    script: Path
    script_sha256: str
    messages: tuple[tuple[str, tuple[Part, ...]], ...]  # (role, parts)
    settings: dict[str, Any] = field(default_factory=dict)
    rubric: str = "wise"

    @property
    def max_new_tokens(self) -> int:
        """The script's ``max_tokens`` (2000 in WISE_legacy, 500 in WISE_Verified)."""
        return int(self.settings["max_tokens"])

    @property
    def sha256(self) -> str:
        """`instructions_sha256` (what a judge critic records as its template's hash)."""
        return self.instructions_sha256

    def apply(
        self, body: dict[str, Any], prompt: str, metadata: dict[str, Any], explicit: set[str]
    ) -> str:
        """Turn a chat-completions `body` (milr's one user message with the image) into WISE's
        request: its messages with the same image, its ``temperature`` (unless the critic's own
        was given) and ``chat_template_kwargs`` (top-level, as WISE posts it; the openai client
        takes it as ``extra_body``). Returns the text sent (hashed into the details)."""
        url = body["messages"][0]["content"][1]["image_url"]["url"]
        body["messages"], text = self.render(metadata, url, prompt)
        if "temperature" not in explicit and "temperature" in self.settings:
            body["temperature"] = self.settings["temperature"]
        if "chat_template_kwargs" in self.settings:
            body["extra_body"] = {"chat_template_kwargs": self.settings["chat_template_kwargs"]}
        return text

    def parse(self, content: Any) -> RubricReply:
        """The reply read as this protocol's script reads it (`parse_legacy`/`parse_verified`)."""
        if not isinstance(content, str):
            raise RubricReplyError("the reply has no text")
        return parse_verified(content) if self.rubric == "wise-verified" else parse_legacy(content)

    @property
    def fields(self) -> list[str]:
        """The record fields the instructions are filled with (e.g. Prompt, Explanation)."""
        out = []
        for _, parts in self.messages:
            for part in parts:
                out += [p[1] for p in part.pieces if isinstance(p, tuple)]
        return list(dict.fromkeys(out))

    @property
    def instructions_sha256(self) -> str:
        """SHA-256 of the instructions as read (roles, literal texts, field placeholders)."""
        text = repr([(role, [(p.kind, p.pieces) for p in parts]) for role, parts in self.messages])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def render(
        self, metadata: dict[str, Any], image_url: str, prompt: str
    ) -> tuple[list[dict[str, Any]], str]:
        """The chat messages for one image and the concatenated text (for hashing)."""
        messages, texts = [], []
        for role, parts in self.messages:
            content: list[dict[str, Any]] = []
            for part in parts:
                if part.kind == "image_url":
                    content.append({"type": "image_url", "image_url": {"url": image_url}})
                    continue
                text = "".join(
                    p if isinstance(p, str) else self._field(metadata, p[1], prompt)
                    for p in part.pieces
                )
                texts.append(text)
                content.append({"type": "text", "text": text})
            messages.append({"role": role, "content": content})
        return messages, "\n".join(texts)

    def _field(self, metadata: dict[str, Any], name: str, prompt: str) -> str:
        if name in metadata and metadata[name] is not None:
            return str(metadata[name])
        if name == "Prompt":
            return prompt
        raise MilrUserError(
            f"api-judge critic: WISE's instructions ({self.script.name}) need the record field "
            f"{name!r}, which this image's metadata lacks; run a WISE suite (its JSON records "
            "carry Prompt and Explanation)"
        )


def find_script(repo: str, rubric: str) -> Path:
    """The grading script of `rubric` in the clone `repo` (`MilrUserError` when absent)."""
    root = Path(repo).expanduser()
    if not root.is_dir():
        raise MilrUserError(
            f"api-judge critic: wise_repo={repo!r} is not a directory; pass the path of your "
            "clone of https://github.com/PKU-YuanGroup/WISE"
        )
    for rel in SCRIPTS[rubric]:
        if (root / rel).is_file():
            return root / rel
    raise MilrUserError(
        f"api-judge critic: wise_repo={repo!r} holds no {' or '.join(SCRIPTS[rubric])}; pass the "
        "path of your clone of https://github.com/PKU-YuanGroup/WISE"
    )


def wise_protocol(
    critic: str, repo: str | None, rubric: str, template: str | None, template_file: str | None
) -> Protocol | None:
    """The protocol of a judge critic's ``wise_repo`` (None without one); `MilrUserError` when
    the rubric is not a WISE one or a template is given as well."""
    if repo is None:
        return None
    if rubric not in SCRIPTS:
        raise MilrUserError(
            f"{critic} critic: wise_repo= sends WISE's instructions and needs rubric=wise or "
            f"rubric=wise-verified, not rubric={rubric!r}"
        )
    if template is not None or template_file is not None:
        raise MilrUserError(
            f"{critic} critic: wise_repo= reads WISE's own instructions; drop "
            "template=/template_file= (or wise_repo=)"
        )
    return load_protocol(repo, rubric)


def load_protocol(repo: str, rubric: str) -> Protocol:
    """Read WISE's messages and settings for `rubric` (``wise`` or ``wise-verified``)."""
    script = find_script(repo, rubric)
    raw = script.read_bytes()
    try:
        tree = ast.parse(raw, filename=str(script))
    except SyntaxError as exc:
        raise MilrUserError(
            f"api-judge critic: {script} is not Python that milr can read (line {exc.lineno}: "
            f"{exc.msg}); use an unmodified clone of the WISE repository"
        ) from None
    reader = _Reader(script)
    func = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == FUNCTION),
        None,
    )
    if func is None or len(func.args.args) < 2:
        raise reader.error(None, f"no function {FUNCTION}(prompt_data, image_base64)")
    record_arg, image_arg = func.args.args[0].arg, func.args.args[1].arg
    ret = next((n for n in ast.walk(func) if isinstance(n, ast.Return)), None)
    if ret is None or not isinstance(ret.value, ast.List):
        raise reader.error(func, f"{FUNCTION} does not return a list of messages")
    messages = tuple(reader.message(m, record_arg, image_arg) for m in ret.value.elts)
    if not messages:
        raise reader.error(ret, f"{FUNCTION} returns no messages")
    return Protocol(
        script, hashlib.sha256(raw).hexdigest(), messages, reader.settings(tree), rubric
    )


class _Reader:
    def __init__(self, script: Path) -> None:
        self.script = script

    def error(self, node: ast.AST | None, what: str) -> MilrUserError:
        where = (
            f"{self.script} line {node.lineno}"
            if node is not None and hasattr(node, "lineno")
            else str(self.script)
        )
        return MilrUserError(
            f"api-judge critic: cannot read WISE's judge instructions from {where}: {what}; "
            "use an unmodified clone of the WISE repository"
        )

    def _dict(self, node: ast.AST) -> dict[str, ast.AST]:
        if not isinstance(node, ast.Dict):
            raise self.error(node, "expected a dict literal")
        out: dict[str, ast.AST] = {}
        for k, v in zip(node.keys, node.values):
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                raise self.error(node, "expected string keys")
            out[k.value] = v
        return out

    def message(
        self, node: ast.AST, record_arg: str, image_arg: str
    ) -> tuple[str, tuple[Part, ...]]:
        d = self._dict(node)
        role = d.get("role")
        if not (isinstance(role, ast.Constant) and isinstance(role.value, str)):
            raise self.error(node, "a message without a string role")
        content = d.get("content")
        if isinstance(content, ast.Constant) and isinstance(content.value, str):
            return role.value, (Part("text", (content.value,)),)
        if isinstance(content, ast.JoinedStr):
            return role.value, (Part("text", self.text(content, record_arg)),)
        if not isinstance(content, ast.List):
            raise self.error(node, "a message content that is neither text nor a list of parts")
        parts = []
        for item in content.elts:
            p = self._dict(item)
            kind = p.get("type")
            kind_value = kind.value if isinstance(kind, ast.Constant) else None
            if kind_value == "text":
                parts.append(Part("text", self.text(p.get("text"), record_arg)))
            elif kind_value == "image_url":
                url = self._dict(p.get("image_url") or ast.Dict(keys=[], values=[])).get("url")
                parts.append(Part("image_url", image_prefix=self.image(url, image_arg)))
            else:
                raise self.error(item, f"a content part of type {kind_value!r}")
        return role.value, tuple(parts)

    def text(self, node: ast.AST | None, record_arg: str) -> tuple[Any, ...]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return (node.value,)
        if not isinstance(node, ast.JoinedStr):
            raise self.error(node, "a text part that is not a string or an f-string")
        pieces: list[Any] = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                pieces.append(v.value)
                continue
            assert isinstance(v, ast.FormattedValue)
            e = v.value
            if (
                v.conversion == -1
                and v.format_spec is None
                and isinstance(e, ast.Subscript)
                and isinstance(e.value, ast.Name)
                and e.value.id == record_arg
                and isinstance(e.slice, ast.Constant)
                and isinstance(e.slice.value, str)
            ):
                pieces.append(("field", e.slice.value))
            else:
                raise self.error(v, f"a placeholder other than {record_arg}['FIELD']")
        return tuple(pieces)

    def image(self, node: ast.AST | None, image_arg: str) -> str:
        if (
            isinstance(node, ast.JoinedStr)
            and len(node.values) == 2
            and isinstance(node.values[0], ast.Constant)
            and isinstance(node.values[1], ast.FormattedValue)
            and isinstance(node.values[1].value, ast.Name)
            and node.values[1].value.id == image_arg
        ):
            prefix = str(node.values[0].value)
            if prefix == "data:image/png;base64,":
                return prefix
        raise self.error(node, "an image part other than data:image/png;base64,{image}")

    def settings(self, tree: ast.AST) -> dict[str, Any]:
        """``max_tokens``, ``temperature``, ``chat_template_kwargs`` from keyword arguments of a
        call or keys of a dict literal (the first found of each)."""
        found: dict[str, Any] = {}
        for node in ast.walk(tree):
            pairs: list[tuple[str, ast.AST]] = []
            if isinstance(node, ast.Call):
                pairs = [(k.arg, k.value) for k in node.keywords if k.arg in _SETTINGS]
            elif isinstance(node, ast.Dict):
                pairs = [
                    (k.value, v)
                    for k, v in zip(node.keys, node.values)
                    if isinstance(k, ast.Constant) and k.value in _SETTINGS
                ]
            for key, value in pairs:
                if key in found:
                    continue
                try:
                    found[key] = ast.literal_eval(value)
                except ValueError:
                    raise self.error(value, f"{key} is not a literal") from None
        if "max_tokens" not in found:
            raise self.error(None, "no max_tokens in the request")
        return found


# -- replies, read as WISE's scripts read them -------------------------------------------------

_LEGACY = re.compile(r"\*{0,2}(Consistency|Realism|Aesthetic Quality)\*{0,2}\s*[:：]?\s*(\d)", re.I)
_VERIFIED = re.compile(r"\*{0,2}Score\*{0,2}\s*[:：]?\s*([01])\b", re.I)
_THINK = re.compile(r"<think>.*?</think>\s*", re.S)


def parse_legacy(text: str) -> RubricReply:
    """WISE_legacy's reply format: ``Consistency: 2`` / ``Realism: 1`` / ``Aesthetic Quality:
    0`` (the last of each name wins), else three bare lines of 0-2 in that order. The score is
    the WiScore (0.7 C + 0.2 R + 0.1 A) / 2."""
    grades: dict[str, float] = {}
    for name, value in _LEGACY.findall(text):
        grades[name.lower().replace(" ", "_")] = float(value)
    if not grades:
        nums = re.findall(r"(?m)^\s*([0-2])\s*$", text)
        if len(nums) >= 3:
            grades = dict(zip(("consistency", "realism", "aesthetic_quality"), map(float, nums)))
    missing = [k for k in ("consistency", "realism", "aesthetic_quality") if k not in grades]
    if missing:
        raise RubricReplyError(f"WISE's reply format: the grades {missing} are missing")
    for k, v in grades.items():
        if not 0 <= v <= 2:
            raise RubricReplyError(f"WISE's reply format: {k} {v:g} is outside 0-2")
    score = (7 * grades["consistency"] + 2 * grades["realism"] + grades["aesthetic_quality"]) / 20
    return RubricReply(score, None, {"grades": grades, "reply_format": "wise-legacy"})


def parse_verified(text: str) -> RubricReply:
    """WISE_Verified's reply format: ``Score: 0`` or ``Score: 1`` (thinking tags dropped), else a
    single bare line ``0``/``1``. The score is that binary WiScore; passed when 1."""
    text = _THINK.sub("", text)
    text = re.sub(r"</think>\s*", "", text).strip()
    match = _VERIFIED.search(text)
    if match:
        value = float(match.group(1))
    else:
        nums = re.findall(r"(?m)^\s*([01])\s*$", text)
        if len(nums) != 1:
            raise RubricReplyError("WISE_Verified's reply format: no 'Score: 0' or 'Score: 1'")
        value = float(nums[0])
    return RubricReply(value, value == 1.0, {"score": value, "reply_format": "wise-verified"})
