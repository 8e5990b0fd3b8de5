"""torchrun integration: rank/world from the environment, process group, work claiming.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the harness joins a `torch.distributed`
process group: NCCL when the run uses CUDA, gloo otherwise. Without those variables it is a
single process and torch.distributed is never touched.

Each process's device comes from `milr.devices.run_device`: under torchrun with CUDA present
and no ``--device`` (or a bare ``--device cuda``), rank ``LOCAL_RANK`` uses
``cuda:LOCAL_RANK`` for the generator and every critic, and makes it the current CUDA device
before the process group starts; the final barrier names that device.

A rank that stops on an error mid-run (a `MilrUserError` raised while scoring, a crash) sets
an abort key in torch.distributed's store (`DistContext.abort`); every other rank reads it at
its next claim (`claim`) and while it waits for the others at the end (`DistContext.finish`),
and stops with one line naming the rank and its error instead of working on, or waiting for
``--dist-timeout``.
"""

from __future__ import annotations

import datetime
import os
import time
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
    #: Seconds `finish` waits for the other ranks (``--dist-timeout``).
    timeout_s: float = 6 * 3600
    #: Prefix of this job's keys in the store (the runner sets the run's fingerprint).
    run_key: str = "milr-bench"
    #: Whether this rank has read another rank's abort (`check_abort`) / aborted (`abort`).
    _saw_abort: bool = False
    _aborted: bool = False

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

    def abort(self, message: str) -> None:
        """Tell every rank to stop: `message` (one line) under this run's abort key.

        The first rank to abort wins; it then waits (at most ``timeout_s``) until every other
        rank has read the key. A rank stopping because another did (`check_abort`) leaves the
        key as it is. `close` then lets rank 0 leave last (see there).
        """
        if not self.distributed or self._saw_abort or self._aborted:
            return
        key = f"{self.run_key}-abort"
        text = f"rank {self.rank} stopped the run: {message}"
        try:
            store = _store()
            now = store.compare_set(key, "", text)  # set only when absent; returns the value
            if now.decode("utf-8", "replace") != text:  # another rank was first: count as read
                self._saw_abort = True
                store.add(f"{key}-seen", 1)
                return
            self._aborted = True
            self._wait(f"{key}-seen", self.world_size - 1)
        except Exception:  # the store is gone with its host: the others notice that themselves
            pass

    def _wait(self, key: str, count: int) -> None:
        """Poll the store until counter `key` reaches `count`, at most ``timeout_s``."""
        store = _store()
        deadline = time.monotonic() + self.timeout_s
        while int(store.add(key, 0)) < count and time.monotonic() < deadline:
            time.sleep(0.25)

    def _leave(self) -> None:
        """After an abort, rank 0 leaves last: its process hosts the store when the job was
        not started by torchrun's agent, and a store that vanishes under a rank still using
        it makes that rank's last words a C++ trace instead of its one line."""
        if not self.distributed or not (self._aborted or self._saw_abort):
            return
        key = f"{self.run_key}-left"
        try:
            if self.rank != 0:
                _store().add(key, 1)
            else:
                self._wait(key, self.world_size - 1)
        except Exception:
            pass

    def check_abort(self) -> None:
        """Raise `MilrUserError` with the message of a rank that stopped the run (else nothing).

        A store that cannot be reached any more (its host process ended) is reported the same
        way: another rank stopped.
        """
        if not self.distributed:
            return
        key = f"{self.run_key}-abort"
        try:
            store = _store()
            if not store.check([key]):
                return
            message = store.get(key).decode("utf-8", "replace")
            self._saw_abort = True
            store.add(f"{key}-seen", 1)  # the aborting rank waits for every rank's look
        except Exception as exc:
            raise MilrUserError(
                f"rank {self.rank} lost contact with the other ranks ({_first_line(exc)}): "
                "another rank stopped the run; see its error"
            ) from None
        raise MilrUserError(message)

    def finish(self) -> None:
        """The final barrier: wait until every rank has finished its work, stopping at once
        when a rank aborts; then `barrier` on this rank's device. Waits at most
        ``timeout_s`` (``--dist-timeout``)."""
        if not self.distributed:
            return
        key = f"{self.run_key}-done"
        _store().add(key, 1)
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.check_abort()
            if int(_store().add(key, 0)) >= self.world_size:
                break
            if time.monotonic() > deadline:
                raise MilrUserError(
                    f"rank {self.rank} waited --dist-timeout {self.timeout_s:g} s for the other "
                    "ranks to finish; raise --dist-timeout for long or unbalanced runs"
                )
            time.sleep(0.25)
        self.barrier()

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
        self._leave()
        if self.initialized_here:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.initialized_here = False


def _store() -> Any:
    """The process group's key-value store (torchrun's, or the one `init_process_group` made)."""
    import torch.distributed as dist

    return dist.distributed_c10d._get_default_store()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


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
            dist.get_rank(), dist.get_world_size(), local, False, dist.get_backend(), resolved,
            timeout_s,
        )  # fmt: skip
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(
        dist.get_rank(), dist.get_world_size(), local, True, backend, resolved, timeout_s
    )


def shard(items: list[T], rank: int, world_size: int) -> list[T]:
    """Round-robin share of `items` for `rank`: deterministic, balanced, order-preserving."""
    return items[rank::world_size]


def claim(items: list[T], ctx: DistContext, key: str = "milr-bench-claimed") -> Iterator[T]:
    """The items this rank claims, one at a time, from a counter shared by all ranks.

    Each ``next()`` atomically takes the next unclaimed index from torch.distributed's store
    (``store.add(key, 1)``), so a rank that finishes early takes more work instead of idling
    while a slow rank finishes a fixed share. Every rank must pass the same `items` (in the
    same order) and `key`; what a prompt produces never depends on which rank ran it. A single
    process yields every item. Raises `MilrUserError` when another rank has aborted the run
    (`DistContext.abort`).
    """
    if not ctx.distributed:
        yield from items
        return
    store = _store()
    while True:
        ctx.check_abort()  # another rank stopped the run: stop too, with its one line
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
