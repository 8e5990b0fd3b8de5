"""The per-rank progress bar of a bench run."""

from __future__ import annotations

import sys
from typing import Any

from milr.bench.distributed import DistContext
from milr.bench.record import CONTROL, SIDES, BenchRecord


class Progress:
    """A per-rank tqdm bar: prompts done, pass rate of base and MILR images so far, errors, ETA,
    and (batched runs) the prompts in flight."""

    def __init__(self, total: int, ctx: DistContext, enabled: bool) -> None:
        self.bar: Any = None
        self.counts: dict[str, list[int]] = {side: [0, 0] for side in (*SIDES, CONTROL)}
        self.errors = 0
        self.active: int | None = None
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"rank {ctx.rank}/{ctx.world_size}" if ctx.distributed else "bench",
                position=ctx.local_rank if ctx.distributed else None,
                unit="prompt",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, record: BenchRecord) -> None:
        if record.error:
            self.errors += 1
        for name, side in record.sides():
            if side is None:
                continue
            if side.error:
                self.errors += 1
            if side.passed is not None:
                self.counts[name][0] += int(bool(side.passed))
                self.counts[name][1] += 1
        if self.bar is not None:
            self.bar.set_postfix(self._postfix(), refresh=False)
            self.bar.update(1)

    def _postfix(self) -> dict[str, str]:
        post = {}
        for name in (*SIDES, CONTROL):
            p, n = self.counts[name]
            if name == CONTROL and not n:
                continue
            post[name] = f"{p / n:.2f}" if n else "-"
        post["err"] = str(self.errors)
        if self.active is not None:
            post["active"] = str(self.active)
        return post

    def set_active(self, n: int) -> None:
        """Prompts in flight in the batched engine (shown as ``active``)."""
        self.active = int(n)
        if self.bar is not None:
            self.bar.set_postfix(self._postfix(), refresh=True)  # once per batched round

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
