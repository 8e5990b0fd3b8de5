"""Checks that weight files are whole before a loader reads them: one line per fault.

`check_weights_path` looks at a checkpoint directory (or one weight file) without loading any
tensor -- it reads a few bytes and, for a zip archive, its directory -- and raises
`milr.errors.CheckpointError` (CLI exit 2) naming the file, what is wrong and how to get a
good copy:

============================  ==================================================================
fault                         how it is recognised
============================  ==================================================================
zero-byte file                size 0
leftover partial download     a ``*.incomplete`` / ``*.part`` file in the folder (or its
                              ``.cache/huggingface/download``) -- an interrupted download
Git LFS pointer               the file is the ~130-byte text pointer, not the weights
damaged safetensors header    header length beyond the file, or a header that is not JSON
truncated safetensors         fewer bytes than the header's tensor offsets need (more: damaged)
torch file that does not open a zip archive whose directory cannot be read, or neither a zip
                              archive nor a pickle
missing shard                 a ``*.index.json`` names a shard file that is not there
============================  ==================================================================

A state dict of another architecture is found when the tensors are matched against the model
(`milr.checkpoints.check_state_dict_keys`); its message carries the same re-download fix
(`redownload_hint`). Files in the Hugging Face cache get the exact ``hf download ...
--force-download`` command that replaces them.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

from milr.errors import CheckpointError

#: Suffixes of files holding weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: Suffixes of partial downloads (huggingface_hub, browsers, curl/wget -c).
PARTIAL_SUFFIXES = (".incomplete", ".part", ".partial", ".crdownload")
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_LFS_POINTER = b"version https://git-lfs"
#: safetensors refuses headers over 100 MB; a larger declared length is a damaged header.
_MAX_HEADER = 100_000_000
_CACHE_PATH = re.compile(
    r"models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<sha>[0-9a-f]{40})/(?P<rel>.+)$"
)


def redownload_hint(path: str | Path) -> str:
    """How to replace `path` with a good copy: the ``hf download`` command for a file in the
    Hugging Face cache, else a general instruction."""
    text = Path(path).as_posix()
    m = _CACHE_PATH.search(text)
    if m:
        repo = f"{m['owner']}/{m['name']}"
        return (
            f"re-download it: hf download {repo} {m['rel']} --revision {m['sha']} --force-download"
        )
    return (
        "replace it with a complete copy (re-download it, e.g. hf download REPO_ID --local-dir DIR)"
    )


def _fail(path: Path, what: str, who: str, fix: str | None = None) -> CheckpointError:
    prefix = f"{who}: " if who else ""
    return CheckpointError(
        f"{prefix}weight file {str(path)!r} {what}; {fix or redownload_hint(path)}"
    )


def check_weights_path(path: str | Path, who: str = "") -> None:
    """Refuse a damaged weight file, or a checkpoint folder holding one (see the module table).

    `path` is a directory (its weight files, index files and partial downloads are checked,
    not recursing into sub-folders other than huggingface_hub's ``.cache``) or a single file.
    `who` prefixes the message (``"critic 'vqa'"``). Raises `CheckpointError`; returns None
    for a folder without weight files (the loader then says what it misses).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        _check_dir(p, who)
    elif p.is_file():
        _check_partial_neighbours(p, who)
        check_weight_file(p, who)


def _check_partial_neighbours(p: Path, who: str) -> None:
    for suffix in PARTIAL_SUFFIXES:
        partial = p.with_name(p.name + suffix)
        if partial.exists():
            raise _fail(
                partial,
                "is a leftover partial download (a download of this file was interrupted)",
                who,
                f"finish the download or delete the partial file, then check {p.name}",
            )


def _check_dir(d: Path, who: str) -> None:
    partial_places = [d, d / ".cache" / "huggingface" / "download"]
    for place in partial_places:
        if not place.is_dir():
            continue
        for f in sorted(place.iterdir()):
            if f.is_file() and f.name.endswith(PARTIAL_SUFFIXES):
                raise _fail(
                    f,
                    "is a leftover partial download (a download into this folder was interrupted)",
                    who,
                    "finish the download (hf download REPO_ID --local-dir DIR resumes it) or "
                    "delete the file",
                )
    for f in sorted(d.iterdir()):
        if (
            f.is_file()
            and f.name.endswith(".index.json")
            and f.name[: -len(".index.json")].endswith(WEIGHT_SUFFIXES)
        ):
            _check_index(f, who)
        elif f.is_file() and f.name.endswith(WEIGHT_SUFFIXES):
            check_weight_file(f, who)


def _check_index(index: Path, who: str) -> None:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        shards = sorted(set(data["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _fail(index, f"is not a readable shard index ({type(exc).__name__})", who) from None
    for shard in shards:
        if not (index.parent / shard).is_file():
            raise _fail(index.parent / shard, f"is missing (named by {index.name})", who)


def check_weight_file(f: Path, who: str = "") -> None:
    """Check one weight file by its suffix (``.safetensors`` or a torch file); see the module."""
    size = f.stat().st_size
    if size == 0:
        raise _fail(f, "is empty (0 bytes)", who)
    with f.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(_LFS_POINTER):
        raise _fail(
            f, "is a Git LFS pointer, not the weights (the repo was cloned without git lfs)", who
        )
    if f.name.endswith(".safetensors"):
        _check_safetensors(f, size, who)
    elif f.name.endswith(_TORCH_SUFFIXES):
        _check_torch(f, head, who)


def _check_safetensors(f: Path, size: int, who: str) -> None:
    if size < 8:
        raise _fail(f, f"is truncated ({size} bytes: not even a safetensors header length)", who)
    with f.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > _MAX_HEADER:
            raise _fail(
                f,
                f"has a damaged safetensors header (it declares {n} header bytes; the file has "
                f"{size} bytes)",
                who,
            )
        if 8 + n > size:
            raise _fail(f, f"is truncated (it ends inside its {n}-byte header: {size} bytes)", who)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _fail(
            f,
            f"has a damaged safetensors header (not the JSON table it should be: {type(exc).__name__})",
            who,
        ) from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise _fail(f, f"is truncated ({size} of the {expected} bytes its header describes)", who)
    if size > expected:
        raise _fail(
            f,
            f"is damaged ({size - expected} bytes beyond the {expected} its header describes)",
            who,
        )


def _check_torch(f: Path, head: bytes, who: str) -> None:
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(f) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise _fail(
                f, f"is a torch zip archive that does not open (truncated or damaged: {exc})", who
            ) from None
        if not any(n.endswith("data.pkl") for n in names):
            raise _fail(f, "is a zip archive without data.pkl: not a torch checkpoint", who)
        return
    if head[:1] == b"\x80":  # a legacy torch pickle (protocol 2+)
        return
    raise _fail(
        f,
        f"is not a torch checkpoint (neither a zip archive nor a pickle; starts with {head[:8]!r})",
        who,
    )
