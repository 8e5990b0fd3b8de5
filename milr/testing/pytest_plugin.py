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
