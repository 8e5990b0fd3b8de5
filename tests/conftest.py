"""Test-wide setup: offline everywhere, a private YOLO config dir, network blocked by pytest-socket.

pytest-socket (enabled in pyproject's addopts) refuses every connection except loopback, so a
test that tries to download anything fails loudly instead of silently reaching a hub.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="milr-yolo-cfg-"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _only_known_plugins() -> str:
    """Third-party plugins the suite may load: the example plugin this repository ships.

    Set unconditionally, so plugins installed on a developer's machine never leak into the
    tests; tests that install a distribution add its name (`plugin_fixtures.allow`).
    """
    from importlib import metadata

    try:
        metadata.distribution("milr-plugin-example")
    except metadata.PackageNotFoundError:
        return ""
    return "milr-plugin-example"


os.environ["MILR_LOAD_PLUGINS"] = _only_known_plugins()
for _var in ("MILR_DISABLE_PLUGINS", "MILR_STRICT_PLUGINS"):
    os.environ.pop(_var, None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: ``../shared/data`` beside the checkout; ``MILR_SHARED_DATA`` points elsewhere (worktrees).
SHARED_DATA = Path(
    os.environ.get("MILR_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (GenEval, T2I-CompBench prompt files); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Reset plugin discovery before and after a test that changes MILR_* variables."""
    from milr import registry

    registry.reset()
    yield monkeypatch
    registry.reset()
