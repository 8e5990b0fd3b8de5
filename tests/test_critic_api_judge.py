"""`api-judge` against a real HTTP server on 127.0.0.1 that answers like the chat-completions API."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from milr import Ensemble, MilrUserError, evaluate, get_registry
from milr.critics.api_judge import (
    WISE_PROMPT,
    APIJudgeCritic,
    JudgeReplyError,
    looks_like_secret,
    parse_wise,
    wiscore,
)
from milr.testing import CriticContract

KEY = "sk-test-5a8f3c2e9b7d41f0a6e2c8b4d9f1a3e7"
ENV = "MILR_TEST_JUDGE_KEY"


class FakeAPI:
    """Scripted behaviour chosen by words in the judge prompt; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def reply(self, body: dict, headers: dict) -> tuple[int, dict | str, dict]:
        text = body["messages"][0]["content"][0]["text"]
        url = body["messages"][0]["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        png = base64.b64decode(url.split(",", 1)[1])
        size = Image.open(io.BytesIO(png)).size
        with self.lock:
            self.attempts[text] = n = self.attempts.get(text, 0) + 1
            self.requests.append({"text": text, "headers": headers, "body": body, "size": size})
        if "slow" in text:
            time.sleep(0.6)
        if "flaky" in text and n == 1:
            return 500, {"error": {"message": "internal"}}, {}
        if "ratelimit" in text and n == 1:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if "forbidden" in text:
            return 401, {"error": {"message": "bad key"}}, {}
        if "notjson" in text:
            return 200, "<html>gateway</html>", {}
        if "rambling" in text:
            return 200, chat("I am not sure what this is."), {}
        if "Give three integer scores" in text:
            if "badgrades" in text:
                return 200, chat('{"consistency": 5, "realism": 1}'), {}
            grades = {"consistency": 2, "realism": 1, "aesthetic_quality": 1}
            if "explanation" in text.lower() and "WISE-NOTE" in text:
                grades["consistency"] = 1
            return 200, chat("```json\n" + json.dumps(grades) + "\n```"), {}
        if "nologprobs" in text or not body.get("logprobs"):
            return 200, chat("No."), {}
        p_yes = 0.8 if size[0] >= 64 else 0.3
        top = [
            {"token": "Yes", "logprob": math.log(p_yes * 0.9)},
            {"token": " yes", "logprob": math.log(p_yes * 0.1)},
            {"token": "No", "logprob": math.log(1 - p_yes)},
        ]
        return (
            200,
            chat(
                "Yes",
                {"content": [{"token": "Yes", "logprob": top[0]["logprob"], "top_logprobs": top}]},
            ),
            {},
        )


def chat(content: str, logprobs: dict | None = None) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake-4o-2026",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


@pytest.fixture
def api():
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            with fake.lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                assert self.path == "/v1/chat/completions", self.path
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload, extra = fake.reply(body, dict(self.headers))
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
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def key_env(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def make(api, **kw) -> APIJudgeCritic:
    params = {"base_url": api.url, "model": "fake-4o", "api_key_env": ENV, "backoff": 0.01}
    params.update(kw)
    return APIJudgeCritic(**params)


def img(size: int = 64, color=(200, 40, 40)) -> Image.Image:
    return Image.new("RGB", (size, size), color)


# -- yes/no -----------------------------------------------------------------------------------------


def test_yesno_logprobs_score_and_key_handling(api, caplog):
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
    # the key travels only in the Authorization header
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in api.requests)
    assert all(KEY not in json.dumps(r["body"]) for r in api.requests)
    everywhere = json.dumps([r.to_dict() for r in res]) + repr(critic) + json.dumps(critic.config())
    everywhere += caplog.text
    assert KEY not in everywhere and ENV in repr(critic)
    assert api.max_in_flight <= 2


def test_concurrency_limit_is_respected_and_used(api):
    critic = make(api, concurrency=3)
    critic.score_batch([img(64)] * 9, [f"prompt {i} slow" for i in range(9)], [{}] * 9)
    assert api.max_in_flight == 3


def test_answer_text_without_logprobs(api):
    res = make(api, logprobs=False).score(img(), "a dog")
    assert res.score == 0.0 and res.passed is False and res.details["method"] == "answer"
    assert "logprobs" not in api.requests[0]["body"]


def test_retry_after_500_and_429(api, caplog):
    critic = make(api)
    with caplog.at_level(logging.WARNING, logger="milr.critics.api_judge"):
        res = evaluate(critic, [img(), img()], ["a flaky sign", "a ratelimit sign"], None)
    assert [r.details["attempts"] for r in res] == [2, 2]
    assert [r.score for r in res] == pytest.approx([0.8, 0.8])
    assert "HTTP 500" in caplog.text and "HTTP 429" in caplog.text and KEY not in caplog.text


def test_timeout_retries_then_clear_per_image_error(api):
    critic = make(api, timeout=0.2, retries=1)
    with pytest.raises(
        JudgeReplyError, match=r"image 1: .*failed after 2 attempts: timed out after 0.2 s"
    ):
        critic.score_batch([img(), img()], ["a cat", "a slow cat"], [{}, {}])
    assert (
        api.attempts['Does this image show "a slow cat"? Answer with a single word: yes or no.']
        == 2
    )


@pytest.mark.parametrize(
    ("prompt", "pattern"),
    [
        ("rambling", "malformed reply .*starts with neither yes nor no"),
        ("notjson", "not JSON"),
        ("forbidden", f"refused the request: HTTP 401.*check the key in \\${ENV}"),
    ],
)
def test_malformed_or_refused_reply_names_the_image(api, prompt, pattern):
    with pytest.raises(JudgeReplyError, match=pattern) as info:
        make(api, retries=0).score_batch([img(), img()], ["fine", prompt], [{}, {}])
    assert "image 1" in str(info.value) and KEY not in str(info.value)


def test_ensemble_skip_policy_applies_to_judge_errors(api):
    color = get_registry().create_critic("color", target="red")
    ens = Ensemble([(color, 1.0), (make(api, retries=0), 1.0)], on_error="skip")
    res = ens.score(img(), "rambling")
    assert res.details["critics"]["api-judge"]["error"].startswith("JudgeReplyError")
    assert res.score == res.details["critics"]["color"]["score"]


# -- WISE -------------------------------------------------------------------------------------------


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


def test_custom_wise_prompt_with_literal_braces(api):
    template = 'Judge "{prompt}". {explanation}Give three integer scores as {"consistency": n, ...}'
    critic = make(api, rubric="wise", wise_prompt=template)
    res = critic.score(img(), "a fox", {"Explanation": "orange fur"})
    sent = api.requests[0]["text"]
    assert sent.startswith('Judge "a fox". What the image should show (explanation): orange fur')
    assert sent.endswith('{"consistency": n, ...}')
    assert res.details["prompt_sha256"] == hashlib.sha256(sent.encode()).hexdigest()
    assert critic.config()["wise_prompt"] == template
    with pytest.raises(MilrUserError, match="wise_prompt"):
        make(api, rubric="wise", wise_prompt="no placeholder")


def test_wise_bad_grades_are_a_clear_error(api):
    with pytest.raises(JudgeReplyError, match="outside 0-2|lacks"):
        make(api, rubric="wise", retries=0).score(img(), "badgrades")


def test_parse_wise_and_wiscore():
    g = parse_wise('Sure! {"Consistency": "2", "realism": 0, "aesthetics": 1} hope that helps')
    assert g == {"consistency": 2.0, "realism": 0.0, "aesthetic_quality": 1.0}
    assert wiscore(g) == pytest.approx(0.75)
    assert wiscore({"consistency": 2, "realism": 2, "aesthetic_quality": 2}) == 1.0
    with pytest.raises(ValueError, match="no JSON"):
        parse_wise("no json here")
    assert "{prompt}" in WISE_PROMPT


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
    with pytest.raises(MilrUserError, match=f"{ENV} is not set"):
        make(api).score(img(), "x")
    assert make(api, api_key_env="none").score(img(), "x").score == pytest.approx(0.8)
    assert "Authorization" not in api.requests[-1]["headers"]
    with pytest.raises(MilrUserError, match="base_url"):
        APIJudgeCritic(base_url="api.openai.com", model="m")
    with pytest.raises(MilrUserError, match="model=NAME"):
        APIJudgeCritic(base_url="http://x/v1")
    with pytest.raises(MilrUserError, match="rubric='gpt'"):
        APIJudgeCritic(base_url="http://x/v1", model="m", rubric="gpt")


_SERVER: dict = {}


class TestAPIJudgeContract(CriticContract):
    """The contract suite against a server started once for the class."""

    @pytest.fixture(autouse=True)
    def _server(self, api):
        _SERVER["api"] = api

    def make_critic(self):
        return make(_SERVER["api"], api_key_env="none")
