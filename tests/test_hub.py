"""milr.hub.resolve against the loopback Hub: the real huggingface_hub client downloads."""

from __future__ import annotations

import pytest

from milr.errors import MilrUserError
from milr.hub import resolve

FILES = {
    "config.json": b'{"model_type": "x"}',
    "model.safetensors": bytes(range(256)) * 400,  # LFS-served (redirect, sha256 etag)
}


def _offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_first_use_downloads_then_offline_reuse_with_server_gone(milr_hub, monkeypatch):
    commit = milr_hub.add_files("org/model", FILES)
    got = resolve("org/model", who="test")
    assert got.commit == commit and got.repo_id == "org/model"
    assert (got.path / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (
        "HEAD",
        "/org/model/resolve/" + commit + "/model.safetensors",
    ) in milr_hub.requests or any(p.startswith("/lfs/org/model/") for _, p in milr_hub.requests)
    milr_hub.stop()
    _offline(monkeypatch)
    again = resolve("org/model", who="test")
    assert again.path == got.path and again.commit == commit


def test_one_file_and_revision(milr_hub):
    milr_hub.add_files("org/model", FILES)
    old = milr_hub.add_files("org/model", {"config.json": b'{"v": 1}'}, revision="v1")
    got = resolve("org/model", who="test", filename="config.json", revision="v1")
    assert got.path.read_bytes() == b'{"v": 1}'
    assert got.commit == old and got.revision == "v1"
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="test", revision="nope")
    _one_line(exc, "'org/model@nope'", "revision 'nope' does not exist")


def test_gated_repo_names_how_to_authenticate_and_honours_hf_token(milr_hub, monkeypatch):
    milr_hub.add_files("org/gated", FILES)
    milr_hub.gated.add("org/gated")
    milr_hub.token = "hf_secret_for_tests"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(MilrUserError) as exc:
        resolve("org/gated", who="critic 'judge'")
    _one_line(exc, "critic 'judge'", "'org/gated'", "gated", "hf auth login", "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_tests")
    assert (resolve("org/gated", who="t").path / "config.json").is_file()


def test_unknown_repo_and_the_original_janus_release(milr_hub):
    with pytest.raises(MilrUserError) as exc:
        resolve("org/nothing-here", who="model")
    _one_line(exc, "'org/nothing-here'", "no such repo", "hf auth login")
    seen = len(milr_hub.requests)
    with pytest.raises(MilrUserError) as exc:
        resolve("deepseek-ai/Janus-Pro-7B", who="model")
    _one_line(exc, "'deepseek-community/Janus-Pro-7B'")
    assert len(milr_hub.requests) == seen  # refused before any request


def test_offline_and_not_cached_says_how_to_prefetch(milr_hub, monkeypatch):
    milr_hub.add_files("org/model", FILES)
    _offline(monkeypatch)
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="model", revision="v2")
    _one_line(
        exc, "'org/model@v2'", "offline", "hf download org/model --revision v2", "milr download"
    )
    assert milr_hub.requests == []


def test_server_error_after_retries(milr_hub):
    milr_hub.add_files("org/model", FILES)
    milr_hub.status = 503
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="model")
    _one_line(exc, "'org/model'", "HTTP 503", "try again later")
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="model", filename="config.json")
    _one_line(exc, "'org/model'", "HTTP 503")


def test_connection_dropped_mid_file_resumes(milr_hub):
    milr_hub.add_files("org/model", FILES)
    milr_hub.drop_after, milr_hub.drops = 1000, 1
    got = resolve("org/model", who="model", filename="model.safetensors")
    assert got.path.read_bytes() == FILES["model.safetensors"]
    assert milr_hub.drops == 0  # the drop happened, and the client resumed


def test_connection_dropped_every_time_fails_in_one_line_and_loads_nothing(milr_hub):
    milr_hub.add_files("org/model", FILES)
    milr_hub.drop_after, milr_hub.drops = 1000, 100
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="model", filename="model.safetensors")
    _one_line(exc, "'org/model'", "interrupted", "run the command again")
    from milr.hub import cache_dir

    repo = cache_dir() / "models--org--model"
    assert not list(repo.glob("snapshots/*/model.safetensors"))  # never exposed to a loader
    assert not list(repo.glob("blobs/*"))  # the partial file was discarded
    milr_hub.drops = 0  # the network comes back: the next call completes
    got = resolve("org/model", who="model", filename="model.safetensors")
    assert got.path.read_bytes() == FILES["model.safetensors"]


def test_local_paths_are_not_hub_ids(tmp_path):
    assert resolve(tmp_path, who="t").path == tmp_path.absolute()
    with pytest.raises(MilrUserError) as exc:
        resolve(str(tmp_path / "missing"), who="critic 'x'", hint="pass weights=DIR")
    _one_line(exc, "does not exist", "pass weights=DIR")


def test_an_interrupted_first_download_left_in_the_cache_is_one_line(milr_hub, monkeypatch):
    """Only config.json reached the cache (e.g. the adapter was picked, then the run died):
    offline, the folder huggingface_hub returns has no weights; that is said in one line."""
    milr_hub.add_files("org/model", FILES)
    resolve("org/model", who="model", filename="config.json")
    _offline(monkeypatch)
    with pytest.raises(MilrUserError) as exc:
        resolve("org/model", who="model")
    _one_line(exc, "'org/model'", "has no weight files", "hf download org/model")


def test_a_repo_with_safetensors_and_bin_weights_downloads_only_the_safetensors(milr_hub):
    milr_hub.add_files(
        "org/both", {**FILES, "pytorch_model.bin": b"\x80" + bytes(1000), "README.md": b"# card"}
    )
    got = resolve("org/both", who="critic 'vqa'")
    assert (got.path / "model.safetensors").is_file()
    assert not (got.path / "pytorch_model.bin").exists() and not (got.path / "README.md").exists()
    assert not any("pytorch_model.bin" in p for _, p in milr_hub.requests)
