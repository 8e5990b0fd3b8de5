"""`api-judge` on the official openai client, against a real HTTP server on 127.0.0.1.

The server is a stdlib `http.server` that speaks the chat-completions JSON (and Azure's
deployment paths); its behaviour is chosen by words in the judge prompt. Nothing of milr's is
mocked.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from milr import Ensemble, ExternalServiceError, MilrUserError, evaluate, get_registry
from milr.critics.api_judge import APIJudgeCritic, JudgeReplyError, looks_like_secret
from milr.critics.rubrics import WISE_TEMPLATE, YESNO_TEMPLATE
from milr.testing import CriticContract

KEY = "sk-test-5a8f3c2e9b7d41f0a6e2c8b4d9f1a3e7"
#: The server refuses every image of this size (a 400: the client does not retry it).
REJECTED = (47, 47)
ENV = "MILR_TEST_JUDGE_KEY"


def chat(
    content: str | None, logprobs: dict | None = None, finish: str | None = "stop", **message
) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content, **message},
        "finish_reason": finish,
        "logprobs": logprobs,
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-4o-2026",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


def top_logprobs(pairs: list[tuple[str, float]]) -> dict:
    top = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in pairs]
    first = {"token": pairs[0][0], "logprob": top[0]["logprob"], "bytes": None}
    return {"content": [{**first, "top_logprobs": top}]}


def _call(name: str) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": "{}"}}


#: Every way a server answers 200 without a usable grade, chosen by a word in the prompt.
NO_GRADE: dict[str, dict] = {
    "case-refusal": chat(None, refusal="I'm sorry, I can't assist with that request."),
    "case-null": chat(None),
    "case-empty": chat(""),
    "case-blank": chat("  \n "),
    "case-length": chat("1. two dogs: both are there; 2. the sofa", finish="length"),
    "case-filter": {
        **chat("", finish="content_filter"),
        "choices": [
            {
                **chat("", finish="content_filter")["choices"][0],
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "high"},
                },
            }
        ],
    },
    "case-tool": chat(None, finish="tool_calls", tool_calls=[_call("describe_image")]),
    "case-function": chat(
        None, finish="function_call", function_call={"name": "grade", "arguments": "{}"}
    ),
    "case-nochoices": {
        **chat("x"),
        "choices": [],
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {"sexual": {"filtered": True, "severity": "medium"}},
            }
        ],
    },
    "case-reasoning": chat(
        "", finish="length", reasoning_content="The user asks whether the image shows"
    ),
    "case-abort": chat("Ye", finish="abort"),
    # yes/no from log-probabilities: the judge answered neither word and yes + no hold 3 %
    "case-tail": chat(
        "Maybe", top_logprobs([("Maybe", 0.9), ("Perhaps", 0.05), ("Yes", 0.02), ("No", 0.01)])
    ),
    "case-boldyes": chat(
        "Yes", top_logprobs([("**", 0.6), ("Yes", 0.3), ("I", 0.05), ("No", 0.01)])
    ),
    "case-noword": chat("Maybe", top_logprobs([("Maybe", 0.9), ("Perhaps", 0.05)])),
    # a gateway that answers 200 with an error object instead of a completion
    "case-errorbody": {"error": {"message": "model overloaded, retry later", "code": 503}},
    "case-nomessage": {**chat("x"), "choices": [{"index": 0, "finish_reason": "stop"}]},
    # content as a list of parts (some servers): read as its text
    "case-parts": chat([{"type": "text", "text": "No, it is blue."}]),
    # a yes/no answer cut after its one token is the expected shape, not a failure
    "case-onetoken": chat("No", top_logprobs([("No", 0.7), ("Yes", 0.25)]), finish="length"),
}


class FakeAPI:
    """Scripted behaviour chosen by words in the judge prompt; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self.root = ""

    def reply(self, body: dict, headers: dict, path: str) -> tuple[int, dict | str, dict]:
        text = body["messages"][0]["content"][0]["text"]
        url = body["messages"][0]["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        png = base64.b64decode(url.split(",", 1)[1])
        size = Image.open(io.BytesIO(png)).size
        auth = headers.get("authorization") or headers.get("api-key") or ""
        with self.lock:
            self.attempts[text] = n = self.attempts.get(text, 0) + 1
            self.requests.append(
                {
                    "text": text,
                    "headers": headers,
                    "body": body,
                    "size": size,
                    "path": path,
                    "t": time.monotonic(),
                }
            )
        if "slow" in text:
            time.sleep(0.6)
        if size == REJECTED:  # one specific image fails, whatever the prompt (not retried)
            return 400, {"error": {"message": "image rejected by the content filter"}}, {}
        if "flaky" in text and n == 1:
            return 500, {"error": {"message": "internal"}}, {}
        if "retry-seconds" in text and n == 1:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "2"}
        if "retry-date" in text and n == 1:
            when = email.utils.formatdate(time.time() + 3.2, usegmt=True)
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": when}
        if "retry-forever" in text:
            return 429, {"error": {"message": "quota exhausted"}}, {"Retry-After": "600"}
        if "echo-401" in text:  # a gateway that repeats the bearer token in its error body
            return 401, {"error": {"message": f"invalid credentials: {auth}"}}, {}
        if "echo-answer" in text:
            return 200, chat(f"No. You sent {auth} as your key."), {}
        if "notjson" in text:
            return 200, "<html>gateway</html>", {}
        for marker, reply in NO_GRADE.items():
            if marker in text:
                return 200, reply, {}
        if "rambling" in text:
            return 200, chat("I am not sure what this is."), {}
        if "Give three whole-number grades" in text or "GRADE-WISE" in text:
            if "badgrades" in text:
                return 200, chat('{"consistency": 5, "realism": 1, "aesthetic_quality": 0}'), {}
            if "wiseplain" in text:  # WISE's own reply format
                return 200, chat("**Consistency:** 2\n**Realism:** 1\n**Aesthetic Quality:** 0"), {}
            grades = {"consistency": 2, "realism": 1, "aesthetic_quality": 1}
            if "WISE-NOTE" in text:
                grades["consistency"] = 1
            return 200, chat("```json\n" + json.dumps(grades) + "\n```"), {}
        if "Final Score: N" in text:
            return 200, chat("The apple is red but small.\nFinal Score: 4"), {}
        if '{"Score": -1}' in text:
            return 200, chat('1. two dogs: one is missing\n{"Score": -1}'), {}
        if "nologprobs" in text or not body.get("logprobs"):
            return 200, chat("No."), {}
        if "spacemark" in text:  # issue #11 case 1: lmdeploy's "ĠNo"
            return 200, chat("Yes", top_logprobs([("Yes", 0.55), ("\u0120No", 0.40)])), {}
        if "sentencepiece" in text:
            pairs = [("\u2581no", 0.6), ("\u2581Yes", 0.3), ("No", 0.05)]
            return 200, chat("no", top_logprobs(pairs)), {}
        p_yes = 0.8 if size[0] >= 64 else 0.3
        pairs = [("Yes", p_yes * 0.9), (" yes", p_yes * 0.1), ("No", 1 - p_yes)]
        return 200, chat("Yes", top_logprobs(pairs)), {}


def serve(fake: FakeAPI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            with fake.lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = self.path
                text = body["messages"][0]["content"][0]["text"]
                if "trickle" in text:  # headers at once, then one byte per second
                    data = json.dumps(chat("Yes, it does show that, clearly.")).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.flush()
                    with fake.lock:
                        fake.requests.append({"text": text, "t": time.monotonic(), "path": path})
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(1.0)
                    return
                status, payload, extra = fake.reply(
                    body, {k.lower(): v for k, v in self.headers.items()}, path
                )
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                time.sleep(0.05)  # overlap requests so the concurrency limit is observable
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with fake.lock:
                    fake.in_flight -= 1

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    fake.root = f"http://127.0.0.1:{server.server_address[1]}"
    fake.url = fake.root + "/v1"
    return server


@pytest.fixture
def api():
    fake = FakeAPI()
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def key_env(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def make(api, **kw) -> APIJudgeCritic:
    params = {"base_url": api.url, "model": "fake-4o", "api_key_env": ENV}
    params.update(kw)
    return APIJudgeCritic(**params)


def img(size: int = 64, color=(200, 40, 40)) -> Image.Image:
    return Image.new("RGB", (size, size), color)


# -- yes/no -----------------------------------------------------------------------------------------


def test_yesno_logprobs_score_and_key_handling(api, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-ambient-key-must-not-be-sent-0")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-key-must-not-be-sent-000000")
    caplog.set_level(logging.DEBUG)
    critic = make(api, concurrency=2)
    images = [img(64), img(32), img(80).convert("RGBA"), img(64).convert("P")]
    res = evaluate(critic, images, ["a red square"] * 4, None)
    assert [r.score for r in res] == pytest.approx([0.8, 0.3, 0.8, 0.8])
    assert [r.passed for r in res] == [True, False, True, True]
    d = res[0].details
    assert d["judge_model"] == "fake-4o" and d["reply_model"] == "fake-4o-2026"
    assert d["method"] == "logprobs" and d["rubric"] == "yesno" and d["attempts"] == 1
    sent = api.requests[0]["text"]
    assert sent == 'Does this image show "a red square"? Answer with a single word: yes or no.'
    assert d["prompt_sha256"] == hashlib.sha256(sent.encode()).hexdigest()
    assert sorted(r["size"] for r in api.requests) == [(32, 32), (64, 64), (64, 64), (80, 80)]
    assert all(r["path"] == "/v1/chat/completions" for r in api.requests)
    # the key travels only in the Authorization header
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in api.requests)
    assert all(KEY not in json.dumps(r["body"]) for r in api.requests)
    assert all("ambient" not in json.dumps(r["headers"]) for r in api.requests)
    everywhere = json.dumps([r.to_dict() for r in res]) + repr(critic) + json.dumps(critic.config())
    everywhere += caplog.text
    assert KEY not in everywhere and ENV in repr(critic)
    assert api.max_in_flight <= 2


def test_space_marker_tokens_are_read_as_words(api):
    # issue #11 case 1: "ĠNo" is "no"; main scored this 1.0
    res = make(api).score(img(), "a spacemark dog")
    assert res.score == pytest.approx(0.55 / 0.95) and round(res.score, 3) == 0.579
    res = make(api).score(img(), "a sentencepiece dog")
    assert res.score == pytest.approx(0.3 / 0.95) and res.passed is False


#: (prompt marker, rubric, the per-image reason the error gives): every way a server answers
#: without a usable grade. The docs' table of these cases quotes the same messages.
NO_GRADE_MESSAGES = [
    ("case-refusal", "yesno",
     "the judge refused: \"I'm sorry, I can't assist with that request.\" (finish_reason 'stop')"),
    ("case-null", "yesno", "the reply's content is empty (null, finish_reason 'stop')"),
    ("case-empty", "wise", "the reply's content is empty ('', finish_reason 'stop')"),
    ("case-blank", "likert5", "the reply's content is empty ('', finish_reason 'stop')"),
    ("case-length", "checklist",
     "the answer was cut at max_tokens=512 (finish_reason 'length'); raise max_tokens=; "
     "answer so far: '1. two dogs: both are there; 2. the sofa'"),
    ("case-filter", "yesno",
     "the server's content filter stopped the answer (filtered: violence)"),
    ("case-tool", "yesno",
     "the judge called a tool (describe_image) instead of answering (finish_reason 'tool_calls')"),
    ("case-function", "wise",
     "the judge called a tool (grade) instead of answering (finish_reason 'function_call')"),
    ("case-nochoices", "yesno",
     "the reply has no choices (choices: '[]'); the reply also holds '{\"prompt_filter_results\": "
     "[{\"content_filter_results\": {\"sexual\": {\"filtered\": true, \"severity\": \"medium\"}}, "
     "\"prompt_index\": 0}]}'"),
    ("case-reasoning", "yesno",
     "the visible answer is empty: the judge spent its tokens on reasoning (finish_reason "
     "'length', max_tokens=1; reasoning: 'The user asks whether the image shows'); raise "
     "max_tokens= or use a model that answers without reasoning"),
    ("case-errorbody", "likert5",
     "the reply has no choices (choices: 'null'); the reply also holds '{\"error\": {\"code\": "
     "503, \"message\": \"model overloaded, retry later\"}}'"),
    ("case-nomessage", "yesno", "the reply's choice has no message (finish_reason 'stop')"),
    ("case-abort", "yesno",
     "the answer ended with finish_reason 'abort', not a normal stop; answer so far: 'Ye'"),
    ("case-tail", "yesno",
     "the reply cannot be read as rubric 'yesno': the answer 'Maybe' starts with neither yes "
     "nor no; yes and no hold 3.0% of the first token's probability (below "
     "min_yes_no_share=0.5); reply: 'Maybe'"),
    ("case-noword", "yesno",
     "the reply cannot be read as rubric 'yesno': the answer 'Maybe' starts with neither yes "
     "nor no; neither yes nor no is among the first token's 2 top log-probabilities; reply: "
     "'Maybe'"),
]  # fmt: skip


@pytest.mark.parametrize(("marker", "rubric", "reason"), NO_GRADE_MESSAGES)
def test_a_reply_without_a_usable_grade_fails_the_image_quoting_the_server(
    api, marker, rubric, reason
):
    """Each case is a per-image error in the server's words, never a score; the other image of
    the batch keeps its score."""
    critic = make(api, rubric=rubric, retries=0)
    with pytest.raises(JudgeReplyError) as info:
        critic.score_batch([img(64), img(64)], [f"a {marker} dog", "a red square"], [{}, {}])
    exc = info.value
    assert exc.failures == [(0, reason)]
    assert exc.results[0] is None and exc.results[1] is not None
    assert str(exc).count("\n") == 0 or len(str(exc).splitlines()) == 1


def test_yes_no_share_threshold_is_a_declared_parameter(api):
    # below the share, a readable first word decides; the share is recorded
    res = make(api).score(img(), "a case-boldyes dog")
    assert (res.score, res.passed, res.details["method"]) == (1.0, True, "answer")
    assert res.details["yes_no_share"] == pytest.approx(0.31)
    # at a share the user accepts, the probabilities decide
    res = make(api, min_yes_no_share=0.3).score(img(), "a case-boldyes dog")
    assert res.details["method"] == "logprobs" and res.score == pytest.approx(0.3 / 0.31)
    res = make(api, min_yes_no_share=0.02).score(img(), "a case-tail dog")
    assert res.score == pytest.approx(2 / 3) and res.details["yes_no_share"] == pytest.approx(0.03)
    # content sent as a list of text parts is read as its text
    res = make(api, rubric="yesno", logprobs=False).score(img(), "a case-parts dog")
    assert (res.score, res.details["answer"]) == (0.0, "No, it is blue.")
    # a one-token yes/no answer cut by max_tokens=1 is the expected shape
    res = make(api).score(img(), "a case-onetoken dog")
    assert res.score == pytest.approx(0.25 / 0.95) and res.details["method"] == "logprobs"
    for bad, match in ((0, "must be > 0"), (1.5, "must be <= 1"), ("half", "must be a number")):
        with pytest.raises(MilrUserError, match=match):
            make(api, min_yes_no_share=bad)
    assert "min_yes_no_share" in APIJudgeCritic.Params.model_fields


def test_concurrency_limit_is_respected_and_used(api):
    critic = make(api, concurrency=3)
    critic.score_batch([img(64)] * 9, [f"prompt {i} slow" for i in range(9)], [{}] * 9)
    assert api.max_in_flight == 3


def test_answer_text_without_logprobs(api):
    res = make(api, logprobs=False).score(img(), "a dog")
    assert res.score == 0.0 and res.passed is False and res.details["method"] == "answer"
    assert "logprobs" not in api.requests[0]["body"]


# -- retries and deadlines ----------------------------------------------------------------------------


def test_retry_after_500_and_retry_after_seconds(api):
    critic = make(api)
    res = evaluate(critic, [img(), img()], ["a flaky sign", "a retry-seconds sign"], None)
    assert [r.details["attempts"] for r in res] == [2, 2]
    assert [r.score for r in res] == pytest.approx([0.8, 0.8])
    first, second = (r["t"] for r in api.requests if "retry-seconds" in r["text"])
    assert 1.9 <= second - first < 3.5


def test_retry_after_http_date_is_honoured(api):
    # issue #11 case 3: RFC 9110 allows an HTTP date; main ignored it and retried after ~1 s
    res = make(api).score(img(), "a retry-date sign")
    assert res.details["attempts"] == 2
    first, second = (r["t"] for r in api.requests if "retry-date" in r["text"])
    # the date has 1-second resolution: 3.2 s ahead becomes a wait of 2.2-3.2 s
    assert 2.0 <= second - first < 4.5


def test_retry_after_beyond_the_cap_fails_at_once_and_says_so(api):
    t0 = time.monotonic()
    with pytest.raises(JudgeReplyError, match=r"HTTP 429: quota exhausted .*Retry-After '600'"):
        make(api).score(img(), "a retry-forever sign")
    assert time.monotonic() - t0 < 3 and len(api.requests) == 1


def test_trickling_reply_is_cut_at_the_total_deadline(api):
    t0 = time.monotonic()
    with pytest.raises(JudgeReplyError, match=r"no complete reply within timeout=1.5 s") as info:
        make(api, timeout=1.5, retries=0).score(img(), "a trickle cat")
    elapsed = time.monotonic() - t0
    assert 1.4 <= elapsed < 1.5 + 2.0, elapsed
    assert info.value.failures[0][0] == 0


def test_timeout_applies_to_each_attempt(api):
    t0 = time.monotonic()
    with pytest.raises(JudgeReplyError, match=r"image 1: no complete reply within timeout=1 s"):
        make(api, timeout=1, retries=1).score_batch(
            [img(), img()], ["a cat", "a trickle cat"], [{}, {}]
        )
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed < 2 * 1 + 1.5 + 2.0  # two attempts, one backoff of at most 1 s
    assert sum("trickle" in r["text"] for r in api.requests) == 2


@pytest.mark.parametrize(
    ("prompt", "pattern"),
    [
        ("rambling", "cannot be read as rubric 'yesno'.*neither yes nor no"),
        ("notjson", "rubric 'yesno'|HTTP|JSON|decode"),
        ("echo-401", f"HTTP 401: invalid credentials: Bearer \\*\\*\\*.*check the key in \\${ENV}"),
    ],
)
def test_malformed_or_refused_reply_names_the_image(api, prompt, pattern):
    with pytest.raises(JudgeReplyError, match=pattern) as info:
        make(api, retries=0).score_batch([img(), img()], ["fine", prompt], [{}, {}])
    assert "image 1" in str(info.value) and KEY not in str(info.value)
    assert str(info.value).startswith(f"api-judge at {api.url}/chat/completions: image 1: ")
    assert [i for i, _ in info.value.failures] == [1]
    assert isinstance(info.value, ExternalServiceError)


def test_unreachable_server_names_the_image_and_the_connection_error():
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    critic = APIJudgeCritic(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env=ENV, retries=0
    )
    with pytest.raises(JudgeReplyError, match=r"image 0: connection failed after 1 attempts: "):
        critic.score(img(), "a cat")


def test_key_echoed_in_an_answer_is_redacted_in_details(api):
    res = make(api, logprobs=False).score(img(), "an echo-answer cat")
    assert res.score == 0.0 and KEY not in json.dumps(res.to_dict())
    assert "Bearer ***" in res.details["answer"]


def test_ensemble_skip_policy_applies_to_judge_errors(api):
    color = get_registry().create_critic("color", target="red")
    ens = Ensemble([(color, 1.0), (make(api, retries=0), 1.0)], on_error="skip")
    res = ens.score(img(), "rambling")
    assert res.details["critics"]["api-judge"]["error"].startswith("JudgeReplyError")
    assert res.score == res.details["critics"]["color"]["score"]


# -- nothing already paid for is lost (one image of a batch fails at the server) --------------------


def _judged(api) -> list[tuple[int, int]]:
    return sorted(r["size"] for r in api.requests)


def test_a_failed_image_keeps_the_others_results(api):
    critic = make(api, retries=0)
    with pytest.raises(JudgeReplyError) as info:
        evaluate(critic, [img(64), img(47), img(32)], ["a red square"] * 3, None)
    exc = info.value
    assert [i for i, _ in exc.failures] == [1] and "content filter" in exc.failures[0][1]
    assert exc.results is not None and exc.results[1] is None
    assert [exc.results[0].score, exc.results[2].score] == pytest.approx([0.8, 0.3])
    assert _judged(api) == [(32, 32), (47, 47), (64, 64)]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_ensemble_fails_only_the_image_the_judge_failed(api, on_error):
    """Every member still scores the batch; under ``raise`` the failed image has no score and
    the error carries the others' ensemble results; under ``skip`` it is scored without the
    judge. Each image reaches the server once."""
    color = get_registry().create_critic("color", target="red")
    ens = Ensemble([(color, 1.0), (make(api, retries=0), 1.0)], on_error=on_error)
    images = [img(64), img(47), img(32)]
    if on_error == "raise":
        with pytest.raises(ExternalServiceError) as info:
            evaluate(ens, images, ["a red square"] * 3, None)
        exc = info.value
        assert isinstance(exc, JudgeReplyError)  # the member's own error, for the whole batch
        assert exc.service == f"api-judge at {api.url}/chat/completions"
        assert [i for i, _ in exc.failures] == [1] and exc.results[1] is None
        kept = [exc.results[0], exc.results[2]]
    else:
        res = evaluate(ens, images, ["a red square"] * 3, None)
        assert res[1].details["critics"]["api-judge"]["error"].startswith("JudgeReplyError")
        assert res[1].score == res[1].details["critics"]["color"]["score"] == 1.0
        kept = [res[0], res[2]]
    assert [r.score for r in kept] == pytest.approx([(1 + 0.8) / 2, (1 + 0.3) / 2])
    assert _judged(api) == [(32, 32), (47, 47), (64, 64)]


def test_score_pair_does_not_judge_the_scored_image_again(api, tmp_path):
    """`milr bench` scoring: the base image was judged in the failed batch; it keeps that
    result (also in the score cache) and only the failed image is tried again, alone."""
    from milr.bench.cache import image_sha256
    from milr.bench.scoring import open_cache, score_pair
    from milr.bench.suites import BenchPrompt

    critic = make(api, retries=0)
    prompt = BenchPrompt("p1", "a red square", "g", {})
    images = [img(64), img(47)]
    hashes = [image_sha256(im) for im in images]
    for cache in (None, open_cache(tmp_path / "cache.sqlite")):
        api.requests.clear()
        sides, batch_error = score_pair(critic, images, prompt, cache, hashes)
        assert batch_error is not None and "content filter" in batch_error
        assert sides[0].score == pytest.approx(0.8) and sides[0].error is None
        assert sides[1].score is None and "content filter" in sides[1].error
        assert _judged(api) == [(47, 47), (47, 47), (64, 64)]  # the batch, then image 1 alone
    api.requests.clear()
    sides, _ = score_pair(critic, images, prompt, cache, hashes)
    assert _judged(api) == [(47, 47), (47, 47)] and sides[0].score == pytest.approx(0.8)


def test_batched_engine_scoring_keeps_the_scored_candidates(api):
    """`milr bench --batch-prompts`: a judge failing on one prompt's image fails that prompt
    only, and the other prompts' images are not sent again."""
    from milr.engine.batch_phases import ScoreRequest, score_batch
    from milr.phases import Candidate

    critic = make(api, retries=0)
    sizes = [64, 47, 32]
    requests = [
        ScoreRequest(critic, [Candidate(None, [], [], None, image=img(n))], "a red square", {})
        for n in sizes
    ]
    errors = score_batch(requests)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], ExternalServiceError)
    assert [requests[i].candidates[0].score for i in (0, 2)] == pytest.approx([0.8, 0.3])
    assert _judged(api) == [(32, 32), (47, 47), (47, 47), (64, 64)]


def test_milr_score_prints_the_scored_images_and_names_the_failed_one(api, tmp_path):
    from cli_helpers import run_milr

    paths = [tmp_path / "a.png", tmp_path / "rejected.png", tmp_path / "c.png"]
    for path, n in zip(paths, (64, 47, 32)):
        img(n).save(path)
    spec = f"api-judge:base_url={api.url},model=fake-4o,api_key_env={ENV},retries=0"
    args = ["score", *map(str, paths), "--prompt", "a red square", "--critic", spec]
    proc = run_milr(*args, env={ENV: KEY})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {paths[1]}: api-judge at {api.url}/chat/completions: HTTP 400: image rejected "
        "by the content filter"
    ]
    assert f"{paths[0]}: score 0.8000  verdict pass" in proc.stdout
    assert f"{paths[2]}: score 0.3000  verdict fail" in proc.stdout
    assert f"{paths[1]}: not scored" in proc.stdout
    proc = run_milr(*args, "--json", env={ENV: KEY})
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1
    results = json.loads(proc.stdout)["results"]
    assert [r["score"] for r in results] == pytest.approx([0.8, None, 0.3])
    assert "content filter" in results[1]["error"] and "Traceback" not in proc.stderr
    assert len(api.requests) == 6  # each image once per run


# -- rubrics ----------------------------------------------------------------------------------------


def test_wise_rubric_scores_and_uses_explanation(api):
    critic = make(api, rubric="wise")
    res = evaluate(
        critic,
        [img(), img()],
        ["a bird", "a bird"],
        [{}, {"Explanation": "WISE-NOTE: the national bird of Japan, a green pheasant"}],
    )
    assert res[0].details["grades"] == {
        "consistency": 2.0,
        "realism": 1.0,
        "aesthetic_quality": 1.0,
    }
    assert res[0].score == pytest.approx((0.7 * 2 + 0.2 * 1 + 0.1 * 1) / 2)
    assert res[1].score == pytest.approx((0.7 * 1 + 0.2 * 1 + 0.1 * 1) / 2)
    assert res[0].passed is None
    texts = [r["text"] for r in api.requests]
    assert any("WISE-NOTE" in t for t in texts) and not all("WISE-NOTE" in t for t in texts)
    assert res[0].details["prompt_sha256"] != res[1].details["prompt_sha256"]
    assert (
        api.requests[0]["body"]["max_tokens"] == 300 and "logprobs" not in api.requests[0]["body"]
    )


def test_wise_plain_line_reply_from_a_template_file(api, tmp_path):
    # issue #11 case 2: WISE's own prompt asks for plain lines; main failed with "no JSON object"
    f = tmp_path / "wise_official.txt"
    f.write_text("GRADE-WISE wiseplain\nPrompt: {prompt}\n{explanation}Consistency: ...\n")
    critic = make(api, rubric="wise", template_file=str(f))
    res = critic.score(img(), "a fox", {"Explanation": "orange fur"})
    assert res.score == pytest.approx(0.8)
    assert res.details["grades"] == {"consistency": 2.0, "realism": 1.0, "aesthetic_quality": 0.0}
    sent = api.requests[0]["text"]
    assert "Prompt: a fox\nWhat the image should show (explanation): orange fur\n" in sent
    assert critic.config()["template_sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_deprecated_wise_prompt_still_works(api):
    template = 'GRADE-WISE Judge "{prompt}". {explanation}Scores as {"consistency": n, ...}'
    with pytest.warns(DeprecationWarning, match="wise_prompt"):
        critic = make(api, rubric="wise", wise_prompt=template)
    res = critic.score(img(), "a fox", {"Explanation": "orange fur"})
    sent = api.requests[0]["text"]
    assert sent.startswith('GRADE-WISE Judge "a fox". What the image should show (explanation)')
    assert sent.endswith('{"consistency": n, ...}')
    assert res.details["prompt_sha256"] == hashlib.sha256(sent.encode()).hexdigest()
    assert critic.config()["template"] == template
    with pytest.warns(DeprecationWarning, match="backoff"):
        make(api, backoff=0.5)
    with pytest.raises(MilrUserError, match=r"template must contain \{prompt\}"):
        make(api, rubric="wise", template="no placeholder")


def test_likert5_and_checklist_rubrics(api):
    res = make(api, rubric="likert5").score(img(), "a small apple")
    assert res.score == pytest.approx(0.75) and res.details["final_score"] == 4.0
    res = make(api, rubric="checklist").score(img(), "two dogs")
    assert (res.score, res.passed, res.details["checklist_score"]) == (0.0, False, -1)
    assert api.requests[-1]["body"]["max_tokens"] == 512


def test_wise_bad_grades_are_a_clear_error(api):
    with pytest.raises(JudgeReplyError, match="outside 0-2"):
        make(api, rubric="wise", retries=0).score(img(), "badgrades")


# -- Azure ------------------------------------------------------------------------------------------


def test_azure_deployment_path_version_and_key_header(api):
    critic = make(
        api,
        base_url=api.root,
        api_type="azure",
        deployment="gpt4o-eval",
        api_version="2024-10-21",
    )
    res = critic.score(img(), "a red square")
    assert res.score == pytest.approx(0.8)
    req = api.requests[0]
    parts = urlsplit(req["path"])
    assert parts.path == "/openai/deployments/gpt4o-eval/chat/completions"
    assert parse_qs(parts.query) == {"api-version": ["2024-10-21"]}
    assert req["headers"].get("api-key") == KEY
    assert critic.endpoint.endswith("/openai/deployments/gpt4o-eval/chat/completions")
    with pytest.raises(MilrUserError, match="api_version"):
        make(api, api_type="azure")
    with pytest.raises(MilrUserError, match="api_type=azure"):
        make(api, api_version="2024-10-21")


# -- parameters ---------------------------------------------------------------------------------------


def test_key_like_values_are_refused_without_echo():
    for bad in (KEY, "sk_live_abcdef", "hf_abcdefghijklmnop", "Ab3dEf9hIj2kLm4nOp6qRs8tUv0wXy1zAB"):
        with pytest.raises(MilrUserError) as info:
            APIJudgeCritic(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=bad)
        assert bad not in str(info.value)
    with pytest.raises(MilrUserError, match="never pass the API key") as info:
        get_registry().create_critic("api-judge", base_url="http://x/v1", model="m", api_key=KEY)
    assert KEY not in str(info.value)
    assert not looks_like_secret("OPENAI_API_KEY") and looks_like_secret(KEY)


def test_missing_env_var_and_other_user_errors(monkeypatch, api):
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient-key-must-not-be-sent-000000")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-ambient-key-must-not-be-sent-0")
    with pytest.raises(MilrUserError, match=f"{ENV} is not set"):
        make(api).score(img(), "x")
    assert make(api, api_key_env="none").score(img(), "x").score == pytest.approx(0.8)
    headers = api.requests[-1]["headers"]
    assert "authorization" not in headers and "api-key" not in headers
    assert "ambient" not in json.dumps(headers)
    with pytest.raises(MilrUserError, match="base_url"):
        APIJudgeCritic(base_url="api.openai.com", model="m")
    with pytest.raises(MilrUserError, match="'model' is required: e.g. model=gpt-4o"):
        APIJudgeCritic(base_url="http://x/v1")
    with pytest.raises(MilrUserError, match="'rubric'='gpt' must be one of 'yesno', 'wise'"):
        APIJudgeCritic(base_url="http://x/v1", model="m", rubric="gpt")
    for bad, match in (
        ({"timeout": 0}, "'timeout'=0 must be > 0"),
        ({"timeout": True}, "'timeout'=True is a boolean"),
        ({"concurrency": 0}, "'concurrency'=0 must be >= 1"),
        ({"api_key_env": "MY-KEY"}, "not an environment variable name"),
        ({"tmeout": 3}, "unknown parameter 'tmeout'.*did you mean 'timeout'"),
    ):
        with pytest.raises(MilrUserError, match=match):
            APIJudgeCritic(base_url="http://x/v1", model="m", **bad)
    critic = APIJudgeCritic(base_url="http://x/v1/", model="m", timeout="2.5")
    assert critic.timeout == 2.5 and critic.base_url == "http://x/v1"
    assert (
        critic.config()["api_key_env"] == "OPENAI_API_KEY" and "template_sha256" in critic.config()
    )
    assert make(api).judge_prompt("a {x} sign", {}) == YESNO_TEMPLATE.replace(
        "{prompt}", "a {x} sign"
    )
    assert "{prompt}" in WISE_TEMPLATE and "{explanation}" in WISE_TEMPLATE


_SERVER: dict = {}


class TestAPIJudgeContract(CriticContract):
    """The contract suite against a server started once for the class."""

    @pytest.fixture(autouse=True)
    def _server(self, api):
        _SERVER["api"] = api

    def make_critic(self):
        return make(_SERVER["api"], api_key_env="none")


# -- the CLI: one line per failed image, and no key anywhere a run writes -----------------------------

SOLVER = '''
from PIL import Image
from milr.bench.runner import Outcome


class StillSolver:
    """No optimisation: one flat image per seed, so the run exercises only the evaluation."""

    def __init__(self, opts, device):
        pass

    def solve(self, prompt, seed):
        image = Image.new("RGB", (32, 32), (seed % 256, 60, 90))
        traj = {"steps": 0, "stop_reason": "max_steps", "scores": [0.0], "rewards": [-1.0],
                "passed": [False], "critic_calls": 0}
        return Outcome(image, image, traj, {"seed": seed})


def make_solver(opts, device):
    return StillSolver(opts, device)
'''


def _all_text_under(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_milr_score_judge_failure_is_one_line_with_image_endpoint_reason(api, tmp_path):
    from cli_helpers import run_milr

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    img(64).save(good)
    img(64).save(bad)
    spec = f"api-judge:base_url={api.url},model=fake-4o,api_key_env={ENV},retries=0,logprobs=false"
    proc = run_milr(
        "score", str(bad), "--prompt", "an echo-401 cat", "--critic", spec, env={ENV: KEY}
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {bad}: api-judge at {api.url}/chat/completions: HTTP 401: invalid credentials: "
        f"Bearer *** (check the key in ${ENV})"
    ]
    assert "please report" not in proc.stderr and "Traceback" not in proc.stderr
    assert KEY not in proc.stdout + proc.stderr
    # a working image and an answer that echoes the key: exit 0, key redacted in the output
    proc = run_milr(
        "score",
        str(good),
        "--prompt",
        "an echo-answer cat",
        "--critic",
        spec,
        "--json",
        env={ENV: KEY},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["results"][0]
    assert "Bearer ***" in out["critics"]["api-judge"]["details"]["answer"]
    assert KEY not in proc.stdout + proc.stderr


def test_milr_bench_with_a_key_echoing_server_writes_the_key_nowhere(api, tmp_path):
    from cli_helpers import run_still_bench

    site = tmp_path / "site"
    site.mkdir()
    (site / "still_solver.py").write_text(SOLVER)
    suite = tmp_path / "wise.json"
    items = [
        {
            "prompt_id": 1,
            "Prompt": "an echo-401 lantern",
            "Explanation": "x",
            "Category": "Cultural knowledge",
            "Subcategory": "Festival",
        },
        {
            "prompt_id": 2,
            "Prompt": "an echo-answer lantern",
            "Explanation": "y",
            "Category": "Natural science",
            "Subcategory": "Physics",
        },
        {
            "prompt_id": 3,
            "Prompt": "a case-refusal lantern",
            "Explanation": "z",
            "Category": "Natural science",
            "Subcategory": "Physics",
        },
    ]
    suite.write_text(json.dumps(items))
    out = tmp_path / "run"
    spec = f"api-judge:base_url={api.url},model=fake-4o,api_key_env={ENV},retries=0,logprobs=false"
    env = {ENV: KEY, "PYTHONPATH": str(site), "MILR_DEBUG": "1"}
    proc, records = run_still_bench(suite, spec, out, env, timeout=300)
    assert proc.returncode == 1, proc.stderr  # records failed (401): the run went on, exits 1
    assert "records failed; first of each kind:" in proc.stderr
    refused = [r["milr"] for r in records if r["prompt"] == "a case-refusal lantern"]
    assert refused and all(
        m["score"] is None and "the judge refused: \"I'm sorry, I can't assist" in m["error"]
        for m in refused
    )
    records = [r for r in records if r["prompt"] != "a case-refusal lantern"]
    errors = [r["milr"]["error"] for r in records if r["milr"] and r["milr"]["error"]]
    answers = [
        json.dumps(r["milr"]["details"]) for r in records if r["milr"] and not r["milr"]["error"]
    ]
    assert errors and all("HTTP 401: invalid credentials: Bearer ***" in e for e in errors)
    assert answers and all("Bearer ***" in a for a in answers)
    written = _all_text_under(out)
    assert b"Bearer ***" in written  # the server's texts were kept, only the key is gone
    assert KEY.encode() not in written
    assert KEY not in proc.stdout + proc.stderr
