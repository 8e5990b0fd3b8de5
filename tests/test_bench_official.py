"""The official suites by name, their protocols, and WISE graded with WISE's own instructions.

A loopback `http.server` plays the raw file host (``OWNER/REPO/COMMIT/PATH``) with the real
GenEval and T2I-CompBench files from ``../shared/data``; another plays an OpenAI-compatible
judge and records every request. The WISE repository is a fake clone written here whose
grading scripts carry distinctive instructions. Nothing of milr's is mocked.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from milr.bench import official, protocol
from milr.bench.official import SUITES
from milr.bench.official import load as load_suite
from milr.bench.runner import BenchOptions, Outcome, run_bench
from milr.errors import MilrUserError

SHARED = {"djghosh13/geneval": "geneval", "Karine-Huang/T2I-CompBench": "t2i-compbench"}


def _shared_file(shared_data: Path, pin: official.PinnedFile) -> Path:
    return shared_data / SHARED[pin.repo] / Path(pin.path).name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def mirror_root(shared_data, tmp_path_factory) -> Path:
    """The shared GenEval and T2I-CompBench files laid out as OWNER/REPO/COMMIT/PATH."""
    root = tmp_path_factory.mktemp("mirror")
    for suite in ("geneval", "t2i-compbench"):
        for _, pin in SUITES[suite].files:
            dest = root / pin.key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(_shared_file(shared_data, pin).read_bytes())
    return root


@pytest.fixture(scope="module")
def mirror(mirror_root):
    server, url = _serve(functools.partial(_Quiet, directory=str(mirror_root)))
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(mirror, tmp_path, monkeypatch):
    """A fresh cache, the loopback mirror, and Hugging Face offline mode on (as in CI)."""
    monkeypatch.setenv("MILR_DATA_MIRROR", mirror)
    monkeypatch.setenv("MILR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MILR_OFFLINE", raising=False)
    return {"MILR_DATA_MIRROR": mirror, "MILR_CACHE": str(tmp_path / "cache")}


def test_the_shared_files_are_the_pinned_official_ones(shared_data):
    for suite in ("geneval", "t2i-compbench"):
        for _, pin in SUITES[suite].files:
            assert _sha(_shared_file(shared_data, pin)) == pin.sha256, pin.path
            assert len(pin.commit) == 40 and len(pin.sha256) == 64


def test_named_suites_are_downloaded_checked_and_cached(env, tmp_path, monkeypatch):
    geneval = load_suite("geneval")
    assert geneval.format == "geneval" and len(geneval) == 553
    (pinned,) = geneval.official["files"]
    assert pinned["url"] == f"{env['MILR_DATA_MIRROR']}/{SUITES['geneval'].files[0][1].key}"
    assert (
        pinned["commit"] == official.GENEVAL_COMMIT and geneval.official["protocol"]["seeds"] == 4
    )
    cached = tmp_path / "cache" / "data" / SUITES["geneval"].files[0][1].key
    assert _sha(cached) == pinned["sha256"]

    t2i = load_suite("t2i-compbench")  # the graded categories: 3d_spatial is left out
    assert t2i.groups == [
        "color",
        "shape",
        "texture",
        "spatial",
        "non_spatial",
        "numeracy",
        "complex",
    ]
    assert len(t2i) == 2100 and t2i.official["protocol"]["seeds"] == 10
    picked = load_suite("t2i-compbench:shape,color")
    assert picked.groups == ["color", "shape"] and len(picked) == 600  # suite order kept
    with pytest.raises(MilrUserError, match=r"unknown t2i-compbench category 'colour'; pick from"):
        load_suite("t2i-compbench:colour")
    with pytest.raises(MilrUserError, match="--format wise contradicts"):
        load_suite("geneval", format="wise")

    # offline, no mirror: the cache answers; a file never fetched is one line naming it
    monkeypatch.delenv("MILR_DATA_MIRROR")
    monkeypatch.setenv("MILR_OFFLINE", "1")
    assert load_suite("geneval").content_sha256 == geneval.content_sha256
    with pytest.raises(MilrUserError) as info:
        load_suite("t2i-compbench:3d_spatial")
    message = str(info.value)
    assert "\n" not in message and "3d_spatial_val.txt is not in the cache" in message
    assert "as a path instead of the name" in message


def test_offline_and_uncached_the_command_is_one_line_and_exit_2(tmp_path):
    from cli_helpers import run_milr

    env = {"MILR_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1", "MILR_DATA_MIRROR": ""}
    proc = run_milr("bench", "geneval", "--critic", "color", "--out", str(tmp_path / "r"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: djghosh13/geneval@af4902f prompts/evaluation_metadata.jsonl is not in the cache "
        f"({tmp_path / 'empty' / 'data' / 'djghosh13/geneval' / official.GENEVAL_COMMIT / 'prompts'}) "
        "and milr is offline (MILR_OFFLINE or HF_HUB_OFFLINE); set MILR_DATA_MIRROR, go online "
        "once, or pass the geneval file or directory as a path instead of the name"
    ]
    assert not (tmp_path / "r").exists()


def test_a_local_mirror_directory_and_a_mirror_with_other_bytes(mirror_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MILR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MILR_DATA_MIRROR", str(mirror_root))
    assert len(load_suite("t2i-compbench:numeracy")) == 300
    # WISE's pinned files served with other content (a WISE-format fixture): refused, not cached
    root = tmp_path / "bad-mirror"
    for _, pin in SUITES["wise"].files:
        (root / pin.key).parent.mkdir(parents=True, exist_ok=True)
        (root / pin.key).write_text(json.dumps(WISE_ITEMS))
    server, url = _serve(functools.partial(_Quiet, directory=str(root)))
    try:
        monkeypatch.setenv("MILR_DATA_MIRROR", url)
        with pytest.raises(
            MilrUserError, match=r"does not hold the pinned PKU-YuanGroup/WISE@eb51174"
        ):
            load_suite("wise")
    finally:
        server.shutdown()
        server.server_close()
    assert not list((tmp_path / "cache").rglob("*.json"))


class StillSolver:
    """No optimisation: one flat image per seed (weight-free)."""

    def __init__(self, opts, device):
        pass

    def solve(self, prompt, seed):
        image = Image.new("RGB", (16, 16), (seed % 256, 60, 90))
        traj = {"steps": 0, "stop_reason": "max_steps", "scores": [0.0], "critic_calls": 0}
        return Outcome(image, image, traj, None)


def _bench(tmp_path, suite, name, **kw):
    opts = BenchOptions(
        suite=suite, critic=["color:target=red"], steps=0, out=str(tmp_path / name),
        progress=False, report=False, **kw,
    )  # fmt: skip
    summary = run_bench(opts, solver_factory=StillSolver)
    return summary, (tmp_path / name / "summary.md").read_text(), opts


def test_protocol_defaults_and_the_non_standard_label(env, tmp_path, shared_data):
    summary, md, opts = _bench(tmp_path, "geneval", "g", limit=2)
    assert opts.seeds == 4 and summary["records"] == 8  # GenEval: 4 images per prompt
    assert "**non-standard protocol** — 4 images per prompt, only 2 of the 553 prompts" in md
    assert "djghosh13/geneval@af4902f prompts/evaluation_metadata.jsonl" in md
    run = json.loads((tmp_path / "g" / "run.json").read_text())
    assert run["official"]["files"][0]["sha256"] == SUITES["geneval"].files[0][1].sha256
    assert run["settings"]["seeds"] == 4 and summary["protocol"]["standard"] is False
    # the same run covering all 553 prompts at 4 images each is the official protocol
    line = protocol.protocol_line(run, prompts=553)
    assert line.startswith("Protocol: **GenEval** official — 4 images per prompt, all 553")

    summary, md, opts = _bench(tmp_path, "t2i-compbench:color", "t", limit=1)
    assert opts.seeds == 10 and summary["records"] == 10
    assert "— 10 images per prompt, only 1 of the 300 prompts" in md
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    line = protocol.protocol_line(run, prompts=300)
    assert line.startswith("Protocol: **T2I-CompBench** official — 10 images per prompt")

    summary, md, _ = _bench(tmp_path, "t2i-compbench:color", "t2", limit=1, seeds=2)
    assert summary["records"] == 2 and summary["protocol"]["standard"] is False
    assert "— 2 images per prompt (the T2I-CompBench protocol is 10), only 1 of the 300" in md

    # a file given by path keeps today's default (1) and is labelled as such
    summary, md, _ = _bench(
        tmp_path, str(shared_data / "t2i-compbench" / "color_val.txt"), "p", limit=1
    )
    assert (
        summary["records"] == 1 and "**non-standard protocol** — a suite file given by path" in md
    )


def test_a_category_without_an_evaluator_is_refused_before_generation(env, tmp_path):
    from cli_helpers import run_milr

    out = tmp_path / "run"
    proc = run_milr(
        "bench", "t2i-compbench:3d_spatial", "--critic", "color:target=red", "--eval-critic",
        f"preset:t2i-compbench,weights_dir={tmp_path / 'weights'}", "--out", str(out),
        "--no-progress", env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    *notes, line = proc.stderr.strip().splitlines()  # notes: the download of 3d_spatial_val.txt
    assert all(n.startswith("Downloading data from") for n in notes) and line.startswith("error:")
    assert (
        "'3d_spatial' (300 prompts) has no evaluator in the evaluation critic 't2i-compbench'"
        in line
    )
    assert "Traceback" not in proc.stderr
    assert not (out / "records").exists() and not (out / "images").exists()
    # the same check guards a directory given by path (all eight files, 3d_spatial included)
    built = []

    def factory(opts, device):
        built.append(opts)
        raise AssertionError("no solver for a suite the evaluator cannot grade")

    mixed = tmp_path / "t2i"
    mixed.mkdir()
    (mixed / "color_val.txt").write_text("a red apple\n")
    (mixed / "3d_spatial_val.txt").write_text("a cat in front of a dog\n")
    opts = BenchOptions(
        suite=str(mixed), critic=["color"], out=str(tmp_path / "r2"), progress=False,
        eval_critic=[f"preset:t2i-compbench,weights_dir={tmp_path / 'weights'}"],
    )  # fmt: skip
    with pytest.raises(MilrUserError, match=r"pick graded categories \(e.g. t2i-compbench:color\)"):
        run_bench(opts, solver_factory=factory)
    assert built == []


@pytest.mark.slow
def test_the_whole_command_by_name_with_a_tiny_janus(env, tmp_path):
    from cli_helpers import run_milr

    from milr.testing import save_tiny_janus

    model = save_tiny_janus(tmp_path / "tiny", seed=0)
    out = tmp_path / "run"
    proc = run_milr(
        "bench", "geneval", "--model", str(model), "--critic", "color:target=red",
        "--device", "cpu", "--steps", "1", "--limit", "1", "--out", str(out), "--no-progress",
        "--no-report", env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "**non-standard protocol** — 4 images per prompt, only 1 of the 553" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["official"]["name"] == "geneval" and run["settings"]["seeds"] == 4
    records = [
        json.loads(x) for f in (out / "records").glob("*.jsonl") for x in f.read_text().splitlines()
    ]
    assert sorted(r["seed_index"] for r in records) == [0, 1, 2, 3]
    assert all(r["milr"]["score"] is not None for r in records)


# --- WISE: WISE's own instructions from a clone ---------------------------------------------

WISE_ITEMS = [
    {"prompt_id": pid, "Prompt": f"prompt {pid}", "Explanation": f"explanation {pid}",
     "Category": cat, "Subcategory": sub}
    for pid, cat, sub in (
        (1, "Cultural knowledge", "Festival"), (401, "time", "Longitudinal time"),
        (568, "Space", "Occlusion"), (701, "Biology", "State"),
        (801, "Physical Knowledge", "Mechanics"), (901, "Chemistry", "Combustion"),
    )
]  # fmt: skip

LEGACY_SCRIPT = '''
import openai

def build_evaluation_messages(prompt_data, image_base64):
    return [
        {"role": "system", "content": [{"type": "text", "text": "ZEBRA-SYSTEM-7 audit \\u00e9 strictly."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"""QUOKKA-USER-3 {{braces}} kept
PROMPT: "{prompt_data['Prompt']}"
EXPLANATION: "{prompt_data['Explanation']}"
end."""},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_base64}"}},
            ],
        },
    ]

def evaluate_image(msgs, cfg):
    return openai.ChatCompletion.create(model=cfg["model"], messages=msgs, temperature=0.0, max_tokens=1234)
'''

VERIFIED_SCRIPT = '''
def build_evaluation_messages(prompt_data, image_base64):
    return [
        {"role": "system", "content": [{"type": "text", "text": "OKAPI-SYSTEM-9"}]},
        {"role": "user", "content": [
            {"type": "text", "text": f"""NARWHAL-USER-5 {prompt_data['Prompt']} | {prompt_data['Explanation']}"""},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_base64}"}},
        ]},
    ]

def _post(messages, cfg):
    payload = {"model": cfg["model"], "messages": messages, "temperature": 0.0, "max_tokens": 77,
               "chat_template_kwargs": {"enable_thinking": False}}
    return payload
'''


def _expected_user_text(item: dict) -> str:
    return (
        "QUOKKA-USER-3 {braces} kept\n"
        f'PROMPT: "{item["Prompt"]}"\nEXPLANATION: "{item["Explanation"]}"\nend.'
    )


@pytest.fixture
def wise_clone(tmp_path) -> Path:
    clone = tmp_path / "WISE"
    (clone / "WISE_legacy").mkdir(parents=True)
    (clone / "WISE_legacy" / "gpt_eval.py").write_text(
        LEGACY_SCRIPT.replace("{{braces}}", "{{braces}}")
    )
    (clone / "vllm_eval.py").write_text(VERIFIED_SCRIPT)
    return clone


class Judge:
    """An OpenAI-compatible judge that records each request body and answers by system text."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def answer(self, body: dict) -> str:
        first = body["messages"][0]
        text = (
            first["content"][0]["text"] if isinstance(first["content"], list) else first["content"]
        )
        if "ZEBRA" in text:  # WISE legacy format (bold names, no colon on the last)
            return "**Consistency**: 2\nRealism: 1\nAesthetic Quality 0"
        if "OKAPI" in text:
            return "<think>the image shows it</think>\nScore: 1"
        return '{"consistency": 1, "realism": 1, "aesthetic_quality": 1}'  # milr's wording


@pytest.fixture
def judge():
    state = Judge()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.bodies.append(body)
            reply = {
                "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": state.answer(body)}}],
            }  # fmt: skip
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server, url = _serve(Handler)
    state.url = url + "/v1"
    yield state
    server.shutdown()
    server.server_close()


def _wise_bench(tmp_path, judge, name, eval_critic):
    suite = tmp_path / "wise.json"
    suite.write_text(json.dumps(WISE_ITEMS))
    opts = BenchOptions(
        suite=str(suite), critic=["color:target=red"], eval_critic=eval_critic, steps=0,
        out=str(tmp_path / name), progress=False, report=False,
    )  # fmt: skip
    summary = run_bench(opts, solver_factory=StillSolver)
    return summary, (tmp_path / name / "summary.md").read_text()


def test_wise_repo_sends_wises_own_instructions_verbatim(tmp_path, judge, wise_clone):
    spec = f"preset:wise,base_url={judge.url},api_key_env=none,wise_repo={wise_clone}"
    summary, md = _wise_bench(tmp_path, judge, "legacy", [spec])
    assert len(judge.bodies) == 12  # 6 prompts x (base, MILR)
    by_text = {}
    for body in judge.bodies:
        assert body["model"] == "gpt-4o-2024-05-13" and body["max_tokens"] == 1234
        assert body["temperature"] == 0.0 and "chat_template_kwargs" not in body
        system, user = body["messages"]
        assert system == {
            "role": "system",
            "content": [{"type": "text", "text": "ZEBRA-SYSTEM-7 audit \u00e9 strictly."}],
        }
        assert user["role"] == "user" and [p["type"] for p in user["content"]] == [
            "text",
            "image_url",
        ]
        url = user["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (16, 16)
        by_text[user["content"][0]["text"]] = body
    assert set(by_text) == {_expected_user_text(item) for item in WISE_ITEMS}
    # WISE's reply format read: WiScore (0.7*2 + 0.2*1 + 0.1*0) / 2 = 0.8 for every image
    assert summary["overall"]["milr"] == pytest.approx(0.8)
    assert "WISE's own instructions, read from the clone" in md and "milr's own wording" not in md
    assert "legacy weights 0.800, Verified weights 0.800" in md


def test_without_wise_repo_the_summary_says_milrs_wording(tmp_path, judge):
    spec = f"preset:wise,base_url={judge.url},api_key_env=none"
    summary, md = _wise_bench(tmp_path, judge, "own", [spec])
    body = judge.bodies[0]
    assert [m["role"] for m in body["messages"]] == ["user"] and body["max_tokens"] == 300
    assert summary["overall"]["milr"] == pytest.approx(0.5)
    assert "**milr's own wording**, not WISE's" in md


def test_verified_and_legacy_judges_together_give_both_overalls(tmp_path, judge, wise_clone):
    legacy = f"preset:wise,base_url={judge.url},api_key_env=none,wise_repo={wise_clone}"
    verified = f"preset:wise-verified,base_url={judge.url},wise_repo={wise_clone}"
    summary, md = _wise_bench(tmp_path, judge, "both", [legacy, verified])
    bodies = [b for b in judge.bodies if "OKAPI" in b["messages"][0]["content"][0]["text"]]
    assert len(bodies) == 12
    for body in bodies:
        assert body["model"] == "Qwen3.5-35B-A3B" and body["max_tokens"] == 77
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        text = body["messages"][1]["content"][0]["text"]
        assert text.startswith("NARWHAL-USER-5 prompt ") and " | explanation " in text
    by_judge = {(o["judge"], o["side"]): o for o in summary["wise"]["overall"]}
    assert by_judge[("wise", "milr")]["legacy"] == pytest.approx(0.8)
    assert by_judge[("wise-verified", "milr")]["verified"] == pytest.approx(1.0)
    assert (
        "- overall judge `wise-verified` (milr): legacy weights 1.000, Verified weights 1.000" in md
    )
    assert "Verified 0.40 Cultural + 0.12 Time" in md and "legacy 0.4 Cultural + 0.167 Time" in md


def test_wise_verified_records_are_grouped_by_category_name():
    from milr.bench.suites import wise_category

    # WISE_Verified moved the id ranges (Physics is 761-880); the category names decide
    assert wise_category("Physical Knowledge", "Mechanics", 770) == "Physics"
    assert wise_category("time", "Horizontal time", 520) == "Time"
    assert protocol.weighted_overall(
        {"Cultural": 1.0, "Time": 0.0}, protocol.WISE_VERIFIED_WEIGHTS
    ) == pytest.approx(0.4 / 0.52)


def test_a_modified_grading_script_is_one_line_naming_the_line(tmp_path, wise_clone):
    from milr.critics._wise_official import load_protocol

    script = wise_clone / "WISE_legacy" / "gpt_eval.py"
    script.write_text(
        LEGACY_SCRIPT.replace("prompt_data['Prompt']", "prompt_data['Prompt'].upper()")
    )
    with pytest.raises(MilrUserError) as info:
        load_protocol(str(wise_clone), "wise")
    assert "\n" not in str(info.value)
    assert f"{script} line " in str(
        info.value
    ) and "placeholder other than prompt_data['FIELD']" in str(info.value)
    with pytest.raises(MilrUserError, match="holds no vllm_eval.py"):
        load_protocol(str(tmp_path), "wise-verified")
    from milr import build_critic

    with pytest.raises(MilrUserError, match="needs rubric=wise or rubric=wise-verified"):
        build_critic([f"api-judge:base_url=http://127.0.0.1:9/v1,model=m,wise_repo={wise_clone}"])


@pytest.mark.parametrize(
    ("reply", "grades"),
    [
        ("Consistency: 2\nRealism: 1\nAesthetic Quality: 0", (2, 1, 0)),
        ("**Consistency** 1\n**Realism**: 2\n**Aesthetic Quality**: 2", (1, 2, 2)),
        ("2\n0\n1", (2, 0, 1)),
    ],
)
def test_wise_legacy_reply_format(reply, grades):
    from milr.critics._wise_official import parse_legacy

    read = parse_legacy(reply)
    assert tuple(read.details["grades"].values()) == grades
    c, r, a = grades
    assert read.score == pytest.approx((0.7 * c + 0.2 * r + 0.1 * a) / 2)


def test_wise_verified_reply_format():
    from milr.critics._wise_official import parse_verified
    from milr.critics.rubrics import RubricReplyError

    assert parse_verified("<think>Score: 0?</think>Score: 1").score == 1.0
    assert parse_verified("0").passed is False
    with pytest.raises(RubricReplyError):
        parse_verified("maybe")


def test_nothing_is_downloaded_for_help_or_a_path(shared_data, tmp_path, monkeypatch):
    from cli_helpers import run_milr

    cache = tmp_path / "cache"
    monkeypatch.setenv("MILR_CACHE", str(cache))
    monkeypatch.setenv("MILR_DATA_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    assert len(load_suite(str(shared_data / "t2i-compbench" / "color_val.txt"))) == 300
    proc = run_milr("bench", "--help", env={"MILR_CACHE": str(cache)})
    assert proc.returncode == 0 and "geneval" in proc.stdout
    assert not cache.exists()
