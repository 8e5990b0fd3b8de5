"""Where a model's weights come from: a Hub id, a local directory or a local file.

`resolve` turns what the user typed (``--model``, a critic's ``weights=``) into a local path,
downloading a Hub repo (or one file of it) into the standard Hugging Face cache on first use
with ``huggingface_hub`` -- with its progress bars, its resumable ``.incomplete`` files (a
half-written file is never handed to a loader) and its retries. The same rules as transformers
apply:

- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` make it cache-only (`milr.checkpoints.hf_offline`);
- ``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_TOKEN`` (or ``hf auth login``) are
  read when `resolve` is called;
- ``revision`` pins a branch, tag or commit; the commit actually used is returned;
- a Hub id is resolved once per process (critics reload their models by key, not the Hub).

Every failure is one `MilrUserError` line naming the repo id and the fix: a gated or private
repo (how to authenticate), an unknown id (with the transformers-format spelling for the
original ``deepseek-ai/Janus-Pro-*`` releases), an unknown revision or file, offline and not
cached (how to prefetch), the network unreachable, a server error after the client's own
retries, an interrupted download (the client resumes a dropped connection itself; when it
gives up, the partial file is discarded, never loaded: run again).

Nothing here downloads at import time.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milr.checkpoints import first_line, hf_offline
from milr.errors import MilrUserError

#: Hub ids of releases that transformers cannot load, and the transformers-format repo to use.
RENAMED = {
    "deepseek-ai/Janus-Pro-1B": "deepseek-community/Janus-Pro-1B",
    "deepseek-ai/Janus-Pro-7B": "deepseek-community/Janus-Pro-7B",
    "deepseek-ai/Janus-1.3B": "deepseek-community/Janus-1.3B",
}

#: Files a transformers checkpoint directory never needs (other frameworks' weights, exports).
IGNORE_FOR_TRANSFORMERS = (
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "*.mlmodel",
    "flax_model*",
    "tf_model*",
    "rust_model*",
    "onnx/*",
    "coreml/*",
    "openvino/*",
    "*.md",
    "*.png",
    "*.jpg",
    "*.gif",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class Resolved:
    """A resolved weights location.

    ``path``: the local directory or file to load. ``repo_id``: the Hub repo it came from (None
    for a path the user gave). ``revision``: the revision asked for (None: the default branch).
    ``commit``: the 40-hex commit of the cached snapshot (None for local paths).
    """

    path: Path
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    def identity(self) -> dict[str, str | None]:
        """``{"source", "revision", "commit"}`` for trajectories and run identities."""
        return {
            "source": self.repo_id or str(self.path),
            "revision": self.revision,
            "commit": self.commit,
        }


def is_hub_id(name: str) -> bool:
    """Whether `name` is spelled like a Hub repo id (``owner/name``) rather than a path.

    A path that exists locally is never a Hub id (checked by `resolve` first).
    """
    if name.startswith(("/", "./", "../", "~", ".")) or "\\" in name:
        return False
    return bool(_HUB_ID.match(name))


def parse_hf_uri(text: str) -> tuple[str, str, str | None] | None:
    """``hf://OWNER/NAME[@REVISION]/PATH`` -> ``(repo_id, path, revision)``; None for other text.

    The spelling of ``huggingface_hub``'s ``HfFileSystem`` for one file of a Hub repo (e.g.
    ``hf://xswu/HPSv2/HPS_v2.1_compressed.pt``). Raises `MilrUserError` for an ``hf://`` text
    without a file path.
    """
    if not text.startswith("hf://"):
        return None
    parts = text[len("hf://") :].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise MilrUserError(
            f"{text!r} names no file: write hf://OWNER/NAME/FILE (e.g. "
            "hf://xswu/HPSv2/HPS_v2.1_compressed.pt), or hf://OWNER/NAME@REVISION/FILE"
        )
    owner, name, path = parts
    name, _, revision = name.partition("@")
    return f"{owner}/{name}", path, revision or None


def resolve_file(spec: str, *, who: str, revision: str | None = None, hint: str = "") -> Resolved:
    """One weight file: a local file, or ``hf://OWNER/NAME[@REV]/PATH`` downloaded on first use.

    A revision in the URI wins over `revision`. Raises `MilrUserError` (one line) as `resolve`.
    """
    uri = parse_hf_uri(spec)
    if uri is None:
        path = Path(spec).expanduser()
        if path.is_file():
            return Resolved(path.absolute(), None, None, None)
        tail = f"; {hint}" if hint else ""
        raise MilrUserError(f"{who}: weights file {spec!r} does not exist{tail}")
    repo_id, filename, rev = uri
    return resolve(repo_id, who=who, filename=filename, revision=rev or revision)


def endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT``, else https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def download_command(repo_id: str, filename: str | None = None, revision: str | None = None) -> str:
    """The ``hf download`` command that fetches `repo_id` (or one file of it) into the cache."""
    parts = ["hf", "download", repo_id]
    if filename:
        parts.append(filename)
    if revision:
        parts += ["--revision", revision]
    return " ".join(parts)


def resolve(
    name: str | Path,
    *,
    who: str,
    filename: str | None = None,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | tuple[str, ...] | None = IGNORE_FOR_TRANSFORMERS,
    hint: str = "",
) -> Resolved:
    """Resolve `name` (a local directory or file, or a Hub id) to a local path.

    `who` names the caller in messages (``"critic 'vqa'"``, ``"model"``). For a Hub id,
    `filename` downloads that one file (``hf_hub_download``) and returns its path; without it
    the repo snapshot (``snapshot_download``, minus `ignore_patterns`, only `allow_patterns`
    when given) and returns its directory. `revision` is a branch, tag or commit (default: the
    repo's default branch). `hint` is appended to the "does not exist" message of a local path.

    Raises `MilrUserError` (one line, see the module docstring); a local path that does not
    exist is one line too. Returns a `Resolved`.
    """
    text = str(name).strip()
    if not text:
        raise MilrUserError(f"{who}: empty weights name; pass a Hub id, a directory or a file")
    path = Path(text).expanduser()
    if path.exists():
        return Resolved(path.absolute(), None, revision, None)
    if not is_hub_id(text):
        tail = f"; {hint}" if hint else ""
        raise MilrUserError(
            f"{who}: {text!r} does not exist and is not a Hub id (owner/name){tail}"
        )
    if text in RENAMED:
        raise MilrUserError(
            f"{who}: {text!r} is the original release, which transformers cannot load; "
            f"use the transformers-format repo {RENAMED[text]!r}"
        )
    key = (
        text,
        filename,
        revision,
        tuple(allow_patterns or ()),
        tuple(ignore_patterns or ()),
        hf_offline(),
        endpoint(),
        str(cache_dir()),
    )
    with _RESOLVED_LOCK:  # once per process: later loads ask the Hub nothing
        done = _RESOLVED.get(key)
        if done is not None and done.path.exists():
            return done
    got = _download(text, who, filename, revision, allow_patterns, ignore_patterns)
    with _RESOLVED_LOCK:
        _RESOLVED[key] = got
    return got


#: Hub resolutions already done in this process (see `resolve`); `forget` clears it.
_RESOLVED: dict[tuple[Any, ...], Resolved] = {}
_RESOLVED_LOCK = threading.Lock()


def forget() -> None:
    """Forget this process's Hub resolutions (the next `resolve` asks the Hub again)."""
    with _RESOLVED_LOCK:
        _RESOLVED.clear()


def _download(
    repo_id: str,
    who: str,
    filename: str | None,
    revision: str | None,
    allow_patterns: list[str] | None,
    ignore_patterns: list[str] | tuple[str, ...] | None,
) -> Resolved:
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise MilrUserError(
            f"{who}: loading {repo_id!r} needs huggingface_hub (pip install huggingface_hub)"
        ) from exc
    kwargs: dict[str, Any] = {
        "revision": revision,
        "cache_dir": str(cache_dir()),
        "endpoint": endpoint(),
        "local_files_only": hf_offline(),
    }
    try:
        if filename is not None:
            local = Path(huggingface_hub.hf_hub_download(repo_id, filename, **kwargs))
            commit = local.parent.name if _is_commit(local.parent.name) else None
            # a file in a sub-folder: the snapshot dir is further up
            for parent in local.parents:
                if _is_commit(parent.name) and parent.parent.name == "snapshots":
                    commit = parent.name
                    break
        else:
            ignore = list(ignore_patterns) if ignore_patterns else None
            if ignore is not None and not kwargs["local_files_only"]:
                ignore += _duplicate_weights(huggingface_hub, repo_id, revision)
            local = Path(
                huggingface_hub.snapshot_download(
                    repo_id, allow_patterns=allow_patterns, ignore_patterns=ignore, **kwargs
                )
            )
            commit = local.name if _is_commit(local.name) else None
    except Exception as exc:  # every client failure becomes one line
        raise MilrUserError(describe_failure(exc, repo_id, who, filename, revision)) from None
    if filename is None and allow_patterns is None:
        _check_complete(local, repo_id, who, revision, commit)
    return Resolved(local, repo_id, revision, commit)


def _check_complete(
    folder: Path, repo_id: str, who: str, revision: str | None, commit: str | None
) -> None:
    """Refuse a cached snapshot that an earlier, interrupted run left without weights.

    Offline (or with the Hub unreachable) huggingface_hub returns the cached snapshot folder as
    it is; it checks the folder against the file listing it cached on the last complete online
    download when there is one. A folder without that listing and without any weight file is
    what an interrupted first download leaves (e.g. only ``config.json``): one line, not a
    loader's error about a missing file.
    """
    from milr.weight_files import WEIGHT_SUFFIXES

    try:
        from huggingface_hub import get_cached_repo_tree

        get_cached_repo_tree(repo_id, revision=commit or revision or "main", cache_dir=cache_dir())
        return  # huggingface_hub checked the folder against it
    except Exception:  # no cached listing (older client, or never downloaded whole)
        pass
    if any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.rglob("*")):
        return
    target = repo_id + (f"@{revision}" if revision else "")
    raise MilrUserError(
        f"{who}: the cached copy of {target!r} ({folder}) has no weight files: an earlier "
        f"download did not finish; complete it online (`{download_command(repo_id, None, revision)}`)"
    )


def _duplicate_weights(huggingface_hub: Any, repo_id: str, revision: str | None) -> list[str]:
    """``["pytorch_model*.bin"]`` when the repo also has ``model*.safetensors`` (transformers
    loads those; many repos carry both, doubling the download), else nothing. Errors here are
    left to the download that follows, which reports them."""
    try:
        info = huggingface_hub.HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision)
        names = [s.rfilename for s in info.siblings or ()]
    except Exception:
        return []
    if any(
        n.startswith("model") and n.endswith((".safetensors", ".safetensors.index.json"))
        for n in names
    ):
        return ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
    return []


def _is_commit(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", text))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return int(code) if isinstance(code, int) else None


def describe_failure(
    exc: BaseException,
    repo_id: str,
    who: str,
    filename: str | None = None,
    revision: str | None = None,
) -> str:
    """One line for a failed Hub download of `repo_id`: what went wrong and the fix."""
    from huggingface_hub import errors as hub_errors

    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    target = repo_id + (f"@{revision}" if revision else "")
    what = f"{who}: {target!r}"
    file_part = f" file {filename!r}" if filename else ""
    fetch = download_command(repo_id, filename, revision)
    login = "authenticate with `hf auth login` or the HF_TOKEN environment variable"

    def find(cls: type) -> BaseException | None:
        return next((e for e in chain if isinstance(e, cls)), None)

    if find(hub_errors.GatedRepoError):
        return (
            f"{what} is a gated repo: accept its conditions on {endpoint()}/{repo_id} "
            f"with your account, then {login}"
        )
    if find(hub_errors.RepositoryNotFoundError):
        hint = f"; did you mean {RENAMED[repo_id]!r}?" if repo_id in RENAMED else ""
        return (
            f"{what}: no such repo on {endpoint()} (check the id; if it is private, {login})" + hint
        )
    if find(hub_errors.RevisionNotFoundError):
        return f"{what}: revision {revision!r} does not exist in this repo; pass a branch, tag or commit it has"
    entry = find(hub_errors.EntryNotFoundError)
    if entry is not None and not isinstance(entry, hub_errors.LocalEntryNotFoundError):
        return f"{what}: the repo has no{file_part or ' such file'}; check the file name"
    offline = hf_offline() or "OfflineModeIsEnabled" in names
    if offline:
        return (
            f"{what}{file_part} is not in the Hugging Face cache ({cache_dir()}) and offline "
            "mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE); prefetch it on a machine with "
            f"internet (`milr download` with the same options, or `{fetch}`), or unset "
            "HF_HUB_OFFLINE"
        )
    incomplete = getattr(hub_errors, "IncompleteSnapshotError", None)
    if incomplete is not None and find(incomplete):
        return f"{what}: the cached copy is incomplete and the Hub cannot be reached; run `{fetch}`"
    for e in chain:
        status = _status(e)
        if status is not None and status >= 500:
            return (
                f"{what}{file_part}: the Hub at {endpoint()} answered HTTP {status} (after the "
                "client's retries); try again later"
            )
        if status in (401, 403):
            return f"{what}{file_part}: access refused (HTTP {status}); {login}"
    for e in chain:
        kind = type(e).__name__
        if kind in ("RemoteProtocolError", "ReadError", "ReadTimeout", "WriteError") or (
            isinstance(e, OSError) and "Consistency check failed" in str(e)
        ):
            return (
                f"{what}{file_part}: the download was interrupted ({first_line(e)[:160]}); nothing "
                "half-written was kept; run the command again"
            )
        if kind in ("ConnectError", "ConnectTimeout", "TimeoutException", "ProxyError"):
            return (
                f"{what}{file_part}: cannot reach {endpoint()} ({first_line(e)[:120]}) and it is "
                "not in the cache; check your network or proxy, or prefetch it elsewhere "
                f"(`{fetch}`) and set HF_HUB_OFFLINE=1"
            )
    if find(hub_errors.LocalEntryNotFoundError):
        return (
            f"{what}{file_part}: the Hub at {endpoint()} could not be reached and it is not in "
            f"the cache ({first_line(exc)[:160]}); check your network, or prefetch it with `{fetch}`"
        )
    return f"{what}{file_part}: download failed ({type(exc).__name__}: {first_line(exc)[:200]})"
