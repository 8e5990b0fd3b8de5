"""Loading ultralytics YOLO detectors for the ``geneval`` critic, once per process.

``weights`` is ultralytics' own checkpoint name (``yolov8x.pt``: taken from, or downloaded
into, ultralytics' weights folder by ultralytics itself; cache-only under ``YOLO_OFFLINE`` or
``HF_HUB_OFFLINE``), ``hf://OWNER/NAME/FILE`` (the Hugging Face cache), a local checkpoint, or
a ``*.yaml`` config. Split out of `milr.critics.geneval` (which re-exports `load_yolo`).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from milr import MilrUserError
from milr.checkpoints import first_line

_YOLO_CACHE: dict[tuple[Any, ...], Any] = {}
_YOLO_LOCK = threading.Lock()
_WEIGHTS_HINT = (
    "pass weights=yolov8x.pt (ultralytics' own name: downloaded into its weights folder on first "
    "use), hf://Ultralytics/YOLOv8/yolov8x.pt (the Hub copy), or the path of an ultralytics "
    "COCO detection checkpoint"
)
#: ultralytics' own checkpoint names (``yolov8x.pt``): fetched by ultralytics, no path needed.
_ASSET_NAME = re.compile(r"^yolo[A-Za-z0-9_.-]*\.pt$")


def load_yolo(
    weights: str, device: str, critic: str = "geneval", revision: str | None = None
) -> Any:
    """Load (once per process) an ultralytics YOLO from a checkpoint or a ``*.yaml`` config.

    ``weights``: a checkpoint file; ultralytics' own name (``yolov8x.pt``), taken from or
    downloaded into ultralytics' weights folder (``yolo settings``; cache-only when
    ``YOLO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set); ``hf://OWNER/NAME/FILE`` from the Hugging
    Face Hub (`milr.hub`); or a ``*.yaml`` model config (random weights, tests only). The file is
    checked whole first (`milr.weight_files`). Raises `MilrUserError` (one line).
    """
    ultralytics = _require_ultralytics(critic)
    import torch

    from milr.hub import resolve_file
    from milr.weight_files import check_weights_path

    who = f"critic {critic!r}"
    is_cfg = weights.endswith((".yaml", ".yml"))
    path = Path(weights).expanduser()
    if not path.is_file() and not is_cfg:
        if _ASSET_NAME.match(weights):
            path = _ultralytics_asset(weights, critic)
        else:
            path = resolve_file(weights, who=who, revision=revision, hint=_WEIGHTS_HINT).path
    if path.is_file():
        check_weights_path(path, who)
        st = path.stat()
        key: tuple[Any, ...] = (str(path.resolve()), st.st_size, st.st_mtime_ns, device)
    else:
        key = (weights, device)
    with _YOLO_LOCK:
        model = _YOLO_CACHE.get(key)
        if model is None:
            src = str(path) if path.is_file() else weights
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)  # a *.yaml config builds the same random model every time
                    model = ultralytics.YOLO(src, task="detect")
            except Exception as exc:
                raise MilrUserError(
                    f"critic {critic!r}: could not load YOLO weights {weights!r}: {first_line(exc)[:300]}"
                ) from exc
            if getattr(model, "task", "detect") != "detect":
                raise MilrUserError(
                    f"critic {critic!r}: {weights!r} is a {model.task!r} model; a detection model is needed"
                )
            _YOLO_CACHE[key] = model
    return model


def _ultralytics_asset(name: str, critic: str) -> Path:
    """ultralytics' own checkpoint `name` in its weights folder, downloaded there if missing."""
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    from milr.checkpoints import hf_offline

    target = Path(SETTINGS["weights_dir"]) / name
    if target.is_file():
        return target
    if name not in GITHUB_ASSETS_NAMES:
        raise MilrUserError(
            f"critic {critic!r}: weights={name!r} is neither a file nor one of ultralytics' "
            f"checkpoint names (e.g. yolov8x.pt, yolo11x.pt); {_WEIGHTS_HINT}"
        )
    offline = hf_offline() or os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline:
        raise MilrUserError(
            f"critic {critic!r}: {name} is not in ultralytics' weights folder ({target.parent}) "
            "and offline mode is on (YOLO_OFFLINE/HF_HUB_OFFLINE); prefetch it on a machine with "
            "internet (`milr download` with the same options), or pass "
            f"weights=hf://Ultralytics/YOLOv8/{name} after `hf download Ultralytics/YOLOv8 {name}`, "
            "or the file's path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(target)
    except Exception as exc:  # network errors, GitHub rate limits
        raise MilrUserError(
            f"critic {critic!r}: downloading {name} from ultralytics' GitHub releases failed "
            f"({first_line(exc)[:160]}); check your network, or pass "
            f"hf://Ultralytics/YOLOv8/{name} or a local path"
        ) from None
    if not target.is_file():
        raise MilrUserError(
            f"critic {critic!r}: ultralytics did not download {name} into {target.parent}; "
            f"check your network, or pass hf://Ultralytics/YOLOv8/{name} or a local path"
        )
    return target


def _require_ultralytics(critic: str) -> Any:
    # ultralytics probes the network and may pip-install at import unless told otherwise.
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    from milr.critic import require

    require("torch", "detector", critic)
    return require("ultralytics", "detector", critic)
