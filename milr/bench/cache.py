"""A persistent score cache: re-scoring an image already judged by the same critic is free.

The key is a hash of the image's pixel content, the prompt, the metadata, the critic's name and
its configuration (`Critic.config()`), so re-evaluating a finished run with another evaluation
critic reuses every image and only runs the new critic, and running it twice costs nothing.
SQLite (WAL mode) lets every rank on one machine share one cache file safely. WAL needs a local
file system: for multi-node runs whose ``--out`` is on NFS, point ``--cache`` at a local path.
A cache that fails is disabled with a warning; it never fails a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.bench.records import canonical_json
from milr.critic import CriticResult, critic_label, evaluate
from milr.errors import ExternalServiceError

if TYPE_CHECKING:
    from PIL.Image import Image

    from milr.critic import Critic


def image_sha256(image: Image) -> str:
    """Hash of an image's mode, size and pixels (not of a file encoding of it)."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def critic_identity(critic: Critic) -> dict[str, Any]:
    """Name and configuration of a critic, as used in cache keys and run settings."""
    return {"name": critic_label(critic), "class": type(critic).__name__, "config": critic.config()}


def cache_key(
    image_hash: str, prompt: str, metadata: dict[str, Any], critic_id: dict[str, Any]
) -> str:
    payload = canonical_json(
        {"image": image_hash, "prompt": prompt, "metadata": metadata, "critic": critic_id}
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ScoreCache:
    """Critic results keyed by (image content, prompt, metadata, critic name and config)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # SQLite creates files 0644 whatever the umask; created here first, the database (and
        # its -wal/-shm files, which SQLite gives the database's mode) follows the umask
        with contextlib.suppress(OSError):  # exists already, or SQLite will say why not
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False)
        self._setup(deadline=time.monotonic() + 60.0)
        self.hits = 0
        self.misses = 0
        self.broken = False

    def _setup(self, deadline: float) -> None:
        """WAL mode and the table. Switching to WAL takes an exclusive lock without waiting on
        SQLite's busy handler, so ranks opening a new cache at the same moment can get
        "database is locked": retried with a growing pause until `deadline` (monotonic s)."""
        pause = 0.01
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS scores "
                    "(key TEXT PRIMARY KEY, critic TEXT, result TEXT)"
                )
                self._conn.commit()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                self._conn.rollback()
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _failed(self, exc: Exception) -> None:
        """A cache that cannot be read or written is dropped (with one warning), never fatal."""
        if not self.broken:
            import sys

            print(f"warning: score cache {self.path} disabled: {exc}", file=sys.stderr)
        self.broken = True

    def get(self, key: str) -> CriticResult | None:
        if self.broken:
            return None
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT result FROM scores WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if row is None:
            return None
        data = json.loads(row[0])
        return CriticResult(data["score"], data.get("passed"), data.get("details") or {})

    def put(self, key: str, critic: str, result: CriticResult) -> None:
        if self.broken:
            return
        text = json.dumps(result.to_dict(), allow_nan=False, default=str)
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO scores (key, critic, result) VALUES (?, ?, ?)",
                    (key, critic, text),
                )
                self._conn.commit()
        except sqlite3.Error as exc:
            self._failed(exc)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def cached_evaluate(
    critic: Critic,
    images: list[Image],
    prompts: list[str],
    metadata: list[dict[str, Any]],
    cache: ScoreCache | None,
    hashes: list[str] | None = None,
) -> list[CriticResult]:
    """`milr.evaluate` through the cache: only images not judged before reach the critic.

    When the critic fails at an external service for some images, the results it kept are
    cached all the same and the `ExternalServiceError` is restated for this whole batch, its
    ``results`` holding the cache hits and the kept results.
    """
    if cache is None:
        return evaluate(critic, images, prompts, metadata)
    ident = critic_identity(critic)
    hashes = hashes or [image_sha256(im) for im in images]
    keys = [cache_key(h, p, m, ident) for h, p, m in zip(hashes, prompts, metadata)]
    out: list[CriticResult | None] = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(out) if r is None]
    cache.hits += len(images) - len(todo)
    cache.misses += len(todo)
    if todo:
        try:
            fresh = evaluate(
                critic,
                [images[i] for i in todo],
                [prompts[i] for i in todo],
                [metadata[i] for i in todo],
            )
        except ExternalServiceError as exc:
            # images scored before the service failed are cached and handed on, never lost
            for j, res in exc.kept().items():
                cache.put(keys[todo[j]], ident["name"], res)
            known = {i: r for i, r in enumerate(out) if r is not None}
            raise exc.in_batch(todo, len(images), known) from exc
        for i, res in zip(todo, fresh):
            cache.put(keys[i], ident["name"], res)
            out[i] = res
    return [r for r in out if r is not None]
