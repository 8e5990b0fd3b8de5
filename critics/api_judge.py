"""`api-judge`: an OpenAI-compatible chat endpoint (GPT-4o, Azure, vLLM) as a judge, via ``openai``.

Each image goes as a base64 PNG data URL with a rubric's text (`milr.critics.rubrics`: ``yesno``
from ``top_logprobs`` or the answer's first word, ``wise`` from JSON or WISE's plain lines,
``wise-verified``, ``likert5``, ``checklist``); ``template=`` / ``template_file=`` replace the
wording and details record its SHA-256; ``wise_repo=`` sends WISE's own (`..._wise_official`).

Endpoints: ``api_type="openai"`` (default) posts to ``{base_url}/chat/completions``; ``"azure"``
uses ``AsyncAzureOpenAI`` (``base_url`` the endpoint, ``deployment``, ``api_version``).

Key: read at request time from the environment variable *named* by ``api_key_env``; never a
parameter, never in the critic's config, repr, details or errors. Every text milr repeats from
the server (error reasons, answers in details) has the key's value replaced by ``***``.

Bounds: each HTTP attempt has a total deadline of ``timeout`` s; the openai client retries
``retries`` times (connection errors, timeouts, 408, 409, 429, 5xx), honouring a ``Retry-After``
of at most 120 s (RFC 9110 §10.2.3), else backing off 0.5 s doubling to 8 s with jitter; so one
image costs at most ``(retries + 1) * timeout`` s plus waits. ``concurrency`` requests at a time.

Failures: an image whose request fails, whose reply carries no usable grade (no choices, a
refusal, empty or null content, a ``finish_reason`` other than a normal stop: ``length`` for
written rubrics, ``content_filter``, tool calls; a reasoning model with empty visible content;
see `milr.critics._chat_client.unusable_reply`), or whose answer the rubric cannot read raises
`JudgeReplyError` (an `ExternalServiceError`: not the user's input and not a milr bug) naming
the image, the endpoint and the server's reason; an `Ensemble` applies its ``on_error`` policy.
``yesno`` scores from log-probabilities only when yes and no together hold at least
``min_yes_no_share`` of the first token's probability; below it the answer's first word decides,
and an answer that is neither word fails the image: a score is never made from tail mass.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.critic import require
from milr.critics._chat_client import (
    ENV_NAME as _ENV_NAME,
)
from milr.critics._chat_client import (
    describe_failure,
    image_data_url,
    looks_like_secret,
    open_client,
    redact,
    reply_content,
    run_sync,
    unusable_reply,
    yes_no_logprobs,
)
from milr.critics._images import to_rgb
from milr.critics._wise_official import wise_protocol
from milr.critics.rubrics import (
    WISE_TEMPLATE,
    YESNO_TEMPLATE,
    JudgeReplyError,
    RubricReplyError,
    get_rubric,
    load_template,
    template_sha256,
)

if TYPE_CHECKING:
    from PIL.Image import Image

#: Old names, kept for code that imported them.
YESNO_QUESTION = YESNO_TEMPLATE
WISE_PROMPT = WISE_TEMPLATE
API_TYPES = ("openai", "azure")


class APIJudgeCritic(Critic):
    """A remote VLM judge through an OpenAI-compatible chat-completions endpoint.

    Parameters are declared in `APIJudgeCritic.Params` (``milr critics api-judge`` lists them).
    Never a parameter: ``api_key`` (refused, the key is never echoed). Deprecated and still
    accepted with a `DeprecationWarning`: ``question`` (yesno) and ``wise_prompt`` (wise), both
    now ``template``; ``backoff`` (ignored: the openai client owns backoff).
    """

    name: ClassVar[str] = "api-judge"
    calls_api: ClassVar[bool] = True
    description: ClassVar[str] = "OpenAI-compatible API judge (yesno, wise, likert5, checklist)"
    requires: ClassVar[tuple[str, ...]] = ("openai",)
    extra: ClassVar[str | None] = "api"
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "Explanation")

    class Params(CriticParams):
        base_url: str = Field(
            description="http(s) URL of the API: https://api.openai.com/v1, "
            "http://localhost:8000/v1, or the Azure endpoint https://RESOURCE.openai.azure.com",
            json_schema_extra={"hint": "e.g. base_url=https://api.openai.com/v1"},
        )
        model: str = Field(
            min_length=1,
            description="the judge model's name, e.g. gpt-4o",
            json_schema_extra={"hint": "e.g. model=gpt-4o"},
        )
        api_key_env: str | None = Field(
            "OPENAI_API_KEY",
            description="NAME of the environment variable holding the key; none for no auth",
        )
        rubric: Literal["yesno", "wise", "wise-verified", "likert5", "checklist"] = Field(
            "yesno", description="how the judge is asked and its answer scored (see rubrics)"
        )
        wise_repo: str | None = Field(None, description="WISE clone: its own judge instructions")
        template: str | None = Field(
            None, description="the rubric's text with {prompt}; None: milr's default wording"
        )
        template_file: str | None = Field(
            None, description="path of a UTF-8 file holding the template (a paper's wording)"
        )
        api_type: Literal["openai", "azure"] = Field(
            "openai", description="openai: {base_url}/chat/completions; azure: Azure OpenAI"
        )
        deployment: str | None = Field(
            None, description="Azure deployment name (api_type=azure); None: the model name"
        )
        api_version: str | None = Field(
            None, description="Azure OpenAI REST API version, e.g. 2024-10-21 (api_type=azure)"
        )
        concurrency: int = Field(4, ge=1, description="requests in flight at once")
        timeout: float = Field(
            60.0, gt=0, description="seconds; total deadline of each HTTP attempt, reply included"
        )
        retries: int = Field(
            3, ge=0, description="retries on timeouts, connection errors, 408/409/429/5xx"
        )
        logprobs: bool = Field(
            True, description="yesno: ask for token log-probabilities (smooth P(yes))"
        )
        min_yes_no_share: float = Field(
            0.5,
            gt=0,
            le=1,
            description="yesno with logprobs: least share of the first token's probability "
            "that yes and no together must hold to score from probabilities; below it the "
            "answer's first word decides, and an answer that is neither fails the image",
        )
        max_tokens: int | None = Field(
            None, ge=1, description="answer length bound; None: the rubric's (1 for yesno)"
        )
        temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature")

        @field_validator("base_url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            if not re.match(r"^https?://\S+$", value):
                raise ValueError(
                    "must be an http(s) URL of an OpenAI-compatible API, e.g. "
                    "https://api.openai.com/v1"
                )
            return value.rstrip("/")

        @field_validator("api_key_env")
        @classmethod
        def _env_name(cls, value: str | None) -> str | None:
            if value is None or value.strip().lower() in ("", "none", "null"):
                return None
            if not _ENV_NAME.match(value):
                raise ValueError("is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
            return value

        @model_validator(mode="after")
        def _azure_fields(self) -> APIJudgeCritic.Params:
            if self.api_type == "azure" and not self.api_version:
                raise ValueError(
                    "api_type=azure needs api_version=... (e.g. api_version=2024-10-21), the "
                    "Azure OpenAI REST API version"
                )
            if self.api_type != "azure" and (
                self.deployment is not None or self.api_version is not None
            ):
                raise ValueError(
                    "deployment= and api_version= are for api_type=azure; add api_type=azure "
                    "or drop them"
                )
            return self

    params: Params

    def __init__(self, **kwargs: Any) -> None:
        # checked before validation, whose messages repeat values: a key must never be echoed
        if kwargs.get("api_key") is not None:
            raise MilrUserError(
                "api-judge critic: never pass the API key itself (it would end up in shell "
                "history, spec files and logs); export it in an environment variable and pass "
                "its name, e.g. api_key_env=OPENAI_API_KEY"
            )
        kwargs.pop("api_key", None)
        env = kwargs.get("api_key_env")
        if (
            isinstance(env, str)
            and env.strip().lower() not in ("", "none", "null")
            and looks_like_secret(env)
        ):
            raise MilrUserError(
                "api-judge critic: api_key_env must be the NAME of an environment variable "
                "(e.g. OPENAI_API_KEY), and the value given looks like a key itself; "
                "export the key and pass the variable's name (the value is not shown here)"
            )
        rubric = kwargs.get("rubric", "yesno")
        for old, applies in (("question", "yesno"), ("wise_prompt", "wise")):
            if kwargs.get(old) is None:
                kwargs.pop(old, None)
                continue
            value = kwargs.pop(old)
            warnings.warn(
                f"api-judge critic: {old}= is deprecated; pass template= (or template_file=)",
                DeprecationWarning,
                stacklevel=2,
            )
            if (
                rubric == applies
                and kwargs.get("template") is None
                and not kwargs.get("template_file")
            ):
                kwargs["template"] = value
        if "backoff" in kwargs:
            kwargs.pop("backoff")
            warnings.warn(
                "api-judge critic: backoff= is deprecated and ignored; the openai client waits "
                "0.5 s doubling up to 8 s between retries, or the server's Retry-After",
                DeprecationWarning,
                stacklevel=2,
            )
        super().__init__(**kwargs)

    def setup(self) -> None:
        p = self.params
        self.rubric = get_rubric(p.rubric, self.name)
        self.template = load_template(self.rubric, p.template, p.template_file, self.name)
        self.wise = wise_protocol(self.name, p.wise_repo, p.rubric, p.template, p.template_file)
        self.base_url = p.base_url
        self.model = p.model
        self.api_type = p.api_type
        self.deployment = p.deployment or (p.model if p.api_type == "azure" else None)
        self.api_key_env = p.api_key_env
        self.concurrency = p.concurrency
        self.timeout = float(p.timeout)
        self.retries = p.retries
        self.max_tokens = p.max_tokens or (self.wise or self.rubric).max_new_tokens
        self.template_sha256 = self.wise.sha256 if self.wise else template_sha256(self.template)

    def config(self) -> dict[str, Any]:
        """The parameters plus the SHA-256 of the template text (a file may change)."""
        return {**super().config(), "template_sha256": self.template_sha256}

    # -- requests -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages (no key, no query string)."""
        if self.api_type == "azure":
            return f"{self.base_url}/openai/deployments/{self.deployment}/chat/completions"
        return f"{self.base_url}/chat/completions"

    def judge_prompt(self, prompt: str, metadata: dict[str, Any]) -> str:
        """The text sent with the image for this prompt (hashed into the details)."""
        return self.rubric.render(self.template, prompt, metadata)

    def prepare(self) -> None:  # the key's variable must be set; no request is made
        self._api_key()

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        if not (key := os.environ.get(self.api_key_env)):
            raise MilrUserError(
                f"api-judge critic: environment variable {self.api_key_env} is not set; export "
                f"the API key as {self.api_key_env}=..., pass api_key_env=OTHER_NAME, or "
                "api_key_env=none for a server without authentication"
            )
        return key

    def _request(self, text: str, image_url: str) -> dict[str, Any]:
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
            "temperature": self.params.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.rubric.name == "yesno" and self.params.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 20
        return body

    async def _judge_one(
        self,
        client: Any,
        openai: Any,
        sem: asyncio.Semaphore,
        key: str | None,
        index: int,
        image: Image,
        prompt: str,
        metadata: dict[str, Any],
    ) -> CriticResult | tuple[int, str]:
        text = self.judge_prompt(prompt, metadata)
        body = self._request(text, image_data_url(image))
        if self.wise is not None:  # WISE's messages, temperature and chat_template_kwargs
            text = self.wise.apply(body, prompt, metadata, self.params.model_fields_set)
        async with sem:
            started = time.perf_counter()
            try:
                if key is None:  # a server without auth: send no credential header at all
                    body["extra_headers"] = {
                        "Authorization": openai.Omit(),
                        "api-key": openai.Omit(),
                    }
                raw = await client.chat.completions.with_raw_response.create(**body)
            except openai.OpenAIError as exc:
                return index, describe_failure(
                    openai,
                    exc,
                    key,
                    timeout=self.timeout,
                    retries=self.retries,
                    key_env=self.api_key_env,
                )
            try:
                reply = raw.parse()
            except (ValueError, TypeError, openai.OpenAIError):
                text_body = " ".join(raw.http_response.text[:200].split())
                return index, str(
                    redact(
                        f"HTTP {raw.status_code} with a body that is not chat-completions JSON: "
                        f"{text_body!r}",
                        key,
                    )
                )
        details: dict[str, Any] = {
            "judge_model": self.model,
            "reply_model": getattr(reply, "model", None),
            "rubric": self.rubric.name,
            "prompt_sha256": template_sha256(text),
            "template_sha256": self.template_sha256,
            "attempts": int(getattr(raw, "retries_taken", 0)) + 1,
            "seconds": round(time.perf_counter() - started, 4),
        }
        unusable = unusable_reply(
            reply, max_tokens=self.max_tokens, first_word_only=self.rubric.name == "yesno"
        )
        if unusable is not None:
            return index, " ".join(str(redact(unusable, key)).split())
        try:
            score, passed, extra = self._read(reply)
        except RubricReplyError as exc:
            content = reply_content(reply)
            return index, " ".join(
                str(
                    redact(
                        f"the reply cannot be read as rubric {self.rubric.name!r}: {exc}; "
                        f"reply: {content[:200]!r}",
                        key,
                    )
                ).split()
            )
        details.update(extra)
        usage = getattr(reply, "usage", None)
        if usage is not None:
            details["usage"] = {
                k: v for k, v in usage.model_dump().items() if isinstance(v, (int, float))
            }
        return CriticResult(min(1.0, max(0.0, float(score))), passed, redact(details, key))

    def _read(self, reply: Any) -> tuple[float, bool | None, dict[str, Any]]:
        """Score a reply `unusable_reply` passed: yesno from the first token's log-probabilities
        when yes and no hold at least ``min_yes_no_share`` of it, else the rubric's parser."""
        choice = reply.choices[0]
        content = reply_content(reply)
        shortfall, extra, scored = "", {}, None
        if self.rubric.name == "yesno":
            shortfall, extra, scored = yes_no_logprobs(
                choice, content, self.params.min_yes_no_share
            )
        if scored is not None:
            return scored
        try:
            parsed = (self.wise or self.rubric).parse(content)
        except RubricReplyError as exc:
            raise RubricReplyError(f"{exc}; {shortfall}" if shortfall else str(exc)) from None
        return parsed.score, parsed.passed, {"answer": content, **parsed.details, **extra}

    async def _judge_all(
        self,
        images: list[Image],
        prompts: list[str],
        metadata: list[dict[str, Any]],
        key: str | None,
    ) -> list[CriticResult | tuple[int, str]]:
        openai = require("openai", self.extra, self.name)
        sem = asyncio.Semaphore(self.concurrency)
        async with open_client(
            openai,
            key,
            base_url=self.base_url,
            api_type=self.api_type,
            deployment=self.deployment,
            api_version=self.params.api_version,
            timeout=self.timeout,
            retries=self.retries,
            concurrency=self.concurrency,
        ) as client:
            return await asyncio.gather(
                *(
                    self._judge_one(client, openai, sem, key, i, im, p, m)
                    for i, (im, p, m) in enumerate(zip(images, prompts, metadata, strict=True))
                )
            )

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        key = self._api_key()
        if not rgb:
            return []
        outcome = run_sync(self._judge_all(rgb, prompts, metadata, key))
        failures = [o for o in outcome if isinstance(o, tuple)]
        if failures:  # the replies already paid for travel with the error
            raise JudgeReplyError(
                f"{self.name} at {self.endpoint}",
                [(i, reason) for i, reason in failures],
                [o if isinstance(o, CriticResult) else None for o in outcome],
            )
        return [o for o in outcome if isinstance(o, CriticResult)]


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(APIJudgeCritic)
