"""Loading transformers checkpoints for first-party critics, once per process.

``weights`` is a checkpoint directory (``config.json``, weights, processor files) or a Hub id,
downloaded into the Hugging Face cache on first use by `milr.hub.resolve` (cache-only under
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``; ``revision`` pins a branch, tag or commit). The
weight files are checked whole (`milr.weight_files`) and the checkpoint's ``model_type`` against
what the critic can run before any weight is read, so a damaged file or a wrong architecture is
one line naming the critic, the path and the fix. Loaded (model, processor) pairs are cached per
process, keyed by (resolved path, file mtimes, model class, device, dtype).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milr.checkpoints import check_loading_info, first_line, quiet_transformers
from milr.critic import require
from milr.devices import dtype_name
from milr.devices import resolve as resolve_devices
from milr.errors import MilrUserError
from milr.weight_files import check_weights_path

_CACHE: dict[tuple[Any, ...], HFBundle] = {}
_LOCK = threading.Lock()
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class HFBundle:
    """A loaded checkpoint: model (eval, no grad, on its device), processor, config facts."""

    model: Any
    processor: Any
    model_type: str
    source: str
    device: Any
    dtype: Any


def resolve_device_dtype(device: str | None, dtype: str, critic: str) -> tuple[str, Any]:
    """``device`` None/``auto``: CUDA when present, else CPU; ``dtype`` ``auto``: bf16 on CUDA, fp32 on CPU.

    Spellings and errors are `milr.devices`' (the same for every generator and critic).
    """
    require("torch", None, critic)
    dtype_name(dtype, f"critic {critic!r}", allowed=DTYPES)
    return resolve_devices(device, dtype, f"critic {critic!r}")


def _source(
    weights: str, critic: str, hint: str, revision: str | None = None
) -> tuple[str, tuple[Any, ...]]:
    """The local checkpoint directory (downloaded when `weights` is a Hub id) and a cache-key
    part for it (file names and mtimes)."""
    from milr.hub import resolve

    path = Path(weights).expanduser()
    if path.exists() and not path.is_dir():
        raise MilrUserError(
            f"critic {critic!r}: weights={weights!r} is a file; pass the checkpoint directory "
            f"that holds config.json and the weights, or a Hub id ({hint})"
        )
    resolved = resolve(weights, who=f"critic {critic!r}", revision=revision, hint=hint).path
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(resolved.iterdir()) if p.is_file())
    return str(resolved), stamp


def _check_spelling(weights: str, critic: str, hint: str) -> None:
    """Cheap check without network: an existing directory, or spelled like a Hub id."""
    from milr.hub import is_hub_id

    path = Path(weights).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise MilrUserError(
            f"critic {critic!r}: weights={weights!r} is a file; pass the checkpoint directory "
            f"that holds config.json and the weights, or a Hub id ({hint})"
        )
    if not is_hub_id(weights):
        raise MilrUserError(
            f"critic {critic!r}: weights directory {weights!r} does not exist; {hint}"
        )


def load_checkpoint(
    critic: str,
    weights: str,
    model_types: dict[str, str],
    *,
    device: str | None,
    dtype: str,
    hint: str,
    processor: str = "AutoProcessor",
    revision: str | None = None,
) -> HFBundle:
    """Load (once per process) a transformers model + processor from a directory or Hub id.

    ``model_types`` maps each accepted ``config.model_type`` to the transformers model class
    name that runs it (e.g. ``{"grounding-dino": "GroundingDinoForObjectDetection"}``).
    ``processor`` names the transformers auto class for the pre-processor. Raises
    `MilrUserError` (one line) for a missing path, a checkpoint not in the local cache, a
    checkpoint of another architecture, or files that fail to load.
    """
    require("torch", None, critic)
    transformers = require("transformers", None, critic)
    dev, torch_dtype = resolve_device_dtype(device, dtype, critic)
    source, stamp = _source(weights, critic, hint, revision)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise MilrUserError(
            f"critic {critic!r}: cannot read a transformers config from weights={weights!r} "
            f"({source} is not a checkpoint directory: {first[:200]}); {hint}"
        ) from exc
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in model_types:
        raise MilrUserError(
            f"critic {critic!r}: weights={weights!r} is a {model_type or 'unknown'!r} checkpoint; "
            f"this critic runs {', '.join(repr(t) for t in model_types)} checkpoints ({hint})"
        )
    cls_name = model_types[model_type]
    key = (source, stamp, cls_name, dev, str(torch_dtype))
    with _LOCK:
        bundle = _CACHE.get(key)
        if bundle is not None:
            return bundle
        model_cls = getattr(transformers, cls_name)
        proc_cls = getattr(transformers, processor)
        check_weights_path(source, f"critic {critic!r}")  # damaged files: one line
        try:
            with quiet_transformers():
                model, info = model_cls.from_pretrained(
                    source, dtype=torch_dtype, local_files_only=True, output_loading_info=True,
                    **_placement(dev),
                )  # fmt: skip
                proc = proc_cls.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = first_line(exc)
            raise MilrUserError(
                f"critic {critic!r}: cannot load {cls_name} from weights={weights!r}: {first[:200]}"
            ) from exc
        check_loading_info(info, source, f"critic {critic!r}")  # missing tensors: one line
        model.to(dev).eval().requires_grad_(False)
        bundle = HFBundle(model, proc, model_type, source, model.device, torch_dtype)
        _CACHE[key] = bundle
        return bundle


def _placement(device: str) -> dict[str, Any]:
    """``device_map`` to load straight onto an accelerator (transformers needs `accelerate`,
    a dependency of milr, for any ``device_map``); empty on the CPU or where accelerate is
    missing (load, then move)."""
    import importlib.util

    if device == "cpu" or importlib.util.find_spec("accelerate") is None:
        return {}
    return {"device_map": {"": device}}


def clear_cache() -> None:
    """Forget loaded checkpoints (tests, memory)."""
    with _LOCK:
        _CACHE.clear()


def check_weights(weights: str, critic: str, hint: str) -> str:
    """Cheap early check of a ``weights`` value (no network): an existing directory or a Hub id.

    Raises ``ValueError`` (turned into a one-line parameter error by `milr.params`) for an
    empty value, a file, or a path that does not exist.
    """
    if not weights.strip():
        raise ValueError(f"parameter 'weights' is empty; {hint}")
    try:
        _check_spelling(weights, critic, hint)
    except MilrUserError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return weights
