"""torchrun integration: rank/world from the environment, process group, work claiming.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the harness joins a `torch.distributed`
process group: NCCL when the run uses CUDA, gloo otherwise. Without those variables it is a
single process and torch.distributed is never touched.

Each process's device comes from `milr.devices.run_device`: under torchrun with CUDA present
and no ``--device`` (or a bare ``--device cuda``), rank ``LOCAL_RANK`` uses
``cuda:LOCAL_RANK`` for the generator and every critic, and makes it the current CUDA device
before the process group starts; the final barrier names that device.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from milr.errors import MilrUserError

T = TypeVar("T")


@dataclass
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    backend: str | None = None
    #: This process's device for the generator and the critics (`milr.devices.run_device`),
    #: None when `init_distributed` was not asked to resolve one.
    device: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device_index()])
            else:
                dist.barrier()

    def device_index(self) -> int:
        """The CUDA index of this rank's device (``cuda:N``), else ``LOCAL_RANK``."""
        if self.device and self.device.startswith("cuda:"):
            return int(self.device.split(":", 1)[1])
        return self.local_rank

    def first_error(self, error: str | None) -> str | None:
        """The first rank's error text among every rank's (None: no rank failed).

        Every rank must call it; used to stop all ranks on a setup fault found by one.
        """
        if not self.distributed:
            return error
        import torch.distributed as dist

        errors: list[Any] = [None] * self.world_size
        dist.all_gather_object(errors, error)
        return next((e for e in errors if e), None)

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when every rank says ok (used to stop all ranks on one's failure)."""
        if not self.distributed:
            return ok
        import torch.distributed as dist

        flags: list[Any] = [None] * self.world_size
        dist.all_gather_object(flags, bool(ok))
        return all(flags)

    def close(self) -> None:
        if self.initialized_here:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.initialized_here = False


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise MilrUserError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(
    device: str | None = None,
    timeout_s: float = 6 * 3600,
    *,
    cuda_available: bool | None = None,
) -> DistContext:
    """Join the torchrun job described by the environment, or return a single-process context.

    The context's ``device`` is `milr.devices.run_device` of `device` for this rank: under
    torchrun a bare ``cuda``, or no `device` with CUDA present, is ``cuda:LOCAL_RANK``. The
    backend is NCCL when that device is CUDA (made the current CUDA device first) and gloo
    otherwise. `timeout_s` bounds how long a rank waits for the others at the final barrier, so
    it must exceed the spread of per-rank run times. `cuda_available` replaces the CUDA probe
    (tests); with True on a machine without CUDA, nothing CUDA is touched and gloo is used.
    """
    from milr.devices import run_device

    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    local = _env_int("LOCAL_RANK") or 0
    resolved = run_device(device, rank=local, cuda_available=cuda_available)
    if world is None or world <= 1:
        return DistContext(rank=0, world_size=1, local_rank=local, device=resolved)
    if rank is None:
        raise MilrUserError("WORLD_SIZE is set but RANK is not; launch with torchrun")
    import torch
    import torch.distributed as dist

    use_cuda = resolved.startswith("cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(torch.device(resolved))
    if dist.is_initialized():
        return DistContext(
            dist.get_rank(), dist.get_world_size(), local, False, dist.get_backend(), resolved
        )
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), local, True, backend, resolved)


def shard(items: list[T], rank: int, world_size: int) -> list[T]:
    """Round-robin share of `items` for `rank`: deterministic, balanced, order-preserving."""
    return items[rank::world_size]


def claim(items: list[T], ctx: DistContext, key: str = "milr-bench-claimed") -> Iterator[T]:
    """The items this rank claims, one at a time, from a counter shared by all ranks.

    Each ``next()`` atomically takes the next unclaimed index from torch.distributed's store
    (``store.add(key, 1)``), so a rank that finishes early takes more work instead of idling
    while a slow rank finishes a fixed share. Every rank must pass the same `items` (in the
    same order) and `key`; what a prompt produces never depends on which rank ran it. A single
    process yields every item.
    """
    if not ctx.distributed:
        yield from items
        return
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    while True:
        index = int(store.add(key, 1)) - 1
        if index >= len(items):
            return
        yield items[index]


def rank_device(device: str | None, ctx: DistContext) -> str | None:
    """Per-rank device: the context's resolved device when `init_distributed` set one, else a
    bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if ctx.device is not None:
        return ctx.device
    if device == "cuda" and ctx.distributed:
        return f"cuda:{ctx.local_rank}"
    return device
