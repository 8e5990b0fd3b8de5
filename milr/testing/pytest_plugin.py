"""pytest plugin (entry point ``pytest11``): fixtures for critic authors."""

from __future__ import annotations

import pytest

from milr.testing.contract import sample_batch


@pytest.fixture
def milr_sample_batch():
    """`(images, prompts, metadata)`: four small deterministic RGB scenes."""
    return sample_batch()


@pytest.fixture
def milr_registry(monkeypatch):
    """A freshly loaded registry; restores plugin state afterwards."""
    from milr.registry import get_registry, reset

    reset()
    yield get_registry()
    reset()


@pytest.fixture
def milr_hub(monkeypatch, tmp_path):
    """A started `milr.testing.hub_server.LoopbackHub`, with this process pointed at it.

    Sets ``HF_ENDPOINT`` to the hub, ``HF_HOME`` to a fresh folder under ``tmp_path``, turns
    Hugging Face offline mode off (the environment variables and huggingface_hub's constant,
    which it reads once at import) and stops the server afterwards. Child processes get the
    same settings from ``hub.env(os.environ["HF_HOME"])``.
    """
    from milr.testing.hub_server import LoopbackHub

    hub = LoopbackHub().start()
    home = tmp_path / "hf-home"
    for key, value in hub.env(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    try:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    except ImportError:  # pragma: no cover - transformers depends on it
        pass
    try:
        yield hub
    finally:
        hub.stop()
