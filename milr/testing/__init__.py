"""Testing helpers for milr and for critic authors.

- `CriticContract`: a reusable pytest suite; subclass it with a `make_critic()` method.
- `save_tiny_janus(path, seed=0)`: write a tiny random Janus checkpoint (offline).
- `save_janus_pro_standin(source, path)`: a Janus-Pro stand-in (real config, tokenizer and
  processor files from `source`, tiny random weights).
- `milr.testing.hub_server.LoopbackHub`: a loopback Hugging Face Hub (the real huggingface_hub
  client downloads from it), with switchable faults.
- The pytest plugin (entry point ``pytest11``) adds fixtures such as `milr_sample_batch` and
  `milr_hub` (a started `LoopbackHub` with ``HF_ENDPOINT`` pointed at it).
"""

from __future__ import annotations

from typing import Any

from milr.testing.contract import CriticContract, sample_batch

_LAZY = {
    "save_tiny_janus": "milr.testing.tiny_janus",
    "save_janus_pro_standin": "milr.testing.tiny_janus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'milr.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["CriticContract", "sample_batch", "save_janus_pro_standin", "save_tiny_janus"]
