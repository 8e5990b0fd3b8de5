"""The whole `milr bench` command for T2I-CompBench and WISE, with a tiny random Janus.

The same loopback pieces as ``test_bench_official.py`` (imported from it): a raw-file-host
mirror serving the real T2I-CompBench files from ``../shared/data``, an OpenAI-compatible judge
that records each request, and a fake WISE clone whose grading script carries distinctive
instructions. WISE's pinned files cannot be served (no fixture has their SHA-256), so WISE by
name is checked to refuse a mirror with other bytes, and the path form runs end to end.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from pathlib import Path

import pytest
import test_bench_official as shared
from cli_helpers import run_milr
from PIL import Image

from milr.bench.official import SUITES, T2I_COMMIT

# the loopback mirror, judge and WISE clone of the by-name tests, shared as fixtures
env, judge, mirror, mirror_root, wise_clone = (
    shared.env, shared.judge, shared.mirror, shared.mirror_root, shared.wise_clone,
)  # fmt: skip
WISE_ITEMS, _expected_user_text, _Quiet, _serve = (
    shared.WISE_ITEMS, shared._expected_user_text, shared._Quiet, shared._serve,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory) -> Path:
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny") / "janus", seed=0)


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_t2i_compbench_color_by_name_at_ten_images_per_prompt(env, tmp_path, tiny_janus):
    out = tmp_path / "run"
    proc = run_milr(
        "bench", "t2i-compbench:color", "--model", str(tiny_janus), "--critic",
        "color:target=red", "--device", "cpu", "--steps", "1", "--limit", "1", "--out", str(out),
        "--no-progress", "--no-report", env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the protocol's 10 images per prompt; one prompt of 300 is not the whole protocol
    assert (
        "**non-standard protocol** — 10 images per prompt, only 1 of the 300 prompts; prompts: "
        f"Karine-Huang/T2I-CompBench@{T2I_COMMIT[:7]} examples/dataset/color_val.txt"
    ) in proc.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["seeds"] == 10 and run["official"]["categories"] == ["color"]
    assert run["official"]["protocol"]["seeds"] == 10
    (pinned,) = run["official"]["files"]
    assert pinned["sha256"] == dict(SUITES["t2i-compbench"].files)["color"].sha256
    assert pinned["url"].startswith(env["MILR_DATA_MIRROR"] + "/Karine-Huang/T2I-CompBench/")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["seeds"] == summary["protocol"]["protocol_seeds"] == 10
    assert summary["protocol"]["standard"] is False and summary["protocol"]["subset"] == [1, 300]
    records = _records(out)
    assert sorted(r["seed_index"] for r in records) == list(range(10))
    assert {r["group"] for r in records} == {"color"}
    assert all(r["base"]["score"] is not None and r["milr"]["score"] is not None for r in records)


def test_wise_by_name_refuses_a_mirror_without_the_pinned_files(tmp_path, tiny_janus, judge):
    root = tmp_path / "mirror"
    for _, pin in SUITES["wise"].files:  # a WISE-format fixture at the pinned paths
        (root / pin.key).parent.mkdir(parents=True, exist_ok=True)
        (root / pin.key).write_text(json.dumps(WISE_ITEMS))
    server, url = _serve(functools.partial(_Quiet, directory=str(root)))
    out = tmp_path / "run"
    try:
        proc = run_milr(
            "bench", "wise", "--model", str(tiny_janus), "--critic", "color:target=red",
            "--eval-critic", f"preset:wise,base_url={judge.url},api_key_env=none",
            "--device", "cpu", "--out", str(out), "--no-progress",
            env={"MILR_DATA_MIRROR": url, "MILR_CACHE": str(tmp_path / "cache")}, timeout=300,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2, proc.stderr
    *notes, line = proc.stderr.strip().splitlines()  # notes: pooch's "Downloading data from"
    assert all(n.startswith("Downloading data from") for n in notes), proc.stderr
    pin = SUITES["wise"].files[0][1]
    assert line == (
        f"error: {url}/{pin.key} does not hold the pinned PKU-YuanGroup/WISE@eb51174 "
        f"{pin.path} (SHA-256 differs from {pin.sha256[:12]}...); fix the mirror or pass the "
        "wise file or directory as a path instead of the name"
    )
    assert "Traceback" not in proc.stderr and not out.exists() and judge.bodies == []
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_wise_file_by_path_graded_with_wises_instructions(tmp_path, tiny_janus, judge, wise_clone):
    suite = tmp_path / "wise.json"
    suite.write_text(json.dumps(WISE_ITEMS))
    out = tmp_path / "run"
    proc = run_milr(
        "bench", str(suite), "--model", str(tiny_janus), "--critic", "color:target=red",
        "--eval-critic", f"preset:wise,base_url={judge.url},api_key_env=none,wise_repo={wise_clone}",
        "--device", "cpu", "--steps", "1", "--limit", "2", "--out", str(out), "--no-progress",
        "--no-report", env={"MILR_CACHE": str(tmp_path / "cache")}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "**non-standard protocol** — a suite file given by path" in proc.stdout
    assert "WISE's own instructions, read from the clone" in proc.stdout
    records = _records(out)
    assert len(records) == 2 and all(r["seed_index"] == 0 for r in records)  # WISE: 1 per prompt
    assert len(judge.bodies) == 4  # 2 prompts x (base, MILR)
    texts = set()
    for body in judge.bodies:
        assert body["model"] == "gpt-4o-2024-05-13" and body["max_tokens"] == 1234
        system, user = body["messages"]
        assert system["content"] == [
            {"type": "text", "text": "ZEBRA-SYSTEM-7 audit \u00e9 strictly."}
        ]
        texts.add(user["content"][0]["text"])
        url = user["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
    assert texts == {_expected_user_text(item) for item in WISE_ITEMS[:2]}
    # WISE's reply format read: WiScore (0.7*2 + 0.2*1 + 0.1*0) / 2 = 0.8 for every image
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["base"] == pytest.approx(0.8)
    assert summary["overall"]["milr"] == pytest.approx(0.8)


@pytest.mark.parametrize("suite, prompts", [("wise", 1000), ("wise-verified", 1000)])
def test_wise_by_name_with_the_real_files_from_a_local_mirror(suite, prompts, tmp_path, tiny_janus):
    """With ``MILR_TEST_WISE_MIRROR`` naming a folder that holds WISE's real files at
    ``PKU-YuanGroup/WISE/COMMIT/PATH`` (an air-gapped cluster's mirror), `milr bench wise` by name
    checks their pinned SHA-256, caches them and runs at WISE's protocol (1 image per prompt).
    Skipped without it: the files are not in the shared test data and are never vendored."""
    import os

    root = os.environ.get("MILR_TEST_WISE_MIRROR")
    if not root:
        pytest.skip("MILR_TEST_WISE_MIRROR is not set (a folder with WISE's real files)")
    out = tmp_path / "run"
    env = {**os.environ, "MILR_DATA_MIRROR": root, "MILR_CACHE": str(tmp_path / "cache")}
    proc = run_milr(
        "bench", suite, "--model", str(tiny_janus), "--critic", "color:target=red",
        "--device", "cpu", "--steps", "1", "--limit", "2", "--out", str(out),
        "--no-progress", "--no-report", env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"1 image per prompt, only 2 of the {prompts} prompts" in proc.stdout
    run = json.loads((out / "run.json").read_text())
    pins = {pin.path: pin.sha256 for _, pin in SUITES[suite].files}
    assert {f["path"]: f["sha256"] for f in run["official"]["files"]} == pins
    assert run["settings"]["seeds"] == 1 and len(_records(out)) == 2
