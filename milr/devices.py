"""One place that turns user spellings of devices and dtypes into torch objects.

Generators and critics call these so ``--device``/``--dtype`` and a critic's ``device=``/
``dtype=`` accept the same words everywhere and fail with the same one-line `MilrUserError`:

- devices: ``auto`` (or ``None``/empty: CUDA when available, else CPU), ``cpu``, ``cuda``,
  ``cuda:N``, and anything else ``torch.device`` parses (``mps``);
- dtypes: ``auto`` (bf16 on CUDA, fp32 elsewhere), ``bf16``/``bfloat16``, ``fp16``/``float16``/
  ``half``, ``fp32``/``float32``/``float``, ``fp64``/``float64``/``double`` (exact CPU tests;
  refused on CUDA where it is slow and never what a user means), or a ``torch.dtype``.

`dtype_name` is cheap (no torch import): parameter validation uses it at construction time.
"""

from __future__ import annotations

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


def resolve_device(device: Any = None, who: str | None = None) -> str:
    """The torch device string for `device` (see module docstring), checked against this machine.

    Raises `MilrUserError` for an unparsable device, CUDA requested without CUDA, or a CUDA
    index beyond the devices present. Imports torch.
    """
    import torch

    if device is None or str(device).strip().lower() in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
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
    return str(dev)


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
