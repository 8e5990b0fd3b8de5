"""Checkpoints that are not what they claim (issue #11 D): refused in one line, exit 2, early.

Tiny random Janus checkpoints are saved to tmp dirs and broken the way real exports break:
tensors missing from (or foreign to) the weight file, a tokenizer config without
``extra_special_tokens``, a tokenizer that mangles text, ``--device cuda`` without CUDA.
"""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_helpers import run_milr  # noqa: E402

import milr  # noqa: E402
from milr.errors import CheckpointError, MilrUserError  # noqa: E402

DROPPED = ("model.generation_head.", "model.vqmodel.decoder.")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("ckpt") / "model", seed=0)


@pytest.fixture(scope="module")
def broken_dir(tiny_dir, tmp_path_factory):
    """The tiny checkpoint without its generation head and VQ decoder, plus a foreign tensor."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_dir, d)
    state = load_file(str(d / "model.safetensors"))
    kept = {k: v for k, v in state.items() if not k.startswith(DROPPED)}
    assert len(kept) < len(state)
    kept["model.not_a_janus_part.weight"] = torch.zeros(3)
    save_file(kept, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr and "MISSING" not in proc.stdout + proc.stderr
    return lines[0]


def test_clean_checkpoint_loads_without_complaint(tiny_dir, recwarn):
    gen = milr.load_generator(tiny_dir, device="cpu")
    assert gen.image_token_count == 16
    assert not [w for w in recwarn if "allow_missing" in str(w.message)]


def test_missing_and_unexpected_tensors_are_refused_naming_them_and_the_file(broken_dir):
    with pytest.raises(CheckpointError) as exc:
        milr.load_generator(broken_dir, device="cpu")
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(broken_dir / "model.safetensors") in msg
    assert "model.generation_head.proj_out.bias" in msg  # first missing names, sorted
    assert "missing tensor(s)" in msg and " more" in msg
    assert "1 unexpected tensor(s) (model.not_a_janus_part.weight)" in msg
    assert "allow_missing" in msg


def test_allow_missing_is_the_explicit_escape_hatch(broken_dir):
    with pytest.warns(UserWarning, match="loading anyway"):
        gen = milr.load_generator(broken_dir, device="cpu", allow_missing=True)
    assert gen.decode(torch.zeros(1, 16, dtype=torch.long))[0].size == (64, 64)


def test_cli_refuses_a_broken_checkpoint_and_allows_it_on_request(broken_dir, tmp_path):
    proc = run_milr("generate", "a red square", "--model", str(broken_dir), "--critic", "color")
    line = one_error_line(proc)
    assert "model.safetensors" in line and "--allow-missing" in line
    out = tmp_path / "run"
    proc = run_milr(
        "generate", "a red square", "--model", str(broken_dir), "--critic", "color:target=red",
        "--allow-missing", "--steps", "1", "--max-reasoning-tokens", "4", "-q", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "loading anyway" in proc.stderr and (out / "final.png").is_file()


def test_tokenizer_config_without_extra_special_tokens(tiny_dir, tmp_path):
    d = tmp_path / "no-specials"
    shutil.copytree(tiny_dir, d)
    cfg_path = d / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("extra_special_tokens", "image_token", "boi_token", "eoi_token"):
        cfg.pop(key, None)  # older exports carry none of them (flat or nested)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="extra_special_tokens") as exc:
        milr.load_generator(d, device="cpu")
    assert "\n" not in str(exc.value) and '"boi_token": "<begin_of_image>"' in str(exc.value)
    line = one_error_line(run_milr("generate", "x", "--model", str(d), "--critic", "color"))
    assert "tokenizer_config.json" in line


def test_tokenizer_that_mangles_text_is_refused(tiny_dir, tmp_path):
    """A tokenizer whose decode does not give back its text (the Metaspace bug's symptom)."""
    from tokenizers import Tokenizer, decoders

    d = tmp_path / "mangled"
    shutil.copytree(tiny_dir, d)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.decoder = decoders.Metaspace()  # joins word pieces without the spaces between them
    tok.save(str(d / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="does not round-trip") as exc:
        milr.load_generator(d, device="cpu")
    assert "transformers " in str(exc.value) and "\n" not in str(exc.value)


def test_round_trip_check_passes_a_faithful_tokenizer_and_skips_unknown_words():
    from milr.models.janus_loading import check_round_trip

    class Exact:
        unk_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    check_round_trip(Exact(), "exact")

    class Mangles(Exact):
        def decode(self, ids, skip_special_tokens=True):
            return super().decode(ids).replace(" ", "")

    with pytest.raises(CheckpointError, match="aphotoofacat"):
        check_round_trip(Mangles(), "bad")


def test_cuda_without_cuda_is_refused_before_critics_are_built(tiny_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the refusal path cannot be exercised")
    # a critic whose construction would fail if it were reached: the device error must come first
    proc = run_milr(
        "generate", "x", "--model", str(tiny_dir), "--device", "cuda", "--critic", "nosuchcritic"
    )
    line = one_error_line(proc)
    assert "CUDA is not available" in line and "nosuchcritic" not in line
    proc = run_milr("bench", "nosuchsuite.jsonl", "--model", str(tiny_dir), "--device", "cuda:0")
    assert "CUDA is not available" in one_error_line(proc)


def test_bad_dtype_is_one_line_before_loading(tiny_dir):
    line = one_error_line(
        run_milr("generate", "x", "--model", str(tiny_dir), "--dtype", "fp8", "--critic", "color")
    )
    assert "dtype='fp8'" in line and "bf16/bfloat16" in line
    with pytest.raises(MilrUserError, match="float64 is for exact CPU runs"):
        from milr.devices import resolve_dtype

        resolve_dtype("float64", "cuda")


def test_critic_checkpoints_are_checked_too(tmp_path):
    """The same refusal for critics' transformers checkpoints (milr.critics._hf: Mask2Former,
    GroundingDINO, BLIP/GIT VQA)."""
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from milr.critics import _hf
    from milr.critics.geneval import GenEvalCritic
    from milr.testing import tiny_vision as tv

    d = tv.mask2former(tmp_path / "m2f")
    weights = next(d.glob("*.safetensors"))
    state = load_file(str(weights))
    dropped = sorted(k for k in state if "class_predictor" in k or "class_embed" in k)[:1] or [
        sorted(state)[-1]
    ]
    for k in dropped:
        del state[k]
    save_file(state, str(weights), metadata={"format": "pt"})
    _hf.clear_cache()
    critic = GenEvalCritic(detector="mask2former", weights=str(d), threshold=0.0)
    with pytest.raises(CheckpointError) as exc:
        critic.score(
            Image.new("RGB", (64, 64)),
            "a photo of a dog",
            {"tag": "single_object", "include": [{"class": "dog", "count": 1}]},
        )
    msg = str(exc.value)
    assert "\n" not in msg and dropped[0] in msg and weights.name in msg


# -- Hugging Face offline mode: one reading, the one huggingface_hub uses -------------------------

OFFLINE_CASES = [
    ({}, False),
    ({"HF_HUB_OFFLINE": "1"}, True),
    ({"HF_HUB_OFFLINE": "true"}, True),
    ({"HF_HUB_OFFLINE": "YES"}, True),
    ({"HF_HUB_OFFLINE": "on"}, True),
    ({"HF_HUB_OFFLINE": "0"}, False),
    ({"HF_HUB_OFFLINE": "false"}, False),
    ({"HF_HUB_OFFLINE": "off"}, False),
    ({"TRANSFORMERS_OFFLINE": "1"}, True),
    ({"TRANSFORMERS_OFFLINE": "false"}, False),
    ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"}, True),
    ({"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "1"}, False),
    ({"HF_HUB_OFFLINE": "false", "TRANSFORMERS_OFFLINE": "true"}, False),
]


def test_hf_offline_reads_the_variables_as_huggingface_hub_does():
    """The table, and huggingface_hub's own reading of each row (its constant is fixed when it
    is imported, so each row is read in a fresh interpreter)."""
    import os
    import subprocess
    import sys

    from milr.checkpoints import hf_offline

    base = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    for env, expected in OFFLINE_CASES:
        assert hf_offline(env) is expected, env
        hub = subprocess.run(
            [sys.executable, "-c", "import huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"],
            env={**base, **env}, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert hub.stdout.strip() == str(expected), env


@pytest.mark.parametrize(
    "env, offline",
    [({"HF_HUB_OFFLINE": "off", "TRANSFORMERS_OFFLINE": "1"}, False),
     ({"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "1"}, True)],
)  # fmt: skip
def test_generator_hub_hint_follows_the_offline_reading(monkeypatch, env, offline):
    """`milr generate --model owner/name` not in the cache: the hint says offline mode is on
    exactly when huggingface_hub thinks so (it read HF_HUB_OFFLINE=off as on, and ignored
    TRANSFORMERS_OFFLINE)."""
    import socket

    from huggingface_hub import constants

    for var, value in env.items():
        monkeypatch.setenv(var, value)
    # huggingface_hub read the variables when it was imported: as it would have read these
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    with socket.socket() as free:  # a loopback port nothing listens on: the Hub is unreachable
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(MilrUserError) as exc:
        milr.load_generator("someone/not-a-cached-janus")
    message = str(exc.value)
    assert "\n" not in message and "'someone/not-a-cached-janus'" in message
    assert ("offline mode is on" in message) is offline, message
    assert ("cannot reach" in message) is (not offline), message
