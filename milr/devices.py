"""One place that turns user spellings of devices and dtypes into torch objects.

Generators and critics call these so ``--device``/``--dtype`` and a critic's ``device=``/
``dtype=`` accept the same words everywhere and fail with the same one-line `MilrUserError`:

- devices: ``auto`` (or ``None``/empty: CUDA when available, else CPU), ``cpu``, ``cuda``,
  ``cuda:N``, and anything else ``torch.device`` parses (``mps``);
- dtypes: ``auto`` (bf16 on CUDA, fp32 elsewhere), ``bf16``/``bfloat16``, ``fp16``/``float16``/
  ``half``, ``fp32``/``float32``/``float``, ``fp64``/``float64``/``double`` (exact CPU tests;
  refused on CUDA where it is slow and never what a user means), or a ``torch.dtype``.

`dtype_name` is cheap (no torch import): parameter validation uses it at construction time.

The run's device: `run_device` resolves ``--device`` for the generator (under torchrun a bare
``cuda``, or no ``--device`` with CUDA present, is ``cuda:LOCAL_RANK``), and `use_device`
makes it what ``auto`` and a bare ``cuda`` mean inside the block, so critics with
``device=auto`` follow the generator to its device, index included. Every CUDA device string
milr hands to a library carries its index (``cuda:1``, never ``cuda``): ultralytics turns a bare
``cuda`` into GPU 0 and makes that the process's current device.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError

if TYPE_CHECKING:
    import torch

#: Accepted spellings → canonical torch dtype name.
DTYPE_ALIASES: dict[str, str] = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp64": "float64",
    "float64": "float64",
    "double": "float64",
}
#: Canonical dtype names, ``auto`` first (what help texts list).
DTYPE_NAMES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32", "float64")


def _who(who: str | None) -> str:
    return f"{who}: " if who else ""


def dtype_name(dtype: Any, who: str | None = None, allowed: tuple[str, ...] | None = None) -> str:
    """Canonical name (``auto``, ``bfloat16``, ``float16``, ``float32``, ``float64``) of `dtype`.

    `dtype` is a spelling listed in the module docstring, ``None`` (= ``auto``) or a
    ``torch.dtype``. `allowed` restricts the result (e.g. a detector that supports only
    float32/float16). Raises `MilrUserError` naming `who`, the value and the accepted spellings.
    """
    if dtype is None:
        name = "auto"
    else:
        key = str(dtype).strip().lower().removeprefix("torch.")
        name = "auto" if key == "auto" else DTYPE_ALIASES.get(key, "")
    ok = allowed or DTYPE_NAMES
    if not name or name not in ok:
        spellings = (
            "auto, bf16/bfloat16, fp16/float16/half, fp32/float32, fp64/float64"
            if allowed is None
            else ", ".join(ok)
        )
        raise MilrUserError(f"{_who(who)}dtype={dtype!r} is not supported; use one of {spellings}")
    return name


_RUN_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "milr_run_device", default=None
)


def current_run_device() -> str | None:
    """The device set by the innermost `use_device` block, or None outside any."""
    return _RUN_DEVICE.get()


@contextlib.contextmanager
def use_device(device: str | None) -> Iterator[str | None]:
    """Within the block, ``auto`` / None / a bare ``cuda`` resolve to `device` (see
    `resolve_device`); `device` None leaves resolution as it is. Yields `device`."""
    token = _RUN_DEVICE.set(str(device) if device else _RUN_DEVICE.get())
    try:
        yield device
    finally:
        _RUN_DEVICE.reset(token)


def local_rank() -> int | None:
    """``LOCAL_RANK`` from the environment (set by torchrun), or None."""
    raw = os.environ.get("LOCAL_RANK", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise MilrUserError(f"environment variable LOCAL_RANK={raw!r} is not an integer") from None


def run_device(
    device: Any = None,
    *,
    rank: int | None = None,
    cuda_available: bool | None = None,
    who: str | None = "--device",
) -> str:
    """The generator's device for a run, a CUDA index always explicit.

    - `device` None/``auto``: ``cuda:RANK`` when CUDA is present, else ``cpu``;
    - a bare ``cuda``: ``cuda:RANK``; ``cuda:N``, ``cpu``, ``mps``: as given.

    `rank` is the process's local rank (default: ``LOCAL_RANK`` from the environment, which
    torchrun sets; 0 without it). `cuda_available` None asks torch and checks the device
    against this machine (`resolve_device`); True/False replaces that probe (tests of the
    CUDA branch on a machine without CUDA), and the result is then not checked.
    """
    idx = local_rank() if rank is None else rank
    idx = 0 if idx is None else idx
    if cuda_available is None:
        import torch

        probe = torch.cuda.is_available()
    else:
        probe = cuda_available
    spelled = "" if device is None else str(device).strip().lower()
    if spelled in ("", "auto"):
        chosen = f"cuda:{idx}" if probe else "cpu"
    elif spelled == "cuda":
        chosen = f"cuda:{idx}"
    else:
        chosen = str(device).strip()
    if cuda_available is None:
        return resolve_device(chosen, who)
    if chosen.startswith("cuda") and not probe:
        raise MilrUserError(
            f"{_who(who)}device={device!r} but CUDA is not available on this machine; "
            "use --device cpu"
        )
    return chosen


def resolve_device(device: Any = None, who: str | None = None) -> str:
    """The torch device string for `device` (see module docstring), checked against this machine.

    Inside a `use_device` block, ``auto``/None mean the run's device and a bare ``cuda`` the
    run's CUDA device; otherwise a bare ``cuda`` is ``cuda:`` + the current CUDA device. The
    result of a CUDA request always carries its index. Raises `MilrUserError` for an
    unparsable device, CUDA requested without CUDA, or a CUDA index beyond the devices
    present. Imports torch.
    """
    import torch

    run = _RUN_DEVICE.get()
    if device is None or str(device).strip().lower() in ("", "auto"):
        if run is not None:
            return run
        return _indexed("cuda") if torch.cuda.is_available() else "cpu"
    if str(device).strip().lower() == "cuda" and run is not None and run.startswith("cuda:"):
        return run
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, TypeError, ValueError):
        raise MilrUserError(
            f"{_who(who)}device={device!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MilrUserError(
                f"{_who(who)}device={device!r} but CUDA is not available on this machine; "
                "use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MilrUserError(
                f"{_who(who)}device={device!r} but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        return _indexed(str(dev))
    return str(dev)


def _indexed(device: str) -> str:
    """``cuda`` -> ``cuda:<current device>``; anything else unchanged."""
    if device != "cuda":
        return device
    import torch

    return f"cuda:{torch.cuda.current_device()}"


def resolve_dtype(dtype: Any, device: Any, who: str | None = None) -> torch.dtype:
    """The ``torch.dtype`` for `dtype` on `device` (``auto``: bf16 on CUDA, fp32 elsewhere).

    ``float64`` is refused on CUDA (one-line `MilrUserError`); it exists for exact CPU tests.
    """
    import torch

    on_cuda = str(device).startswith("cuda")
    name = dtype_name(dtype, who)
    if name == "auto":
        name = "bfloat16" if on_cuda else "float32"
    if name == "float64" and on_cuda:
        raise MilrUserError(
            f"{_who(who)}dtype={dtype!r} on {device}: float64 is for exact CPU runs; "
            "use bf16 or fp32 on CUDA"
        )
    return getattr(torch, name)  # type: ignore[no-any-return]


def resolve(device: Any = None, dtype: Any = None, who: str | None = None) -> tuple[str, Any]:
    """``(resolve_device(device), resolve_dtype(dtype, device))`` in one call."""
    dev = resolve_device(device, who)
    return dev, resolve_dtype(dtype, dev, who)
