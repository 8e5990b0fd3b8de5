"""One bench record as a typed object, with the one (de)serialiser of the on-disk form.

`milr.bench.records` keeps records durable as JSON lines (dicts); this module gives them a
shape. `BenchRecord.from_dict` reads every record milr has written (schema 1, including lines
written before this class existed: missing optional fields take their defaults, unknown fields
are kept in `extra` and written back unchanged); `BenchRecord.to_dict` writes the same layout,
key order included (docs/bench.md, "Record format").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milr.bench.records import load_all_records

SIDES: tuple[str, str] = ("base", "milr")
#: The side a control run (``--control resample`` / ``best-of-n``) adds beside MILR's; it
#: shares the record's base image (the control's step 0 is MILR's, drawn from the same seed).
CONTROL = "control"


@dataclass
class SideResult:
    """One evaluated image of a record: the base (first sample) or the MILR image.

    ``score`` is the evaluation critic's score in [0, 1]; ``passed`` its verdict (None when the
    critic gives none); ``error`` is set (and ``score`` None) when evaluating this image failed.
    """

    image: str | None = None
    image_sha256: str | None = None
    score: float | None = None
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("image", "image_sha256", "score", "passed", "details", "error")

    @property
    def scored(self) -> bool:
        """Whether this image has a usable score (evaluated without error)."""
        return self.error is None and self.score is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SideResult:
        return cls(
            image=data.get("image"),
            image_sha256=data.get("image_sha256"),
            score=data.get("score"),
            passed=data.get("passed"),
            details=dict(data.get("details") or {}),
            error=data.get("error"),
            extra={k: v for k, v in data.items() if k not in cls._KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "image_sha256": self.image_sha256}
        out.update(score=self.score, passed=self.passed, details=self.details, error=self.error)
        out.update(self.extra)
        return out

    def set_evaluation(self, evaluation: SideResult) -> None:
        """Take the score, verdict, details and error of `evaluation` (image fields stay)."""
        self.score, self.passed = evaluation.score, evaluation.passed
        self.details, self.error = evaluation.details, evaluation.error


@dataclass
class BenchRecord:
    """The result of one (prompt, seed): both images' evaluations, the trajectory, timings.

    ``error`` is set when the solver failed (then ``base`` and ``milr`` are None and
    ``traceback`` holds the last frames); ``eval_batch_error`` is set when evaluating both
    images in one batch failed and each image was then evaluated alone.
    """

    prompt_id: str
    seed_index: int = 0
    seed: int | None = None
    prompt: str = ""
    group: str = "all"
    benchmark: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    base: SideResult | None = None
    milr: SideResult | None = None
    trajectory: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    trajectory_file: str | None = None
    eval_batch_error: str | None = None
    #: Position of the prompt in its suite file (None in records written before it existed).
    suite_index: int | None = None
    #: The control's image (``--control``; None without one), its trajectory summary and file.
    control: SideResult | None = None
    control_trajectory: dict[str, Any] | None = None
    control_trajectory_file: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rank: int | None = None
    host: str | None = None
    finished_at: str | None = None
    schema: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    # --- the on-disk form -----------------------------------------------------------------

    _REQUIRED = ("schema", "prompt_id", "seed_index", "seed", "prompt", "group", "benchmark")
    _OPTIONAL = (
        "traceback",
        "trajectory_file",
        "eval_batch_error",
        "suite_index",
        "control",
        "control_trajectory",
        "control_trajectory_file",
    )
    _TAIL = ("timings", "rank", "host", "finished_at")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRecord:
        """Read one JSON record (any record milr wrote with schema 1)."""
        known = {*cls._REQUIRED, "metadata", *SIDES, "trajectory", "error", *cls._OPTIONAL}
        known |= set(cls._TAIL)
        sides = {s: data.get(s) for s in SIDES}
        return cls(
            prompt_id=str(data["prompt_id"]),
            seed_index=int(data.get("seed_index", 0)),
            seed=data.get("seed"),
            prompt=data.get("prompt", ""),
            group=str(data.get("group", "all")),
            benchmark=data.get("benchmark"),
            metadata=dict(data.get("metadata") or {}),
            base=SideResult.from_dict(sides["base"]) if sides["base"] is not None else None,
            milr=SideResult.from_dict(sides["milr"]) if sides["milr"] is not None else None,
            trajectory=data.get("trajectory"),
            error=data.get("error"),
            traceback=data.get("traceback"),
            trajectory_file=data.get("trajectory_file"),
            eval_batch_error=data.get("eval_batch_error"),
            suite_index=data.get("suite_index"),
            control=SideResult.from_dict(data["control"]) if data.get("control") else None,
            control_trajectory=data.get("control_trajectory"),
            control_trajectory_file=data.get("control_trajectory_file"),
            timings=dict(data.get("timings") or {}),
            rank=data.get("rank"),
            host=data.get("host"),
            finished_at=data.get("finished_at"),
            schema=int(data.get("schema", 1)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the same keys, in the same order, as records have always had."""
        out: dict[str, Any] = {
            "schema": self.schema,
            "prompt_id": self.prompt_id,
            "seed_index": self.seed_index,
            "seed": self.seed,
            "prompt": self.prompt,
            "group": self.group,
            "benchmark": self.benchmark,
            "metadata": self.metadata,
            "base": self.base.to_dict() if self.base is not None else None,
            "milr": self.milr.to_dict() if self.milr is not None else None,
            "trajectory": self.trajectory,
            "error": self.error,
        }
        for key in self._OPTIONAL:  # written only when set, as before
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_dict() if isinstance(value, SideResult) else value
        out.update(
            timings=self.timings, rank=self.rank, host=self.host, finished_at=self.finished_at
        )
        out.update(self.extra)
        return out

    # --- questions every reader asks -------------------------------------------------------

    @property
    def key(self) -> tuple[str, int]:
        return (self.prompt_id, self.seed_index)

    def side(self, name: str) -> SideResult | None:
        """``base``, ``milr`` or ``control`` (None in a record without a control)."""
        if name == CONTROL:
            return self.control
        if name not in SIDES:
            raise ValueError(f"side {name!r}: use one of {(*SIDES, CONTROL)}")
        return self.base if name == "base" else self.milr

    def sides(self) -> Iterator[tuple[str, SideResult | None]]:
        """``base`` and ``milr``, then ``control`` when the record has one."""
        names = (*SIDES, CONTROL) if self.control is not None else SIDES
        return ((name, self.side(name)) for name in names)

    @property
    def control_traj(self) -> dict[str, Any]:
        """The control's trajectory summary, or an empty dict."""
        return self.control_trajectory or {}

    @property
    def any_error(self) -> bool:
        """Whether the solver or the evaluation of either image failed."""
        return bool(self.error) or any(s is not None and s.error for _, s in self.sides())

    def side_usable(self, name: str) -> bool:
        """Whether `name`'s image was generated and scored without error."""
        s = self.side(name)
        return not self.error and s is not None and s.scored

    def verdict(self, name: str) -> bool | None:
        s = self.side(name)
        return None if s is None else s.passed

    @property
    def traj(self) -> dict[str, Any]:
        """The trajectory summary, or an empty dict when the solver failed."""
        return self.trajectory or {}


def as_records(items: Iterable[BenchRecord | dict[str, Any]]) -> list[BenchRecord]:
    """Records from JSON dicts (as read from disk) or records; other values are an error."""
    out = []
    for item in items:
        out.append(item if isinstance(item, BenchRecord) else BenchRecord.from_dict(item))
    return out


def load_records(out: str | Path) -> list[BenchRecord]:
    """All records of a run directory, merged across shards, as `BenchRecord` objects."""
    return as_records(load_all_records(Path(out)))
