"""The openai client as api-judge uses it: one total deadline per HTTP attempt, text made safe.

`open_client` builds an ``AsyncOpenAI`` / ``AsyncAzureOpenAI`` whose transport gives each
request a total deadline (connect, upload and the whole reply), `run_sync` drives a coroutine
from sync code, `describe_failure` turns a client exception into one line in the server's words,
and `redact` replaces the API key's value by ``***`` in any text milr repeats.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import importlib
import io
import json
import re
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Longest server-requested wait (s) the openai client honours; longer ones fail the image.
MAX_RETRY_AFTER = 120.0
REDACTED = "***"


def redact(value: Any, secret: str | None) -> Any:
    """`value` with every occurrence of `secret` replaced by ``***`` (strings, lists, dicts)."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, REDACTED)
    if isinstance(value, dict):
        return {redact(k, secret): redact(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secret) for v in value)
    return value


def image_data_url(image: Image) -> str:
    """The image as a ``data:image/png;base64,...`` URL."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def http_module(openai: Any) -> Any:
    """The HTTP library (``httpx`` or ``httpx2``) under the installed openai client."""
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient" and not cls.__module__.startswith("openai"):
            return importlib.import_module(cls.__module__.split(".")[0])
    raise MilrUserError(  # pragma: no cover - only with an openai release of another design
        "api-judge critic: cannot find the HTTP library of the installed openai client; "
        "install a supported release with: pip install 'milr[api]'"
    )


def deadline_transport(httpx: Any, inner: Any, seconds: float) -> Any:
    """A transport that gives each request a total deadline: connect, send and the whole body.

    httpx's own timeouts bound each socket operation, so a reply that trickles in one byte per
    second never trips them; here the full exchange runs under one `asyncio.wait_for`.
    """

    class DeadlineTransport(httpx.AsyncBaseTransport):  # type: ignore[misc, name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            async def exchange() -> Any:
                response = await inner.handle_async_request(request)
                try:
                    body = b"".join([chunk async for chunk in response.stream])
                finally:
                    await response.aclose()
                return httpx.Response(
                    response.status_code,
                    headers=response.headers,
                    stream=httpx.ByteStream(body),
                    extensions=response.extensions,
                    request=request,
                )

            try:
                return await asyncio.wait_for(exchange(), seconds)
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout(
                    f"no complete reply within {seconds:g} s", request=request
                ) from None

        async def aclose(self) -> None:
            await inner.aclose()

    return DeadlineTransport()


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # e.g. inside Jupyter
        return pool.submit(asyncio.run, coro).result()


def open_client(
    openai: Any,
    key: str | None,
    *,
    base_url: str,
    api_type: str,
    deployment: str | None,
    api_version: str | None,
    timeout: float,
    retries: int,
    concurrency: int,
) -> Any:
    """An async openai client (Azure's for ``api_type="azure"``) with the deadline transport."""
    httpx = http_module(openai)
    inner = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    )
    http_client = openai.DefaultAsyncHttpxClient(
        transport=deadline_transport(httpx, inner, timeout),
        timeout=httpx.Timeout(timeout),
    )
    common: dict[str, Any] = {
        "api_key": key or "unused",
        "timeout": timeout,
        "max_retries": retries,
        "http_client": http_client,
    }

    if api_type == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=base_url,
            azure_deployment=deployment,
            api_version=api_version,
            **common,
        )
    return openai.AsyncOpenAI(base_url=base_url, **common)


def describe_failure(
    openai: Any,
    exc: Exception,
    key: str | None,
    *,
    timeout: float,
    retries: int,
    key_env: str | None,
) -> str:
    """One line: what went wrong with the request, in the server's words, key redacted."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        reason: Any = None
        if isinstance(body, dict):
            err = body.get("error", body)
            reason = err.get("message") if isinstance(err, dict) else err
        if not reason:
            try:
                reason = exc.response.text
            except Exception:  # a body that cannot be decoded
                reason = None
        text = f"HTTP {exc.status_code}: {str(reason or exc.message)[:300]}"
        if exc.status_code in (401, 403):
            text += (
                f" (check the key in ${key_env})"
                if key_env
                else " (the server wants a key: set api_key_env)"
            )
        retry_after = exc.response.headers.get("retry-after")
        if exc.status_code == 429 and retry_after:
            text += (
                f" (Retry-After {retry_after!r}; milr waits at most {MAX_RETRY_AFTER:g} s, "
                f"after up to {retries} retries)"
            )
    elif isinstance(exc, openai.APITimeoutError):
        text = f"no complete reply within timeout={timeout:g} s ({retries + 1} attempts)"
    elif isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        text = f"connection failed after {retries + 1} attempts: {detail}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(str(redact(text, key)).split())


def _text(value: Any) -> str | None:
    """A message field as text: a string, or the joined ``text`` of a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in value]
        texts = [t for t in parts if isinstance(t, str)]
        return "".join(texts) if texts else None
    return None


def reply_content(reply: Any) -> str:
    """The first choice's visible answer (``message.content``), ``""`` when there is none."""
    choices = getattr(reply, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    return _text(getattr(message, "content", None)) or ""


def _extra(obj: Any, name: str) -> Any:
    """A field the openai models do not declare (``reasoning_content``, Azure's filters)."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def _quote(value: Any, limit: int = 200) -> str:
    if not isinstance(value, str):
        value = json.dumps(value, default=str, sort_keys=True)
    return repr(" ".join(value.split())[:limit])


#: ``finish_reason`` values that mean the judge ended its answer itself (OpenAI, vLLM, SGLang,
#: lmdeploy, TGI spellings); None: the server did not say.
NORMAL_STOPS = frozenset({None, "stop", "eos", "eos_token", "stop_sequence", "end_turn"})


def unusable_reply(reply: Any, *, max_tokens: int, first_word_only: bool) -> str | None:
    """Why a chat-completions reply carries no usable answer, in the server's words, or None.

    Checked in this order: no choices, a choice without a message, a refusal
    (``message.refusal``), ``finish_reason`` ``content_filter``, a tool or function call, a
    visible answer that is empty while the judge wrote reasoning (``reasoning_content`` /
    ``reasoning``), ``length`` (unless `first_word_only`: a yes/no answer is its first word,
    so a cut after it is expected), any other ``finish_reason`` that is not a normal stop, and
    an empty or null ``content``. The returned line quotes what the server sent (at most 200
    characters of each text); the caller redacts the key.
    """
    choices = getattr(reply, "choices", None)
    if not choices:
        said = {
            k: v
            for k, v in (getattr(reply, "model_extra", None) or {}).items()
            if v not in (None, [], {})
        }
        hint = f"; the reply also holds {_quote(said)}" if said else ""
        return f"the reply has no choices (choices: {_quote(choices)}){hint}"
    choice = choices[0]
    finish = getattr(choice, "finish_reason", None)
    message = getattr(choice, "message", None)
    if message is None:
        return f"the reply's choice has no message (finish_reason {finish!r})"
    content = _text(getattr(message, "content", None))
    refusal = _text(getattr(message, "refusal", None))
    so_far = f"; answer so far: {_quote(content)}" if content and content.strip() else ""
    if refusal and refusal.strip():
        return f"the judge refused: {_quote(refusal)} (finish_reason {finish!r})"
    if finish == "content_filter":
        filters = _extra(choice, "content_filter_results") or {}
        hit = (
            sorted(k for k, v in filters.items() if isinstance(v, dict) and v.get("filtered"))
            if isinstance(filters, dict)
            else []
        )
        which = f" (filtered: {', '.join(hit)})" if hit else ""
        return f"the server's content filter stopped the answer{which}{so_far}"
    calls = getattr(message, "tool_calls", None) or []
    function_call = getattr(message, "function_call", None)
    if finish in ("tool_calls", "function_call") or calls or function_call:
        names = [getattr(getattr(c, "function", None), "name", None) for c in calls]
        if function_call is not None:
            names.append(getattr(function_call, "name", None))
        named = ", ".join(str(n) for n in names if n) or "unnamed"
        return (
            f"the judge called a tool ({named}) instead of answering "
            f"(finish_reason {finish!r}){so_far}"
        )
    if not (content and content.strip()):
        reasoning = _text(_extra(message, "reasoning_content")) or _text(
            _extra(message, "reasoning")
        )
        if reasoning and reasoning.strip():
            return (
                f"the visible answer is empty: the judge spent its tokens on reasoning "
                f"(finish_reason {finish!r}, max_tokens={max_tokens}; reasoning: "
                f"{_quote(reasoning, 120)}); raise max_tokens= or use a model that answers "
                "without reasoning"
            )
    if finish == "length" and not first_word_only:
        return (
            f"the answer was cut at max_tokens={max_tokens} (finish_reason 'length'); "
            f"raise max_tokens={so_far}"
        )
    if finish not in NORMAL_STOPS and finish != "length":
        return f"the answer ended with finish_reason {finish!r}, not a normal stop{so_far}"
    if not (content and content.strip()):
        shown = "null" if getattr(message, "content", None) is None else _quote(content)
        return f"the reply's content is empty ({shown}, finish_reason {finish!r})"
    return None


def yes_no_logprobs(
    choice: Any, content: str, minimum: float
) -> tuple[str, dict[str, Any], tuple[float, bool, dict[str, Any]] | None]:
    """Read a ``yesno`` verdict from a reply choice's first-token ``top_logprobs``.

    Returns ``(shortfall, extra, scored)``: ``scored`` is ``(P(yes)/(P(yes)+P(no)), passed,
    details)`` when yes and no together hold at least ``minimum`` (``min_yes_no_share``, in
    (0, 1]) of the first token's probability, else None; ``shortfall`` then says why (for the
    rubric parser's error), and ``extra`` carries ``yes_no_share`` for the details. A score is
    never made from tail mass.
    """
    from milr.critics.rubrics import yes_no_from_logprobs

    logprobs = getattr(choice, "logprobs", None)
    first = (getattr(logprobs, "content", None) or [None])[0]
    if first is None:
        return "", {}, None
    alts = [(t.token, t.logprob) for t in (first.top_logprobs or [])] or [
        (first.token, first.logprob)
    ]
    pair = yes_no_from_logprobs(alts)
    share = sum(pair) if pair is not None else 0.0
    extra: dict[str, Any] = {"yes_no_share": share}
    if pair is not None and share >= minimum:
        p_yes, p_no = pair
        score = p_yes / (p_yes + p_no)
        details = {"answer": content, "method": "logprobs", "p_yes": p_yes, "p_no": p_no}
        return "", extra, (score, score >= 0.5, {**details, **extra})
    shortfall = (
        f"yes and no hold {share:.1%} of the first token's probability "
        f"(below min_yes_no_share={minimum:g})"
        if pair is not None
        else f"neither yes nor no is among the first token's {len(alts)} top log-probabilities"
    )
    return shortfall, extra, None


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "xai-", "key-", "aiza", "pk-", "rk-")


def looks_like_secret(value: str) -> bool:
    """Heuristic: a string that is an API key rather than an environment variable's name."""
    low = value.lower()
    if low.startswith(_KEY_PREFIXES):
        return True
    if not ENV_NAME.match(value):
        return len(value) >= 20
    # long mixed-case/digit runs without separators are keys, not names like OPENAI_API_KEY
    return len(value) >= 32 and any(c.isdigit() for c in value) and "_" not in value
