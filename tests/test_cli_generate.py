"""`milr generate` end to end on a tiny random Janus: files, exit codes, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_helpers import milr_executable, run_milr  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny_janus_cli") / "model", seed=0)


def test_generate_writes_images_trajectory_and_plot(tiny_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_milr(
        "generate", "a red square", "--model", str(tiny_dir), "--critic", "color:target=red",
        "--critic", "colorfulness:weight=0.5",
        "--steps", "2", "--seed", "3", "--select", "best", "--out", str(out),
        "--max-reasoning-tokens", "8", "--text-k", "0.5", "--json", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] <= 2 and summary["stop_reason"] in {"max_steps", "threshold"}
    for name in ("initial.png", "final.png", "best.png", "trajectory.json", "reward.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "trajectory.json").read_text())
    assert data["config"]["select"] == "best" and data["config"]["seed"] == 3
    assert set(data["steps"][0]["critics"]) == {"color", "colorfulness"}
    assert data["critic"]["config"]["members"][1]["weight"] == 0.5


@pytest.mark.parametrize(
    "args,needle",
    [
        (["", "--critic", "color"], "empty prompt"),
        (["x", "--critic", "color", "--image-k", "0"], "--image-k 0.0 must lie in (0, 1]"),
        (["x", "--critic", "color", "--steps", "0"], "--steps 0 must be a positive integer"),
        (["x", "--critic", "color", "--text-steps", "2"], "--text-steps 2 applies only to"),
        (
            ["x", "--critic", "color", "--mode", "image_text", "--image-steps", "-1"],
            "--image-steps",
        ),
        (["x", "--critic", "color", "--lr", "-1"], "--lr -1.0 must be a positive number"),
        (["x", "--critic", "nosuchcritic"], "unknown critic"),
        (["x", "--critic", "color", "--compile", "--kv-cache", "dynamic"], "--compile needs"),
    ],
)
def test_user_errors_exit_2_with_one_line(tiny_dir, args, needle):
    proc = run_milr("generate", *args[:1], "--model", str(tiny_dir), *args[1:])
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr


def test_not_a_janus_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    proc = run_milr("generate", "x", "--model", str(tmp_path), "--critic", "color")
    assert proc.returncode == 2 and "model_type='llama'" in proc.stderr


#: A critic plugin that appends one line to $MILR_TEST_PROBE per scored batch: a signal of
#: progress that cannot be skipped (a progress bar may skip redraws on a busy machine).
PROBE_PLUGIN = """
    import os
    import milr

    class ProbeCritic(milr.Critic):
        name = "probe"
        description = "0.5 for every image; one line per scored batch in $MILR_TEST_PROBE"

        def score_batch(self, images, prompts, metadata):
            with open(os.environ["MILR_TEST_PROBE"], "a", encoding="utf-8") as fh:
                fh.write(f"{len(images)}\\n")
            return [milr.CriticResult(0.5, None, {}) for _ in images]

    @milr.hookimpl
    def register_critics(register):
        register(ProbeCritic)
"""


def _default_sigint() -> None:
    """In the child before exec: SIGINT as a terminal's Ctrl-C finds it. A shell that starts
    the suite in the background (`... &`, nohup, CI runners) has it ignored, and an ignored
    signal stays ignored across exec, so Python would never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_writes_what_it_has(tiny_dir, tmp_path):
    from plugin_fixtures import load_env, make_distribution

    site = make_distribution(
        tmp_path / "site", "milr-probe", "0.1", {"probe_plugin": PROBE_PLUGIN},
        {"probe": "probe_plugin"},
    )  # fmt: skip
    probe = tmp_path / "scored.txt"
    out = tmp_path / "interrupted"
    env = dict(
        os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(site), MILR_TEST_PROBE=str(probe),
        **load_env("milr-probe"),
    )  # fmt: skip
    cmd = [
        milr_executable(), "generate", "a red square", "--model", str(tiny_dir),
        "--critic", "color:target=red", "--critic", "probe", "--steps", "500",
        "--threshold", "0", "--mode", "image", "--out", str(out), "-q",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in play at this point
    )
    try:
        deadline = time.monotonic() + 300
        scored = 0
        # step 0 (the model's own image) and MILR steps 1 and 2 each score once
        while scored < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            scored = len(probe.read_text().splitlines()) if probe.exists() else 0
        if scored < 3:
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(
                f"milr generate scored {scored} times before "
                + ("it exited" if proc.returncode not in (-9, None) else "the 300 s deadline")
                + f" (exit {proc.returncode}); stderr:\n{err.decode(errors='replace')[-1500:]}"
            )
        proc.send_signal(signal.SIGINT)
        _, err_bytes = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_bytes.decode(errors="replace")
    assert proc.returncode == 130, f"exit {proc.returncode}, stderr:\n{err[-1500:]}"
    assert "interrupted after" in err, err[-1500:]
    data = json.loads((out / "trajectory.json").read_text())
    assert data["stop_reason"] == "interrupted" and len(data["steps"]) >= 2, data["stop_reason"]
    assert (out / "initial.png").is_file() and (out / "final.png").is_file()


def test_generate_module_import_is_cheap():
    code = (
        "import sys, milr.cli.generate; "
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_prompt_style_and_prompt_file(tiny_dir, tmp_path):
    """#12.1: the trajectory records the exact prompts; a prompt file replaces the layout."""
    prompt_file = tmp_path / "prompts.toml"
    prompt_file.write_text(
        'system = ""\n'
        'instruction = "draw {prompt}"\n'
        'reasoning_template = "<|User|>: {instruction}\\n\\n<|Assistant|>:"\n'
        'image_template = "<|User|>: {text}\\n\\n<|Assistant|>:"\n'
    )
    out = tmp_path / "run"
    proc = run_milr(
        "generate", "a red square", "--model", str(tiny_dir), "--critic", "color:target=red",
        "--prompt-file", str(prompt_file), "--steps", "1", "--max-reasoning-tokens", "4",
        "--text-k", "0.5", "--mode", "interleaved", "--latent-dtype", "float32", "-q",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "trajectory.json").read_text())
    assert data["prompts"]["style"] == "file:prompts.toml"
    assert data["prompts"]["reasoning"].startswith("<bos> <|User|> : draw a red square")
    assert data["prompts"]["image"].endswith("<|Assistant|> : <begin_of_image>")
    assert data["config"]["latent_dtype"] == "float32" and data["config"]["mode"] == "interleaved"
    for args, needle in (
        (["--prompt-style", "hf"], "chat template"),
        (["--prompt-file", str(tmp_path / "missing.toml")], "cannot read prompt file"),
        (["--prompt-style", "paper", "--prompt-file", str(prompt_file)], "both given"),
    ):
        proc = run_milr("generate", "x", "--model", str(tiny_dir), "--critic", "color", *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr


def test_sequential_budgets_and_text_prefix_from_the_command_line(tiny_dir, tmp_path):
    """#12.2: --text-steps/--image-steps set the phases of image_text; --text-prefix is recorded."""
    out = tmp_path / "run"
    proc = run_milr(
        "generate", "a red square", "--model", str(tiny_dir), "--critic", "color:target=red",
        "--mode", "image_text", "--image-steps", "2", "--text-steps", "1", "--threshold", "0",
        "--text-prefix", "at_least_one", "--max-reasoning-tokens", "4", "-q", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "trajectory.json").read_text())
    cfg = data["config"]
    assert (cfg["mode"], cfg["image_steps"], cfg["text_steps"]) == ("image_text", 2, 1)
    assert cfg["text_prefix"] == "at_least_one"
    updated = [step["updated"] for step in data["steps"][1:]]
    assert updated == [["image"], ["image"], ["text"]]


def test_generate_with_a_resample_control(tiny_dir, tmp_path):
    """--control resample: the control runs after MILR with the same seed, into OUT/control;
    its step 0 is MILR's step 0 (the same draws) and it never updates the latents."""
    out = tmp_path / "run"
    proc = run_milr(
        "generate", "a red square", "--model", str(tiny_dir), "--critic", "color:target=red",
        "--steps", "3", "--seed", "3", "--threshold", "0", "--out", str(out),
        "--max-reasoning-tokens", "8", "--text-k", "0.5", "--control", "resample", "--json",
        "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["control"]["control"] == "resample" and summary["control"]["steps"] == 3
    assert summary["selected_optimised"] in (True, False)
    milr_traj = json.loads((out / "trajectory.json").read_text())
    ctl = json.loads((out / "control" / "trajectory.json").read_text())
    assert ctl["config"]["control"] == "resample" and milr_traj["config"]["control"] is None
    assert ctl["steps"][0]["score"] == milr_traj["steps"][0]["score"]
    assert (out / "control" / "initial.png").read_bytes() == (out / "initial.png").read_bytes()
    assert all(st["updated"] == [] for st in ctl["steps"])
    assert all(st["text_prefix_optimised"] in (False, None) for st in ctl["steps"])


def test_static_kv_cache_gives_the_dynamic_trajectory(tiny_dir, tmp_path):
    """``--kv-cache static`` (issue #21) changes how the loops run, not what they produce."""
    runs = {}
    for cache in ("dynamic", "static"):
        out = tmp_path / cache
        proc = run_milr(
            "generate", "a red square", "--model", str(tiny_dir), "--critic", "color",
            "--steps", "2", "--device", "cpu", "--kv-cache", cache, "--quiet", "--out", str(out),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        data = json.loads((out / "trajectory.json").read_text())
        runs[cache] = [(s["score"], s["image_prefix"], s["text_prefix"]) for s in data["steps"]]
        assert data["generator"]["sampling"] == "inverse-cdf/2"
    assert runs["dynamic"] == runs["static"]
