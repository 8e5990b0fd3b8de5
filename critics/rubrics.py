"""Judge rubrics shared by ``judge``, ``self-judge`` and ``api-judge``.

A rubric is a prompt template plus a parser that turns the judge's answer into a milr score in
[0, 1] (1 best) and, where the rubric has one, a pass/fail verdict. Every judge critic takes the
rubric by name (``rubric=yesno|wise|wise-verified|likert5|checklist``), a template string (``template=``) or a
template file (``template_file=``, for a paper's exact wording); the parsers live only here.

================  ==========================================  =====================================
rubric            the judge answers                           milr score, verdict
================  ==========================================  =====================================
``yesno``         "yes" or "no" (VQAScore; Lin et al. 2024)   ``P(yes) / (P(yes) + P(no))`` from
                                                              token probabilities when yes + no
                                                              hold ``min_yes_no_share`` of them,
                                                              else 1.0 / 0.0 from the answer;
                                                              verdict ``score >= 0.5``
``wise``          consistency, realism, aesthetic quality,    WiScore ``(0.7 C + 0.2 R + 0.1 A)/2``
                  each 0-2, as JSON or as WISE's plain lines  (WISE, arXiv 2503.07265 §3.3); none
                  ``Consistency: 2`` (``**bold**`` allowed)
``wise-verified`` ``Score: 0`` or ``Score: 1`` (WISE_Verified's  the binary score; verdict ``== 1``
                  binary WiScore)
``likert5``       an analysis ending in ``Final Score: s``,   ``(s - 1) / 4``; none
                  s from 1 to 5 (UnifiedReward's format,
                  arXiv 2503.05236)
``checklist``     a check of each requirement and JSON        ``Score + 1`` (1.0 match, 0.0
                  ``{"Score": 0}`` (match) or ``-1``          mismatch); verdict ``Score == 0``;
                  (MILR's SelfReward, arXiv 2509.22761 §4)    an unreadable answer counts as a fail
================  ==========================================  =====================================

Templates hold ``{prompt}`` (required) and, for ``wise`` and ``wise-verified``, optionally ``{explanation}``, which is
replaced by a line carrying the metadata's ``Explanation`` (WISE's note of what the image must
show) or by nothing when there is none. Placeholders are replaced literally, so a template may
contain JSON braces. The default templates are milr's own wording.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milr.errors import ExternalServiceError, MilrUserError

__all__ = [
    "RUBRICS",
    "JudgeReplyError",
    "Rubric",
    "RubricReply",
    "RubricReplyError",
    "get_rubric",
    "load_template",
    "normalize_token",
    "parse_checklist",
    "parse_likert5",
    "parse_wise",
    "parse_yesno_text",
    "wiscore",
    "yes_no_from_logprobs",
]


class JudgeReplyError(ExternalServiceError):
    """A judge (a server, or a local model's written answer) failed for some images.

    ``failures`` holds ``(index in the batch, one-line reason)``; the CLI prints one line per
    failed image, exit 1 (the judge's answer is not the user's input, nor a milr bug).
    """


class RubricReplyError(ValueError):
    """The judge's answer cannot be read under the rubric (the message says what is missing)."""


@dataclass
class RubricReply:
    """A parsed answer: ``score`` in [0, 1], an optional verdict, and what was read."""

    score: float
    passed: bool | None
    details: dict[str, Any] = field(default_factory=dict)


# -- token normalisation (yes/no) -------------------------------------------------------------

#: Characters tokenizers use to spell whitespace inside a token: byte-level BPE (GPT-2, Llama 3,
#: Qwen: ``Ġ`` space, ``Ċ`` newline, ``ĉ`` tab, ``č`` carriage return), SentencePiece (``▁``),
#: and the Unicode spaces a detokenizer may leave (no-break, ideographic, zero-width).
SPACE_MARKS = "\u0120\u010a\u0109\u010d\u2581\u00a0\u3000\u200b\u200c\u200d\ufeff"
_SPACE_TABLE = {ord(c): " " for c in SPACE_MARKS}
#: Word-end marker of CLIP-style BPE vocabularies (``no</w>``).
_WORD_END = "</w>"


def normalize_token(token: str) -> str:
    """A token as a plain lower-case word: space marks and edge punctuation removed.

    ``"ĠNo"``, ``"▁no"``, ``" No."``, ``"no</w>"`` and ``"NO"`` all become ``"no"``.
    """
    text = unicodedata.normalize("NFKC", str(token)).translate(_SPACE_TABLE)
    if text.endswith(_WORD_END):
        text = text[: -len(_WORD_END)]
    return text.strip().strip(".,!?:;\"'`*()[]").strip().lower()


def yes_no_from_logprobs(
    alternatives: Iterable[tuple[str, float]],
    yes_words: Iterable[str] = ("yes",),
    no_words: Iterable[str] = ("no",),
) -> tuple[float, float] | None:
    """``(P(yes), P(no))`` summed over the alternatives of one answer position, or None.

    ``alternatives`` are ``(token, log-probability)`` pairs (an OpenAI ``top_logprobs`` list);
    tokens are compared after `normalize_token`, so every spelling of a word (``Yes``,
    ``Ġyes``, ``▁Yes``) counts once toward it. Returns None when neither word appears.
    """
    yes = {normalize_token(w) for w in yes_words}
    no = {normalize_token(w) for w in no_words}
    p_yes = p_no = 0.0
    seen: set[str] = set()
    for token, logprob in alternatives:
        if (
            isinstance(logprob, bool)
            or not isinstance(logprob, (int, float))
            or math.isnan(logprob)
            or token in seen  # a server listing one token twice must not count it twice
        ):
            continue
        seen.add(token)
        word = normalize_token(token)
        if word in yes:
            p_yes += math.exp(min(float(logprob), 0.0))
        elif word in no:
            p_no += math.exp(min(float(logprob), 0.0))
    if p_yes + p_no <= 0:
        return None
    return p_yes, p_no


def parse_yesno_text(text: str) -> float:
    """1.0 for an answer whose first word is "yes", 0.0 for "no"; otherwise `RubricReplyError`."""
    words = re.findall(
        r"[a-z]+", unicodedata.normalize("NFKC", text).translate(_SPACE_TABLE).lower()
    )
    if words and words[0] == "yes":
        return 1.0
    if words and words[0] == "no":
        return 0.0
    raise RubricReplyError(f"the answer {text[:80]!r} starts with neither yes nor no")


# -- WISE --------------------------------------------------------------------------------------

WISE_WEIGHTS = {"consistency": 0.7, "realism": 0.2, "aesthetic_quality": 0.1}
_WISE_KEYS = {
    "consistency": "consistency",
    "realism": "realism",
    "aesthetic_quality": "aesthetic_quality",
    "aesthetic": "aesthetic_quality",
    "aesthetics": "aesthetic_quality",
}
# one grade per line: optional bullet/markdown, the name, a separator, the number
_WISE_LINE = re.compile(
    r"^[\s>*_#\-]*(consistency|realism|aesthetic[\s_]*quality|aesthetics?)[\s*_]*"
    r"(?:\([^)\n]*\))?[\s*_]*[:=\uff1a][\s*_]*(-?\d+(?:\.\d+)?)",
    re.I | re.M,
)


def _grade(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RubricReplyError(f"{name!r} is {value!r}, not a number from 0 to 2")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise RubricReplyError(f"{name!r} is {value!r}, not a number from 0 to 2") from None
    if math.isnan(number) or not 0 <= number <= 2:
        raise RubricReplyError(f"{name!r} is {value!r}, outside 0-2")
    return number


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in the text (code fences and prose around them allowed)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def parse_wise(text: str) -> dict[str, float]:
    """The three 0-2 grades from a JSON object or from WISE's plain lines.

    JSON: ``{"consistency": 2, "realism": 1, "aesthetic_quality": 0}`` (keys in any case,
    ``aesthetic``/``aesthetics`` accepted). Plain lines: ``Consistency: 2``, ``**Realism:** 1``,
    ``- Aesthetic Quality: 0``; the last line of each name wins (judges restate the scale first).
    """
    for obj in reversed(_json_objects(text)):
        grades: dict[str, float] = {}
        for key, value in obj.items():
            norm = _WISE_KEYS.get(re.sub(r"[\s\-]+", "_", str(key).strip().lower()))
            if norm is not None:
                grades[norm] = _grade(str(key), value)
        if grades:
            missing = [k for k in WISE_WEIGHTS if k not in grades]
            if missing:
                raise RubricReplyError(f"the reply's JSON lacks {missing}")
            return grades
    lines: dict[str, float] = {}
    for match in _WISE_LINE.finditer(text):
        key = _WISE_KEYS[re.sub(r"[\s_]+", "_", match.group(1).lower())]
        lines[key] = _grade(match.group(1), match.group(2))
    if not lines:
        raise RubricReplyError(
            "no grades in the reply: expected JSON like "
            '{"consistency": 2, "realism": 1, "aesthetic_quality": 0} or lines like '
            "'Consistency: 2'"
        )
    missing = [k for k in WISE_WEIGHTS if k not in lines]
    if missing:
        raise RubricReplyError(f"the reply lacks the grades {missing}")
    return lines


def wiscore(grades: dict[str, float]) -> float:
    """WiScore = (0.7 C + 0.2 R + 0.1 A) / 2, in [0, 1] (WISE §3.3)."""
    # integer weights (7, 2, 1)/20 keep 2/2/2 at exactly 1.0
    return (7 * grades["consistency"] + 2 * grades["realism"] + grades["aesthetic_quality"]) / 20


# -- WISE_Verified (binary) --------------------------------------------------------------------

_BINARY_SCORE = re.compile(r"score[\s*_]*[:=\uff1a]?[\s*_]*([01])\b", re.I)


def parse_binary_score(text: str) -> float:
    """WISE_Verified's binary score: the last ``Score: 0|1`` (thinking dropped), else a lone
    ``0``/``1`` line; `RubricReplyError` otherwise."""
    text = re.sub(r"<think>.*?</think>\s*", "", text, flags=re.S)
    matches = _BINARY_SCORE.findall(text)
    if matches:
        return float(matches[-1])
    lone = re.findall(r"(?m)^\s*([01])\s*$", text)
    if len(lone) == 1:
        return float(lone[0])
    raise RubricReplyError("no 'Score: 0' or 'Score: 1' in the reply")


# -- likert5 (UnifiedReward) -------------------------------------------------------------------

_FINAL_SCORE = re.compile(
    r"final[\s_]*score[\s*_]*[:=\uff1a]?[\s*_]*(-?\d+(?:\.\d+)?)(\s*/\s*5(?:\.0+)?)?", re.I
)


def parse_likert5(text: str) -> float:
    """The 1-5 ``Final Score`` (the last one in the reply), e.g. ``Final Score: 4`` or ``**Final
    Score:** 4.5/5``; `RubricReplyError` when absent or outside 1-5."""
    matches = list(_FINAL_SCORE.finditer(text))
    if not matches:
        raise RubricReplyError("no 'Final Score: N' (N from 1 to 5) in the reply")
    value = float(matches[-1].group(1))
    if not 1 <= value <= 5:
        raise RubricReplyError(f"Final Score {matches[-1].group(1)} is outside 1-5")
    return value


# -- checklist (SelfReward) --------------------------------------------------------------------

_CHECKLIST_SCORE = re.compile(r"[\"']?score[\"']?\s*:\s*[\"']?(-?\d+(?:\.\d+)?)", re.I)


def parse_checklist(text: str) -> int | None:
    """The SelfReward ``Score`` (0 match, -1 mismatch), or None when the reply has none.

    Read from the last JSON object with a ``Score`` key, else from the last ``"Score": N`` in
    the text (judges sometimes write JSON with comments). Any other value is unreadable.
    """
    for obj in reversed(_json_objects(text)):
        for key, value in obj.items():
            if str(key).strip().lower() == "score":
                return _checklist_value(value)
    matches = list(_CHECKLIST_SCORE.finditer(text))
    return _checklist_value(matches[-1].group(1)) if matches else None


def _checklist_value(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number in (0.0, -1.0) else None


# -- templates ---------------------------------------------------------------------------------

YESNO_TEMPLATE = 'Does this image show "{prompt}"? Answer with a single word: yes or no.'

WISE_TEMPLATE = """You grade images made by a text-to-image model. Look at the image and judge it against the prompt.

Prompt: {prompt}
{explanation}
Give three whole-number grades from 0 to 2:
- consistency: how faithfully the image shows what the prompt asks for (2 fully, 1 partly, 0 not at all)
- realism: how realistic and physically plausible the image is (2 very, 1 somewhat, 0 not)
- aesthetic_quality: how well composed and pleasing the image is (2 very, 1 somewhat, 0 not)

Answer with JSON only, in this form: {"consistency": 0, "realism": 0, "aesthetic_quality": 0}"""

WISE_EXPLANATION = "What the image should show (explanation): {explanation}\n"

WISE_VERIFIED_TEMPLATE = """You grade images made by a text-to-image model for prompts that need world knowledge (culture, time, space, biology, physics, chemistry). The prompt may describe its subject indirectly; the explanation says what a correct image shows.

Prompt: {prompt}
{explanation}
Answer 1 when the image shows what the prompt and the explanation call for and is clear enough to judge (no collapsed or garbled main objects); otherwise 0. Answer with one line only: Score: 0 or Score: 1"""

LIKERT5_TEMPLATE = """You are rating how well an image matches its text prompt.

Prompt: {prompt}

Describe briefly which parts of the prompt the image gets right and which it gets wrong, then rate the match from 1 (no match) to 5 (perfect match). End your answer with a line of the form:
Final Score: N"""

CHECKLIST_TEMPLATE = """Check whether the image follows the prompt exactly.

Prompt: {prompt}

First list every requirement the prompt states (objects, their counts, colours and other attributes, and positions), and say for each one whether the image meets it. Then answer with JSON on the last line: {"Score": 0} if the image meets every requirement, {"Score": -1} if it misses any."""


@dataclass(frozen=True)
class Rubric:
    """One rubric: its default template, whether the judge writes free text, and its parser.

    ``generates`` is False only for ``yesno``, which local judges read from next-token
    probabilities; the others need the judge to write (greedy, at most ``max_new_tokens``).
    """

    name: str
    default_template: str
    generates: bool
    max_new_tokens: int
    description: str

    def render(self, template: str, prompt: str, metadata: dict[str, Any] | None = None) -> str:
        """The judge text for one prompt: placeholders replaced literally."""
        text = template.replace("{prompt}", prompt)
        if "{explanation}" in text:
            meta = metadata or {}
            explanation = meta.get("Explanation") or meta.get("explanation")
            line = (
                WISE_EXPLANATION.replace("{explanation}", str(explanation)) if explanation else ""
            )
            text = text.replace("{explanation}", line)
        return text

    def parse(self, text: str) -> RubricReply:
        """Score a written answer; raises `RubricReplyError` when it cannot be read
        (``checklist`` never raises: an unreadable answer is a fail, as in SelfReward)."""
        if not isinstance(text, str):
            raise RubricReplyError("the reply has no text")
        if self.name == "yesno":
            score = parse_yesno_text(text)
            return RubricReply(score, score >= 0.5, {"method": "answer"})
        if self.name == "wise":
            grades = parse_wise(text)
            return RubricReply(wiscore(grades), None, {"grades": grades})
        if self.name == "wise-verified":
            value = parse_binary_score(text)
            return RubricReply(value, value == 1.0, {"score": value})
        if self.name == "likert5":
            value = parse_likert5(text)
            return RubricReply((value - 1) / 4, None, {"final_score": value})
        judged = parse_checklist(text)
        if judged is None:
            return RubricReply(0.0, False, {"checklist_score": None, "unparsable": True})
        return RubricReply(float(judged + 1), judged == 0, {"checklist_score": judged})


RUBRICS: dict[str, Rubric] = {
    r.name: r
    for r in (
        Rubric("yesno", YESNO_TEMPLATE, False, 1, "P(yes) for 'does the image show the prompt?'"),
        Rubric("wise", WISE_TEMPLATE, True, 300, "WISE grades 0-2 -> WiScore"),
        Rubric("wise-verified", WISE_VERIFIED_TEMPLATE, True, 500, "WISE_Verified Score 0/1"),
        Rubric("likert5", LIKERT5_TEMPLATE, True, 512, "'Final Score' 1-5 -> (s-1)/4"),
        Rubric("checklist", CHECKLIST_TEMPLATE, True, 512, "SelfReward JSON Score 0/-1 -> +1"),
    )
}


def get_rubric(name: str, critic: str) -> Rubric:
    """The rubric called `name`, or a `MilrUserError` listing the known ones."""
    if name not in RUBRICS:
        raise MilrUserError(
            f"{critic} critic: rubric={name!r} is unknown; use one of {', '.join(RUBRICS)}"
        )
    return RUBRICS[name]


def load_template(
    rubric: Rubric, template: str | None, template_file: str | None, critic: str
) -> str:
    """The template to use: ``template``, else the file's text, else the rubric's default.

    Raises `MilrUserError` when both are given, the file cannot be read, or ``{prompt}`` is
    missing.
    """
    if template is not None and template_file is not None:
        raise MilrUserError(f"{critic} critic: give template= or template_file=, not both")
    if template_file is not None:
        path = Path(template_file).expanduser()
        try:
            template = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MilrUserError(
                f"{critic} critic: template_file={template_file!r} cannot be read "
                f"({type(exc).__name__}: {exc}); pass the path of a UTF-8 text file"
            ) from None
        where = f"template_file={template_file!r}"
    else:
        where = "template"
    if template is None:
        return rubric.default_template
    if "{prompt}" not in template:
        raise MilrUserError(
            f"{critic} critic: {where} must contain {{prompt}} (where the prompt goes); "
            f"got {template[:60]!r}"
        )
    return template


def template_sha256(template: str) -> str:
    """SHA-256 of a template, recorded in details so a run names the exact wording used."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()
