"""Where each checkpoint a run names is now, and where it would come from: nothing is loaded.

`locate` answers for every spelling a milr weights parameter takes (``Critic.weights_ids``,
``--model``), as ``--dry-run`` and ``milr download`` print it:

- a local file or folder (also ``local-dir:PATH``): ``local``, with its size;
- a Hugging Face Hub id, ``hf://OWNER/NAME[@REV]/FILE`` or open_clip's ``hf-hub:OWNER/NAME``:
  ``cached`` (the snapshot path in the Hugging Face cache, ``HF_HOME`` / ``HF_HUB_CACHE``) or
  ``download`` (from ``HF_ENDPOINT``, default https://huggingface.co);
- ultralytics' own checkpoint names (``yolov8x.pt``): ``cached`` in ultralytics' weights folder
  (``yolo settings weights_dir``) or ``download`` from ultralytics' GitHub release assets,
  the URL its ``attempt_download_asset`` uses, into that folder;
- an open_clip pretrained tag, spelled ``ARCH:TAG`` (``ViT-L-14:openai``, as the open_clip
  critics report it): the file open_clip fetches for it -- from the Hub repo its pretrained
  table names (the OpenAI tags live in ``timm/...`` repos), checked in the Hugging Face cache,
  or, for URL-only tags, from that URL into ``~/.cache/clip``;
- ``shapes``, ``random`` and ``*.yaml`` model configs: ``builtin`` (no weight file);
- anything else: ``library`` (resolved by a library milr cannot ask without loading it).

A Hub id or ``hf-hub:`` spelling may end in ``@REVISION`` (a branch, tag or commit: how
``Critic.weights_ids`` reports a critic's ``revision`` parameter; `with_revision` writes it);
`locate` then looks for that revision instead of the default branch.

Libraries are imported only to read their tables (open_clip's pretrained list, ultralytics'
asset names and settings); no network call is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: open_clip's two file names in a Hub repo (open_clip.constants), safetensors preferred.
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_YOLO_NAME = re.compile(r"^yolo[A-Za-z0-9_.-]*\.pt$")
_OPEN_CLIP_TAG = re.compile(r"^(?P<arch>[A-Za-z0-9][\w.\-]*):(?P<tag>[\w.\-]+)$")
_AT_REVISION = re.compile(r"^(?P<base>(?:hf-hub:)?[^\s@/]+/[^\s@/]+)@(?P<rev>[\w.\-/]+)$")


def with_revision(wid: str, revision: str | None) -> str:
    """`wid` pinned to `revision` in the spelling `locate` reads.

    ``OWNER/NAME`` and ``hf-hub:OWNER/NAME`` gain ``@REVISION``; ``hf://OWNER/NAME/FILE``
    becomes ``hf://OWNER/NAME@REVISION/FILE`` unless it names a revision already; every other
    spelling (paths, library names), and any `wid` when `revision` is None, is returned as is.
    """
    if not revision or "@" in wid:
        return wid
    if wid.startswith("hf://"):
        parts = wid[len("hf://") :].split("/", 2)
        if len(parts) == 3:
            return f"hf://{parts[0]}/{parts[1]}@{revision}/{parts[2]}"
        return wid
    from milr.hub import is_hub_id

    bare = wid[len("hf-hub:") :] if wid.startswith("hf-hub:") else wid
    if is_hub_id(bare) and not Path(bare).expanduser().exists():
        return f"{wid}@{revision}"
    return wid


def split_revision(wid: str) -> tuple[str, str | None]:
    """``OWNER/NAME@REV`` (or ``hf-hub:OWNER/NAME@REV``) -> ``(OWNER/NAME, REV)``; else
    ``(wid, None)``."""
    match = _AT_REVISION.match(wid.strip())
    if match is None or Path(wid).expanduser().exists():
        return wid, None
    return match["base"], match["rev"]


@dataclass(frozen=True)
class Location:
    """Where one checkpoint is (or would come from).

    ``status``: ``local``, ``cached``, ``download``, ``builtin`` or ``library``. ``path``: the
    local file or folder (local/cached; for ``download``: where it will be written when milr
    can tell, else None). ``source``: where a download comes from (a URL or ``Hub repo
    OWNER/NAME``), None when nothing is fetched. ``size``: bytes on disk (None when unknown).
    ``library``: who fetches it (``huggingface_hub``, ``ultralytics``, ``open_clip``).
    """

    id: str
    status: str
    path: str | None = None
    source: str | None = None
    size: int | None = None
    library: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One phrase: ``cached at PATH``, ``not cached: downloaded by LIB from SRC ...``."""
        if self.status == "local":
            return f"local path {self.path}"
        if self.status == "cached":
            return f"cached ({self.library}) at {self.path}"
        if self.status == "download":
            into = f" into {self.path}" if self.path else ""
            text = f"not cached: downloaded by {self.library} from {self.source}{into} on first use"
            if _offline(self.library):
                text += " (offline mode is on: prefetch it with `milr download` first)"
            return text
        if self.status == "builtin":
            return "built in (no weight file)"
        return "resolved by its library (milr cannot tell whether it is cached)"


def locate(wid: str, revision: str | None = None) -> Location:
    """Where `wid` (a weights string as a critic or ``--model`` takes it) is; see the module.

    `revision`: the Hub revision to look for (None: the default branch, or the ``@REVISION``
    that `wid` ends in). Never raises for an unknown spelling (``library``); never downloads.
    """
    text, pinned = split_revision(wid.strip())
    revision = revision or pinned
    if text in ("shapes", "random") or text.endswith((".yaml", ".yml")):
        return Location(wid, "builtin")
    path = Path(text[len("local-dir:") :] if text.startswith("local-dir:") else text).expanduser()
    if path.exists():
        return Location(wid, "local", str(path.absolute()), size=_size(path))
    if text.startswith("hf://"):
        from milr.hub import parse_hf_uri

        parsed = parse_hf_uri(text)
        assert parsed is not None
        repo, fname, rev = parsed
        return _hub_files(wid, repo, [fname], rev or revision)
    if text.startswith("hf-hub:"):
        return _hub_files(wid, text[len("hf-hub:") :], list(OPEN_CLIP_FILES), revision)
    if _YOLO_NAME.match(text):
        found = _ultralytics(wid, text)
        if found is not None:
            return found
    match = _OPEN_CLIP_TAG.match(text)
    if match:
        found = _open_clip(wid, match["arch"], match["tag"], revision)
        if found is not None:
            return found
    from milr.hub import is_hub_id

    if is_hub_id(text):
        return _hub_repo(wid, text, revision)
    return Location(wid, "library")


def _offline(library: str | None) -> bool:
    """Whether offline mode keeps `library` from downloading (milr's loaders obey it)."""
    from milr.checkpoints import hf_offline

    if library == "ultralytics" and os.environ.get("YOLO_OFFLINE", "").lower() in (
        "1",
        "true",
        "yes",
    ):
        return True
    return hf_offline()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _endpoint_repo(repo: str) -> str:
    from milr.hub import endpoint

    return f"{endpoint()}/{repo}"


def _cached_file(repo: str, fname: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        from milr.hub import cache_dir

        found = try_to_load_from_cache(repo, fname, revision=revision, cache_dir=cache_dir())
    except Exception:  # huggingface_hub missing, or an id it rejects
        return None
    return found if isinstance(found, str) else None


def _hub_files(wid: str, repo: str, names: list[str], revision: str | None) -> Location:
    """Any one of `names` of Hub `repo` (the first found in the cache)."""
    for fname in names:
        found = _cached_file(repo, fname, revision)
        if found is not None:
            return Location(wid, "cached", found, None, _size(Path(found)), "huggingface_hub")
    source = _endpoint_repo(repo)
    if len(names) == 1:  # the file's own URL, as the Hub client fetches it
        source += f"/resolve/{revision or 'main'}/{names[0]}"
    return Location(wid, "download", None, source, None, "huggingface_hub")


def _hub_repo(wid: str, repo: str, revision: str | None) -> Location:
    """A whole Hub repo: its snapshot folder when ``config.json`` (or any snapshot) is cached."""
    found = _cached_file(repo, "config.json", revision)
    if found is not None:
        snap = Path(found).parent
        return Location(
            wid, "cached", str(snap), None, _snapshot_size(repo, snap), "huggingface_hub"
        )
    try:
        from huggingface_hub import scan_cache_dir

        from milr.hub import cache_dir

        for r in scan_cache_dir(cache_dir()).repos:
            revs = [
                v for v in r.revisions
                if revision is None or revision in v.refs or v.commit_hash.startswith(revision)
            ]  # fmt: skip
            if r.repo_id == repo and revs:
                rev = max(revs, key=lambda v: v.last_modified)
                return Location(
                    wid, "cached", str(rev.snapshot_path), None, rev.size_on_disk, "huggingface_hub"
                )
    except Exception:  # no cache folder yet (CacheNotFound) or an unreadable one
        pass
    return Location(wid, "download", None, _endpoint_repo(repo), None, "huggingface_hub")


def _snapshot_size(repo: str, snap: Path) -> int | None:
    """Bytes of the blobs a snapshot folder links to (sizes of the link targets)."""
    try:
        return sum(f.stat().st_size for f in snap.rglob("*") if f.is_file())
    except OSError:
        return None


def _ultralytics(wid: str, name: str) -> Location | None:
    """ultralytics' own checkpoint `name` in its weights folder, or the URL it downloads."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # as milr's YOLO loader sets them
    os.environ.setdefault("YOLO_VERBOSE", "false")
    try:
        import inspect

        from ultralytics.utils import SETTINGS
        from ultralytics.utils.downloads import (
            GITHUB_ASSETS_NAMES,
            GITHUB_ASSETS_REPO,
            attempt_download_asset,
        )
    except Exception:  # not installed (or broken): the critic's own check says so
        return None
    if name not in GITHUB_ASSETS_NAMES:
        return None
    target = Path(SETTINGS["weights_dir"]).absolute() / name
    if target.is_file():
        return Location(wid, "cached", str(target), None, target.stat().st_size, "ultralytics")
    release = inspect.signature(attempt_download_asset).parameters["release"].default
    url = f"https://github.com/{GITHUB_ASSETS_REPO}/releases/download/{release}/{name}"
    return Location(wid, "download", str(target), url, None, "ultralytics")


def _open_clip(wid: str, arch: str, tag: str, revision: str | None) -> Location | None:
    """The file open_clip fetches for pretrained `tag` of `arch` (None: not such a pair)."""
    try:
        import open_clip
    except Exception:
        return None
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if not cfg:
        return None
    if cfg.get("file"):
        return locate(str(cfg["file"]))
    if cfg.get("hf_hub"):
        repo, fname = os.path.split(str(cfg["hf_hub"]).strip())
        repo = repo.strip("/") if fname else str(cfg["hf_hub"]).strip("/")
        names = [fname] if fname else list(OPEN_CLIP_FILES)
        found = _hub_files(wid, repo, names, revision)
        return Location(wid, found.status, found.path, found.source, found.size, found.library)
    url = str(cfg.get("url", ""))
    if not url:
        return None
    target = Path("~/.cache/clip").expanduser() / url.rsplit("/", 1)[-1]
    if target.is_file():
        return Location(wid, "cached", str(target), None, target.stat().st_size, "open_clip")
    return Location(wid, "download", str(target), url, None, "open_clip")


def open_clip_id(arch: str, weights: str | None) -> str | None:
    """How an open_clip critic reports its `weights` in ``weights_ids``: a pretrained tag as
    ``ARCH:TAG`` (what `locate` reads), every other spelling as given; None for None."""
    if weights is None or not weights.strip():
        return None
    text = weights.strip()
    if text == "random" or text.startswith(("hf://", "hf-hub:", "local-dir:")):
        return text
    if Path(text).expanduser().exists() or "/" in text or os.sep in text:
        return text
    if text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
        return text
    return f"{arch}:{text}"
