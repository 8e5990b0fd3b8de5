"""How many prompts fit: ``--batch-prompts auto`` and the out-of-memory fallback.

A prompt in the batch holds, per candidate, two sequence rows (the CFG pair) of KV cache over
its image prompt and image tokens (reasoning rows are shorter: one row each). The KV bytes per
position come from the model config (`Generator.kv_bytes_per_token`); the free memory from the
device (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of ``/proc/meminfo``, or
psutil). `MemoryLimit` caps both: it is what ``auto`` plans with, and, when injected
(``BatchedMILR(memory_limit=...)``, `BenchOptions.batch_memory`), a batch whose estimate
exceeds it raises `torch.OutOfMemoryError` before it runs, as the device would — which is
how the fallback (halve the batch, continue) is tested without a small GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from milr.generator import Generator

#: Positions a row is planned for beyond the image tokens (image prompt with reasoning).
PROMPT_ALLOWANCE = 640
#: Share of free memory `auto` plans to use (the rest: weights' workspace, decode, logits).
AUTO_SHARE = 0.5
#: Largest batch `auto` picks.
AUTO_MAX = 64


@dataclass
class MemoryLimit:
    """A cap in bytes on what one batched phase may hold (None: the device's free memory)."""

    bytes: int | None = None

    def check(self, need: int, rows: int) -> None:
        """Raise `torch.OutOfMemoryError` when `need` bytes exceed the cap (simulated OOM)."""
        if self.bytes is not None and need > self.bytes:
            import torch

            raise torch.OutOfMemoryError(
                f"simulated out of memory: {rows} rows need about {need} bytes of KV cache, "
                f"over the {self.bytes}-byte limit"
            )


def row_bytes(gen: Generator) -> int:
    """Planned bytes of one sequence row (KV over prompt allowance + image tokens)."""
    per_token = gen.kv_bytes_per_token() or 0
    return per_token * (PROMPT_ALLOWANCE + int(gen.image_token_count))


def phase_bytes(gen: Generator, image_rows: int) -> int:
    """Planned bytes of an image phase over `image_rows` candidates (2 CFG rows each)."""
    return 2 * image_rows * row_bytes(gen)


def free_bytes(device: Any) -> int | None:
    """Free memory of `device` in bytes (None when it cannot be read)."""
    dev = str(device)
    if dev.startswith("cuda"):
        import torch

        try:
            free, _total = torch.cuda.mem_get_info(torch.device(dev))
        except (RuntimeError, AssertionError):
            return None
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def auto_batch(gen: Generator, samples_per_step: int, limit: MemoryLimit) -> int:
    """The batch size ``--batch-prompts auto`` uses: what half the free memory holds, 1..64.

    Free memory is the device's, capped by `limit`; a prompt needs
    ``2 · K · row_bytes`` (`phase_bytes`). Without a KV size from the adapter, 8.
    """
    per_prompt = phase_bytes(gen, max(1, int(samples_per_step)))
    free = free_bytes(gen.device)
    if limit.bytes is not None:
        free = limit.bytes if free is None else min(free, limit.bytes)
    if not per_prompt or free is None:
        return 8
    share = 1.0 if limit.bytes is not None and free == limit.bytes else AUTO_SHARE
    return max(1, min(AUTO_MAX, int(free * share) // per_prompt))
