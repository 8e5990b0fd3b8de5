"""Noun phrases of a prompt, for the ``vqa`` and ``grounding`` critics.

Two extractors:

* ``rule`` (default, no model): the words are cut into phrases at every preposition or
  auxiliary verb (dropped: ``of``, ``on``, ``with``, ``next``, ``is`` ...), at every connector
  (``and``, ``or``, comma; dropped, except ``and``/``or`` between two colour words, so ``a black
  and white cat`` stays one phrase) and before every determiner or number word (``a``, ``the``,
  ``two``, digits, ``its`` ...; kept). Pieces with a word besides the determiner are the
  phrases. A leading ``a photo of`` is dropped. On T2I-CompBench's templated categories
  (colour, shape, texture: ``a red backpack and a blue train``, ``fluffy clouds and a glass
  table``) this gives spaCy's ``noun_chunks``; on free sentences it keeps verbs it cannot tell
  from nouns (``eight cats lounged in the sun`` -> ``eight cats lounged``, ``the sun``) — use
  ``spacy`` there.
* ``spacy``: ``doc.noun_chunks`` of an installed spaCy pipeline (T2I-CompBench's own rule,
  with ``en_core_web_sm``). The pipeline is loaded by package name or path, never downloaded.

`open_clauses` turns a prompt into GenEval-style metadata over an open vocabulary (class names
are the phrases' nouns), which the ``grounding`` critic uses when no metadata is given.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from milr.critic import require
from milr.errors import MilrUserError
from milr.geneval_rules import GENEVAL_COLORS, NUMBER_WORDS, PromptParseError

DETERMINERS = frozenset(
    {
        "a", "an", "the", "some", "several", "many", "this", "that", "these", "those", "his",
        "her", "their", "its", "my", "your", "our", "another", "each", "every", "one",
    }
    | set(NUMBER_WORDS)
)  # fmt: skip
#: Words that end a phrase: prepositions, relation words, auxiliaries, subordinators.
STOP_WORDS = frozenset(
    {
        "of", "on", "in", "at", "by", "to", "with", "near", "behind", "under", "over", "above",
        "below", "beside", "besides", "from", "into", "onto", "next", "front", "left", "right",
        "top", "bottom", "side", "hidden", "is", "are", "was", "were", "be", "being", "has",
        "have", "had", "while", "as", "for", "against", "across", "around", "between", "inside",
        "outside", "underneath", "beneath", "who", "which", "that's", "there",
    }
)  # fmt: skip
CONNECTORS = frozenset({"and", "or", ",", ";"})
#: Colour words: ``and`` between two of them stays inside a phrase (``black and white cat``).
COLOR_WORDS = frozenset(
    {*GENEVAL_COLORS, "grey", "gray", "silver", "gold", "golden", "beige", "violet", "cyan"}
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*|[,;]")
_PREFIX_RE = re.compile(
    r"^\s*(?:a |an )?(?:photo|image|picture|painting|rendering|drawing)\s+of\s+", re.IGNORECASE
)


def _is_det(word: str) -> bool:
    w = word.lower()
    return w in DETERMINERS or w.isdigit()


def rule_noun_phrases(text: str) -> list[str]:
    """Noun phrases of ``text`` by the determiner rule (module docstring), words as written."""
    if not isinstance(text, str):
        return []
    tokens = _TOKEN_RE.findall(_PREFIX_RE.sub("", text, count=1))
    segments: list[list[str]] = [[]]
    for k, tok in enumerate(tokens):
        low = tok.lower()
        if low in STOP_WORDS:
            segments.append([])
        elif low in CONNECTORS:
            prev = tokens[k - 1].lower() if k else ""
            nxt = tokens[k + 1].lower() if k + 1 < len(tokens) else ""
            # "black and white cat": a connector between two colour words joins them
            if low in ("and", "or") and prev in COLOR_WORDS and nxt in COLOR_WORDS:
                segments[-1].append(tok)
            else:
                segments.append([])
        elif _is_det(low):
            segments.append([tok])
        else:
            segments[-1].append(tok)
    return [" ".join(seg) for seg in segments if any(not _is_det(w) for w in seg)]


_SPACY: dict[str, Any] = {}
_SPACY_LOCK = threading.Lock()


def spacy_noun_phrases(text: str, model: str, critic: str) -> list[str]:
    """``noun_chunks`` of an installed spaCy pipeline (package name or directory; loaded once)."""
    spacy = require("spacy", "nlp", critic)
    with _SPACY_LOCK:
        nlp = _SPACY.get(model)
        if nlp is None:
            try:
                nlp = spacy.load(model)
            except OSError as exc:
                raise MilrUserError(
                    f"critic {critic!r}: spaCy pipeline spacy_model={model!r} is not installed; "
                    f"on a machine with internet run `python -m spacy download {model}` (or pass "
                    "spacy_model=/path/to/pipeline), or use phrases=rule"
                ) from exc
            _SPACY[model] = nlp
    doc = nlp(text)
    try:
        return [chunk.text for chunk in doc.noun_chunks]
    except ValueError as exc:  # E029: the pipeline has no dependency parser
        raise MilrUserError(
            f"critic {critic!r}: spaCy pipeline {model!r} has no dependency parser, so it cannot "
            "find noun chunks; use a trained pipeline such as en_core_web_sm, or phrases=rule"
        ) from exc


def noun_phrases(text: str, method: str, spacy_model: str, critic: str) -> list[str]:
    """Noun phrases by ``method`` (``rule`` or ``spacy``)."""
    if method == "spacy":
        return spacy_noun_phrases(text, spacy_model, critic)
    return rule_noun_phrases(text)


# --------------------------------------------------------------------------- open clauses

#: Relation wordings (GenEval's and T2I-CompBench's) -> GenEval relation of subject to object.
RELATION_WORDS: dict[str, str] = {
    "on the left of": "left of",
    "to the left of": "left of",
    "left of": "left of",
    "on the right of": "right of",
    "to the right of": "right of",
    "right of": "right of",
    "on the top of": "above",
    "on top of": "above",
    "above": "above",
    "on the bottom of": "below",
    "below": "below",
    "under": "below",
}


def singular(noun: str) -> str:
    """A plural English noun's singular by suffix rules (``people`` -> ``person``, ``-ies``, ``-es``, ``-s``)."""
    words = noun.split()
    if not words:
        return noun
    last = words[-1]
    if last == "people":
        last = "person"
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif re.search(r"(ss|x|ch|sh)es$", last):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        last = last[:-1]
    return " ".join([*words[:-1], last])


def _clause(phrase: str) -> dict[str, Any] | None:
    words = phrase.lower().split()
    count = 1
    if words and _is_det(words[0]):
        first = words.pop(0)
        if first in NUMBER_WORDS:
            count = NUMBER_WORDS[first]
        elif first.isdigit() and int(first) >= 1:
            count = int(first)
    color = None
    if len(words) > 1 and words[0] in GENEVAL_COLORS:
        color = words.pop(0)
    if not words:
        return None
    noun = " ".join(words)
    clause: dict[str, Any] = {"class": singular(noun) if count > 1 else noun, "count": count}
    if color is not None:
        clause["color"] = color
    return clause


def open_clauses(
    prompt: str, method: str = "rule", spacy_model: str = "", critic: str = ""
) -> dict[str, Any]:
    """GenEval-style metadata (``tag``, ``include``, ``exclude``) from a prompt, any vocabulary.

    ``<A> <relation> <B>`` (GenEval's four relations and T2I-CompBench's wordings such as ``on
    the top of``) gives a position clause (A relative to B); otherwise each noun phrase is an
    include clause: count from a number word (``a``/``the`` -> 1), a GenEval colour word right
    after it becomes ``color``, the rest is the class (singular when the count is above one).
    Counts above one add GenEval's ``exclude`` (count + 1). Raises `PromptParseError` when the
    prompt has no noun phrase.
    """
    text = " ".join(str(prompt).strip().rstrip(".!?").split())
    body = _PREFIX_RE.sub("", text, count=1)
    low = body.lower()
    include: list[dict[str, Any]] = []
    tag = None
    for words in sorted(RELATION_WORDS, key=len, reverse=True):
        m = re.search(rf"\s{re.escape(words)}\s", low)
        if m is None:
            continue
        subj = noun_phrases(body[: m.start()], method, spacy_model, critic)
        obj = noun_phrases(body[m.end() :], method, spacy_model, critic)
        a = _clause(subj[-1]) if subj else None
        b = _clause(obj[0]) if obj else None
        if a is not None and b is not None:
            include = [b, dict(a, position=[RELATION_WORDS[words], 0])]
            tag = "position"
        break
    if not include:
        include = [
            c for c in (_clause(p) for p in noun_phrases(body, method, spacy_model, critic)) if c
        ]
        if not include:
            raise PromptParseError(
                f"critic {critic!r}: found no noun phrase in prompt {prompt!r}; pass GenEval-style "
                "metadata (include: [{class, count}]) instead"
            )
        n_color = sum("color" in c for c in include)
        if len(include) >= 2:
            tag = "color_attr" if n_color else "two_object"
        elif include[0]["count"] > 1:
            tag = "counting"
        else:
            tag = "colors" if n_color else "single_object"
    meta: dict[str, Any] = {"tag": tag, "include": include}
    exclude = [
        {"class": c["class"], "count": c["count"] + 1}
        for c in include
        if c["count"] > 1 and "position" not in c
    ]
    if exclude:
        meta["exclude"] = exclude
    meta["prompt"] = prompt
    return meta
