"""The run directory's durable state: JSONL record shards, the run config, derived seeds.

Layout of a run directory::

    run.json                 the run's settings and their fingerprint (written atomically)
    records/rank-00000.jsonl one shard per rank; one JSON record per (prompt, seed), fsynced
    results.jsonl            all shards merged and sorted (rewritten at the end of a run)
    images/ID/SEED-base.png, images/ID/SEED-milr.png

Appends are one ``write`` of a whole line on an ``O_APPEND`` descriptor followed by ``fsync``,
so a record is either complete on disk or (after a crash mid-write) a torn last line, which
readers ignore and the next writer cuts off before appending.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from milr.errors import MilrUserError

SCHEMA_VERSION = 1
RECORDS_DIR = "records"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"


def derive_seed(run_seed: int, prompt_id: str, seed_index: int) -> int:
    """Seed of one (prompt, repeat): a stable hash of the run seed and the prompt id.

    Independent of prompt order, sharding and Python's per-process ``hash()`` salt.
    """
    digest = hashlib.sha256(f"milr-bench\0{run_seed}\0{prompt_id}\0{seed_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of hashes and fingerprints."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(settings: dict[str, Any]) -> str:
    """Short hash of the settings that determine a run's results."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def record_key(record: dict[str, Any]) -> tuple[str, int]:
    return (str(record["prompt_id"]), int(record.get("seed_index", 0)))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def create_beside(path: Path) -> tuple[int, str]:
    """A new, exclusively created temp file next to `path`: ``(descriptor, its path)``.

    Created with mode 0o666, so the process umask (and a folder's default ACL) decides the
    permissions, as for any file milr writes; `tempfile.mkstemp` would make it 0600 whatever
    the umask, and the rename would keep that.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


def _replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a fsynced temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    _replace_file(path, data)
    _fsync_dir(path.parent)


def write_files_durably(files: list[tuple[Path, bytes]]) -> None:
    """Write several files atomically (temp, fsync, rename each), then fsync each folder once."""
    folders: dict[Path, None] = {}
    for path, data in files:
        _replace_file(path, data)
        folders[path.parent] = None
    for folder in folders:
        _fsync_dir(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """Read a record file; a torn last line (crash mid-write) is skipped, other bad lines raise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        is_last = i == len(lines) - 1  # no newline after it: the write did not finish
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if is_last and tolerate_torn_tail:
                break
            raise MilrUserError(
                f"{path}:{i + 1}: corrupt record ({exc}); move the file away or delete that line"
            ) from None
        if not isinstance(obj, dict) or "prompt_id" not in obj:
            raise MilrUserError(f"{path}:{i + 1}: not a milr bench record (no 'prompt_id')")
        out.append(obj)
    return out


class RecordShard:
    """One rank's append-only JSONL file with atomic, fsynced appends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def _repair_tail(self) -> None:
        """Cut a torn last line so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if not data or data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            try:
                json.loads(tail)
            except (json.JSONDecodeError, UnicodeDecodeError):
                fh.truncate(cut)
            else:  # complete record, only the newline was lost
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a single write, then fsync it."""
        line = (
            json.dumps(record, ensure_ascii=False, allow_nan=False, default=str) + "\n"
        ).encode()
        written = 0
        while written < len(line):  # a regular-file write only comes back short on a full disk
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RecordShard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_path(out: Path, rank: int) -> Path:
    return out / RECORDS_DIR / f"rank-{rank:05d}.jsonl"


def shard_files(out: Path) -> list[Path]:
    return sorted((out / RECORDS_DIR).glob("rank-*.jsonl"))


def merge_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (prompt, seed): a successful one wins over an errored one, later over earlier."""
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in records:
        key = record_key(rec)
        old = best.get(key)
        if old is None or not rec.get("error") or old.get("error"):
            best[key] = rec
    return [best[k] for k in sorted(best, key=lambda k: (_natural(k[0]), k[1]))]


def _natural(pid: str) -> tuple[Any, ...]:
    """Sort ids numerically where they are numbers (WISE ``2`` before ``10``)."""
    return (0, int(pid), "") if pid.isdigit() else (1, 0, pid)


def load_all_records(out: Path) -> list[dict[str, Any]]:
    """All records of a run directory, merged across shards."""
    recs: list[dict[str, Any]] = []
    for f in shard_files(out):
        recs.extend(read_jsonl(f))
    if not recs and (out / RESULTS_FILE).exists():
        recs = read_jsonl(out / RESULTS_FILE)
    return merge_records(recs)


def write_results(out: Path, records: list[dict[str, Any]]) -> Path:
    """Write the merged, sorted records to ``results.jsonl`` atomically."""
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    atomic_write_text(out / RESULTS_FILE, text)
    return out / RESULTS_FILE


# --- run config ---------------------------------------------------------------------------


def read_run(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MilrUserError(
            f"{path} is unreadable ({exc}); restore it or use a new --out"
        ) from None


def diff_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts (``key: old -> new``)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if canonical_json(a) != canonical_json(b):
            lines.append(f"{key}: {canonical_json(a)} -> {canonical_json(b)}")
    return lines


def check_or_write_run(out: Path, run: dict[str, Any], *, force: bool) -> dict[str, Any]:
    """Start a run directory, or join one made with the same settings.

    A directory holding records of different settings is refused (naming each differing
    setting) unless `force`, in which case the new settings are recorded and the old ones
    kept in ``history``.
    """
    out.mkdir(parents=True, exist_ok=True)
    old = read_run(out)
    if old is None:
        if (shard_files(out) or (out / RESULTS_FILE).exists()) and not force:
            raise MilrUserError(
                f"{out} holds bench records but no {RUN_FILE}; cannot tell how they were made. "
                "Use another --out, or --force to adopt them"
            )
        atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")
        return run
    if old.get("fingerprint") == run["fingerprint"]:
        return old
    if not load_all_records(out):  # nothing to mix (e.g. the last attempt failed at startup)
        atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")
        return run
    diffs = diff_settings(old.get("settings", {}), run["settings"])
    legacy = "identity" in run["settings"] and "identity" not in old.get("settings", {})
    if legacy and not force:
        raise MilrUserError(
            f"{out} was written by an earlier milr whose {RUN_FILE} lacks the resolved settings "
            "(critic configuration, prompt file content, text_prefix, latent_dtype, mode "
            "semantics), so its records cannot be shown to match this run; use a new --out, or "
            "--force to continue it with these settings (the old ones are kept in its history)"
        )
    if not force:
        raise MilrUserError(
            f"{out} holds a run with different settings; refusing to mix them:\n  "
            + "\n  ".join(diffs or ["(settings identical but fingerprint differs)"])
            + "\nUse another --out, or pass --force to continue this directory with the new settings"
        )
    history = list(old.get("history", []))
    history.append({k: old[k] for k in ("fingerprint", "settings", "created") if k in old})
    merged = dict(run)
    merged["history"] = history
    merged["forced_changes"] = diffs
    atomic_write_text(out / RUN_FILE, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def check_or_write_resolved(out: Path, resolved: dict[str, Any], *, force: bool) -> None:
    """The values the loaded model resolved the run's unset options to (e.g. the checkpoint's
    ``text_prefix`` and ``cfg_scale``), kept as ``resolved`` in ``run.json`` beside the
    fingerprinted settings (they are known only once the model is loaded).

    Written when absent; when present and different (the checkpoint's ``milr.json`` changed
    between two attempts) the run is refused in one line naming each value, unless `force`,
    which records the new values and keeps the old ones in ``history``. Every rank resolves
    the same values, so each may check and write.
    """
    run = read_run(out)
    if run is None:
        return
    old = run.get("resolved")
    if old is not None and canonical_json(old) == canonical_json(resolved):
        return
    if old is not None:
        diffs = diff_settings(old, resolved)
        if not force:
            raise MilrUserError(
                f"{out}: the model now resolves the run's unset options differently "
                f"({'; '.join(diffs)}), so new records would not match the old ones; use a "
                "new --out, or --force to continue with the new values"
            )
        history = list(run.get("history", []))
        history.append({"resolved": old, "at": _now()})
        run["history"] = history
    run["resolved"] = resolved
    atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
