"""`api-judge`: any OpenAI-compatible chat-completions endpoint (GPT-4o, a vLLM server) as a judge.

Each image is sent as a base64 PNG data URL with a rubric prompt:

- ``rubric="yesno"``: "Does this image show ...? Answer yes or no." The score is
  ``P(yes) / (P(yes) + P(no))`` from the first answer token's ``top_logprobs`` when the server
  returns them (tokens compared case-insensitively, spaces stripped), otherwise 1.0 for an
  answer starting with "yes" and 0.0 for "no". The verdict passes when ``score >= 0.5``.
- ``rubric="wise"``: the WISE benchmark's grading (consistency, realism, aesthetic quality,
  each 0-2, JSON reply); ``score = WiScore = (0.7 C + 0.2 R + 0.1 A) / 2``. The metadata's
  ``Explanation`` (WISE's note of what the image must show) is added to the prompt when present.
  No verdict.

The API key is read from the environment variable *named* by ``api_key_env`` at request time;
it is never a parameter, never stored in the critic's config, repr or details, and never
logged. Requests run ``concurrency`` at a time; 429, 5xx, timeouts and connection errors are
retried ``retries`` times with exponential backoff (``backoff * 2**attempt`` seconds, or the
server's ``Retry-After`` when shorter than 60 s). A reply that still fails, or that cannot be
parsed, raises `JudgeReplyError` naming the image; an `Ensemble` applies its ``on_error``
policy to it. Details record the judge model, the rubric and the SHA-256 of the judge prompt.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critic import require
from milr.critics._images import to_rgb
from milr.errors import MilrError

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

RUBRICS = ("yesno", "wise")
YESNO_QUESTION = 'Does this image show "{prompt}"? Answer with a single word: yes or no.'
WISE_PROMPT = """You are a strict judge of text-to-image generation. Grade the image for the prompt below.

Prompt: {prompt}
{explanation}
Give three integer scores from 0 to 2:
- consistency: does the image accurately show what the prompt asks for (2 = fully, 1 = partly, 0 = not)?
- realism: is the image realistic and physically plausible (2 = very, 1 = somewhat, 0 = not)?
- aesthetic_quality: is the image well composed and visually pleasing (2 = very, 1 = somewhat, 0 = not)?

Reply with JSON only, exactly like: {"consistency": 0, "realism": 0, "aesthetic_quality": 0}"""
WISE_EXPLANATION = "What the image should show (explanation): {explanation}\n"
WISE_WEIGHTS = {"consistency": 0.7, "realism": 0.2, "aesthetic_quality": 0.1}
_WISE_ALIASES = {
    "consistency": "consistency",
    "realism": "realism",
    "aesthetic_quality": "aesthetic_quality",
    "aesthetic": "aesthetic_quality",
    "aesthetics": "aesthetic_quality",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "xai-", "key-", "aiza", "pk-", "rk-")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class JudgeReplyError(MilrError):
    """The judge endpoint failed or answered in a way the rubric cannot read, for one image."""


def looks_like_secret(value: str) -> bool:
    """Heuristic: a string that is an API key rather than an environment variable's name."""
    low = value.lower()
    if low.startswith(_KEY_PREFIXES):
        return True
    if not _ENV_NAME.match(value):
        return len(value) >= 20
    # long mixed-case/digit runs without separators are keys, not names like OPENAI_API_KEY
    return len(value) >= 32 and any(c.isdigit() for c in value) and "_" not in value


def image_data_url(image: Image) -> str:
    """The image as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def parse_wise(content: str) -> dict[str, float]:
    """Read the three 0-2 grades from a JSON reply (code fences and surrounding text allowed)."""
    match = re.search(r"\{.*\}", content, flags=re.S)
    if not match:
        raise ValueError("no JSON object in the reply")
    try:
        data = json.loads(match.group(0))
    except ValueError as exc:
        raise ValueError(f"reply JSON does not parse ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("reply JSON is not an object")
    grades: dict[str, float] = {}
    for key, value in data.items():
        norm = _WISE_ALIASES.get(str(key).strip().lower().replace(" ", "_"))
        if norm is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(str(value).strip())
            except ValueError:
                raise ValueError(f"{key!r} is {value!r}, not a number from 0 to 2") from None
        if not 0 <= float(value) <= 2 or math.isnan(float(value)):
            raise ValueError(f"{key!r} is {value!r}, outside 0-2")
        grades[norm] = float(value)
    missing = [k for k in WISE_WEIGHTS if k not in grades]
    if missing:
        raise ValueError(f"reply JSON lacks {missing}")
    return grades


def wiscore(grades: dict[str, float]) -> float:
    """WiScore = (0.7 C + 0.2 R + 0.1 A) / 2, in [0, 1]."""
    # integer weights (7, 2, 1)/20 keep 2/2/2 at exactly 1.0
    return (7 * grades["consistency"] + 2 * grades["realism"] + grades["aesthetic_quality"]) / 20


def parse_yesno(choice: dict[str, Any]) -> tuple[float, str]:
    """Score and method ('logprobs' or 'answer') from one chat-completions choice."""
    content = (choice.get("message") or {}).get("content")
    logprobs = choice.get("logprobs") or {}
    first = (logprobs.get("content") or [None])[0] if isinstance(logprobs, dict) else None
    if isinstance(first, dict):
        p_yes = p_no = 0.0
        for alt in first.get("top_logprobs") or [first]:
            tok = str(alt.get("token", "")).strip().lower()
            lp = alt.get("logprob")
            if not isinstance(lp, (int, float)):
                continue
            if tok == "yes":
                p_yes += math.exp(lp)
            elif tok == "no":
                p_no += math.exp(lp)
        if p_yes + p_no > 0:
            return p_yes / (p_yes + p_no), "logprobs"
    if not isinstance(content, str):
        raise ValueError("the reply has no message content")
    word = re.sub(r"[^a-z]", " ", content.strip().lower()).split()
    if word and word[0] == "yes":
        return 1.0, "answer"
    if word and word[0] == "no":
        return 0.0, "answer"
    raise ValueError(f"the answer {content[:80]!r} starts with neither yes nor no")


class APIJudgeCritic(Critic):
    """A remote VLM judge through an OpenAI-compatible ``/chat/completions`` endpoint.

    Parameters: ``base_url`` (e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``),
    ``model``, ``api_key_env`` (the NAME of the environment variable with the key; ``none`` for
    servers without auth), ``rubric`` (``yesno`` | ``wise``), ``question`` (yesno, with
    ``{prompt}``), ``wise_prompt`` (wise; ``{prompt}`` and optional ``{explanation}``, e.g. the
    WISE paper's own grading prompt; default `WISE_PROMPT`), ``concurrency``, ``timeout`` (seconds per request), ``retries``, ``backoff``
    (seconds), ``logprobs`` (ask for token log-probabilities in yesno), ``max_tokens``,
    ``temperature``.
    """

    name: ClassVar[str] = "api-judge"
    description: ClassVar[str] = "OpenAI-compatible API judge (yes/no or WISE rubric)"
    requires: ClassVar[tuple[str, ...]] = ("httpx",)
    extra: ClassVar[str | None] = "api"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "Explanation")

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        rubric: str = "yesno",
        question: str = YESNO_QUESTION,
        wise_prompt: str = WISE_PROMPT,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        logprobs: bool = True,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        api_key: Any = None,
    ) -> None:
        if api_key is not None:
            raise MilrUserError(
                "api-judge critic: never pass the API key itself (it would end up in shell "
                "history, spec files and logs); export it in an environment variable and pass "
                "its name, e.g. api_key_env=OPENAI_API_KEY"
            )
        if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
            raise MilrUserError(
                f"api-judge critic: base_url={base_url!r} must be an http(s) URL of an "
                "OpenAI-compatible API, e.g. https://api.openai.com/v1"
            )
        if not isinstance(model, str) or not model.strip():
            raise MilrUserError("api-judge critic needs model=NAME (e.g. model=gpt-4o)")
        if isinstance(api_key_env, str) and api_key_env.strip().lower() in ("", "none", "null"):
            api_key_env = None
        if api_key_env is not None:
            if not isinstance(api_key_env, str) or looks_like_secret(api_key_env):
                raise MilrUserError(
                    "api-judge critic: api_key_env must be the NAME of an environment variable "
                    "(e.g. OPENAI_API_KEY), and the value given looks like a key itself; "
                    "export the key and pass the variable's name (the value is not shown here)"
                )
            if not _ENV_NAME.match(api_key_env):
                raise MilrUserError(
                    f"api-judge critic: api_key_env={api_key_env!r} is not a valid environment "
                    "variable name ([A-Za-z_][A-Za-z0-9_]*)"
                )
        if rubric not in RUBRICS:
            raise MilrUserError(
                f"api-judge critic: rubric={rubric!r} is unknown; use one of {', '.join(RUBRICS)}"
            )
        if not isinstance(question, str) or "{prompt}" not in question:
            raise MilrUserError(f"api-judge critic: question={question!r} must contain {{prompt}}")
        if not isinstance(wise_prompt, str) or "{prompt}" not in wise_prompt:
            raise MilrUserError(
                f"api-judge critic: wise_prompt={wise_prompt!r} must contain {{prompt}} "
                "(and may contain {explanation})"
            )
        for pname, value, lo in (("concurrency", concurrency, 1), ("retries", retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise MilrUserError(
                    f"api-judge critic: {pname}={value!r} must be an integer >= {lo}"
                )
        for pname, seconds in (("timeout", timeout), ("backoff", backoff)):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or seconds < 0
                or (pname == "timeout" and seconds == 0)
            ):
                raise MilrUserError(
                    f"api-judge critic: {pname}={seconds!r} must be a positive number of seconds"
                )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.rubric = rubric
        self.question = question
        self.wise_prompt = wise_prompt
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.logprobs = bool(logprobs)
        self.max_tokens = (
            max_tokens if max_tokens is not None else (1 if rubric == "yesno" else 300)
        )
        self.temperature = float(temperature)
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._config = {
            "base_url": self.base_url,
            "model": model,
            "api_key_env": api_key_env,
            "rubric": rubric,
            "question": question,
            "wise_prompt": "default" if wise_prompt == WISE_PROMPT else wise_prompt,
            "wise_prompt_sha256": hashlib.sha256(wise_prompt.encode("utf-8")).hexdigest(),
            "concurrency": concurrency,
            "timeout": self.timeout,
            "retries": retries,
            "backoff": self.backoff,
            "logprobs": self.logprobs,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    # -- requests -----------------------------------------------------------------------------

    def judge_prompt(self, prompt: str, metadata: dict[str, Any]) -> str:
        """The text sent with the image for this prompt (hashed into the details)."""
        if self.rubric == "yesno":
            return self.question.replace("{prompt}", prompt)
        explanation = metadata.get("Explanation") or metadata.get("explanation")
        extra = WISE_EXPLANATION.replace("{explanation}", str(explanation)) if explanation else ""
        return self.wise_prompt.replace("{prompt}", prompt).replace("{explanation}", extra)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise MilrUserError(
                    f"api-judge critic: environment variable {self.api_key_env} is not set; export "
                    f"the API key as {self.api_key_env}=..., pass api_key_env=OTHER_NAME, or "
                    "api_key_env=none for a server without authentication"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _http(self) -> Any:
        with self._client_lock:
            if self._client is None:
                httpx = require("httpx", self.extra, self.name)
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=self.concurrency),
                )
            return self._client

    def _payload(self, text: str, image_url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": image_url}},
                    ],
                }
            ],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.rubric == "yesno" and self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 20
        return body

    def _post(
        self, index: int, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any], int]:
        """POST with retries; returns (reply JSON, attempts)."""
        httpx = require("httpx", self.extra, self.name)
        client = self._http()
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * (2**attempt)
            try:
                resp = client.post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g} s"
            except httpx.TransportError as exc:
                last = f"connection error: {type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise JudgeReplyError(
                            f"api-judge: image {index}: {url} answered 200 with a body that is not "
                            f"JSON: {resp.text[:200]!r}"
                        ) from None
                    return data, attempt + 1
                last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
                if resp.status_code not in RETRY_STATUS:
                    hint = ""
                    if resp.status_code in (401, 403):
                        hint = (
                            f" (check the key in ${self.api_key_env})"
                            if self.api_key_env
                            else " (the server wants a key: set api_key_env)"
                        )
                    raise JudgeReplyError(
                        f"api-judge: image {index}: {url} refused the request: {last}{hint}"
                    )
                retry_after = resp.headers.get("retry-after")
                try:
                    if retry_after is not None and 0 <= float(retry_after) < 60:
                        wait = float(retry_after)
                except ValueError:
                    pass
            if attempt < self.retries:
                log.warning(
                    "api-judge: image %d: %s; retry %d/%d in %.2f s",
                    index,
                    last,
                    attempt + 1,
                    self.retries,
                    wait,
                )
                time.sleep(wait)
        raise JudgeReplyError(
            f"api-judge: image {index}: {url} failed after {self.retries + 1} attempts: {last}"
        )

    def _judge_one(
        self,
        index: int,
        image: Image,
        prompt: str,
        metadata: dict[str, Any],
        headers: dict[str, str],
    ) -> CriticResult:
        text = self.judge_prompt(prompt, metadata)
        started = time.perf_counter()
        reply, attempts = self._post(index, self._payload(text, image_data_url(image)), headers)
        details: dict[str, Any] = {
            "judge_model": self.model,
            "reply_model": reply.get("model") if isinstance(reply, dict) else None,
            "rubric": self.rubric,
            "prompt_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "attempts": attempts,
            "seconds": round(time.perf_counter() - started, 4),
        }
        try:
            choice = reply["choices"][0]
            content = (choice.get("message") or {}).get("content")
            if self.rubric == "yesno":
                score, method = parse_yesno(choice)
                details.update(answer=content, method=method)
                passed: bool | None = score >= 0.5
            else:
                if not isinstance(content, str):
                    raise ValueError("the reply has no message content")
                grades = parse_wise(content)
                score = wiscore(grades)
                details.update(answer=content, grades=grades)
                passed = None
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise JudgeReplyError(
                f"api-judge: image {index}: malformed reply from {self.model!r} for rubric "
                f"{self.rubric!r}: {exc}; reply: {json.dumps(reply)[:300]}"
            ) from None
        usage = reply.get("usage")
        if isinstance(usage, dict):
            details["usage"] = {k: v for k, v in usage.items() if isinstance(v, (int, float))}
        return CriticResult(min(1.0, max(0.0, float(score))), passed, details)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        headers = self._headers()
        if not rgb:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(rgb))) as pool:
            futures = [
                pool.submit(self._judge_one, i, im, p, m, headers)
                for i, (im, p, m) in enumerate(zip(rgb, prompts, metadata, strict=True))
            ]
            results: list[CriticResult] = []
            errors: list[str] = []
            for fut in futures:
                try:
                    results.append(fut.result())
                except JudgeReplyError as exc:
                    errors.append(str(exc))
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise JudgeReplyError("; ".join(errors[:3]) + more)
        return results

    def close(self) -> None:
        """Close the HTTP connection pool."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@hookimpl
def register_critics(register):
    register(APIJudgeCritic)
