"""The record writer: makes each record and the files it points at durable, in order."""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.bench.record import BenchRecord
from milr.bench.records import RecordShard, canonical_json, write_files_durably

if TYPE_CHECKING:
    from PIL.Image import Image

#: A file to write: its path and a function producing its bytes (run on the writer thread).
FileJob = tuple[Path, Callable[[], bytes]]


def png_bytes(image: Image) -> bytes:
    """Lossless PNG, fast over small."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def json_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


class RecordWriter:
    """A background thread that makes records durable in order, overlapping I/O with compute.

    For each submitted record it encodes and writes the record's files (temp, fsync, rename),
    then appends the record (fsync), so a record never points at a file that is not on disk.
    At most `depth` records wait; `close` writes what is queued (also after Ctrl-C). A write
    error stops the writer and is raised on the next `submit` or on `close`.
    """

    def __init__(
        self,
        store: RecordShard,
        on_written: Callable[[BenchRecord], None],
        depth: int = 4,
    ) -> None:
        self.store = store
        self.on_written = on_written
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[BenchRecord, list[FileJob]] | None] = queue.Queue(
            maxsize=depth
        )
        self._thread = threading.Thread(target=self._loop, name="milr-bench-writer", daemon=True)
        self._thread.start()

    def submit(self, record: BenchRecord, files: list[FileJob]) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((record, files))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            record, files = item
            try:
                t = time.perf_counter()
                write_files_durably([(path, make()) for path, make in files])
                record.timings["write_s"] = time.perf_counter() - t
                self.store.append(record.to_dict())
                self.on_written(record)
            except BaseException as exc:  # surfaced to the main thread on the next submit/close
                self.error = exc

    def close(self, raise_errors: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if raise_errors and self.error is not None:
            raise self.error
