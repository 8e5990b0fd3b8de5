"""A loopback Hugging Face Hub for tests: the real ``huggingface_hub`` client downloads from it.

`LoopbackHub` is a threaded ``http.server`` on ``127.0.0.1`` that speaks the parts of the Hub
protocol that ``hf_hub_download``, ``snapshot_download``, ``HfApi.model_info`` and
``transformers``' ``from_pretrained`` use:

- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the git blob
  sha1 for small files), and for weight files the LFS style: ``X-Linked-Etag`` (sha256),
  ``X-Linked-Size`` and a 302 to ``http://localhost:PORT/lfs/...`` -- another origin, as the
  Hub's CDN is, so the client does not follow it on ``HEAD``; ``Range: bytes=N-`` answers 206.
- ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}``: model info with
  ``sha`` and ``siblings``.
- ``GET /api/models/{repo_id}/tree/{revision}``: the file listing (``oid``, ``size``, ``lfs``).
- The Hub's error headers (``X-Error-Code``: ``RepoNotFound``, ``GatedRepo``, ``EntryNotFound``,
  ``RevisionNotFound``; ``X-Error-Message``).

Faults are switched by attributes: ``gated`` (repo ids answered 401 ``GatedRepo``), an unknown
repo (any id not added), ``status`` (answer every request with that 5xx code, with
``Retry-After: 0`` so the client's retries are quick), ``drop_after`` / ``drops`` (close the
connection after that many bytes of a file body, ``drops`` times: 1 lets the client resume
with ``Range``; a large number makes it give up). ``requests`` logs ``(method, path)``.

Use it as a context manager or through the ``milr_hub`` pytest fixture (milr's pytest plugin),
which also points ``HF_ENDPOINT`` at it, sets a fresh ``HF_HOME`` and turns offline mode off for
the test. Example::

    with LoopbackHub() as hub:
        hub.add_folder("deepseek-community/Janus-Pro-1B", checkpoint_dir)
        env = {**os.environ, **hub.env(tmp_path / "hf-home")}
        subprocess.run(["milr", "generate", ...], env=env)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: File suffixes served the LFS way (redirect, sha256 ETag), as the Hub serves weights.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit sha
    commits: dict[str, _Commit] = field(default_factory=dict)

    def commit(self, revision: str) -> _Commit | None:
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)


class LoopbackHub:
    """A Hub on ``http://127.0.0.1:PORT`` serving repos added with `add_files`/`add_folder`."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        #: Repo ids answered ``401 GatedRepo`` (as the Hub does without an accepted licence).
        self.gated: set[str] = set()
        #: Token accepted for gated repos (``Authorization: Bearer TOKEN``); None: none is.
        self.token: str | None = None
        #: When set (e.g. 503), every request is answered with this status.
        self.status: int | None = None
        #: Close the connection after this many body bytes of an LFS file, `drops` times.
        self.drop_after: int | None = None
        self.drops = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -----------------------------------------------------------------------------
    def add_files(self, repo_id: str, files: Mapping[str, bytes], revision: str = "main") -> str:
        """Add (or replace) `revision` of `repo_id` with `files`; returns the commit sha."""
        digest = hashlib.sha1(repo_id.encode() + revision.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        sha = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, _Repo())
        repo.commits[sha] = _Commit(sha, dict(files))
        repo.refs[revision] = sha
        return sha

    def add_folder(self, repo_id: str, folder: str | Path, revision: str = "main") -> str:
        """Add every file under `folder` (recursively) as `revision` of `repo_id`."""
        root = Path(folder)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.relative_to(root).parts
        }
        return self.add_files(repo_id, files, revision)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The endpoint (``HF_ENDPOINT``)."""
        assert self._server is not None, "start() the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, hf_home: str | Path) -> dict[str, str]:
        """Environment for a child process: this endpoint, `hf_home`, offline mode off."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    def start(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- protocol helpers (called by the handler) --------------------------------------------
    def _take_drop(self) -> int | None:
        with self._lock:
            if self.drop_after is None or self.drops <= 0:
                return None
            self.drops -= 1
            return self.drop_after


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- responses ---------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, head: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if status >= 500:
            headers["Retry-After"] = "0"
        self._send(status, json.dumps({"error": message}).encode(), headers, head)

    def _json(self, data: Any, head: bool) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, head)

    # -- routing -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        hub = self.owner
        path = urlsplit(self.path).path
        hub.requests.append((self.command, path))
        if hub.status is not None:
            return self._error(
                hub.status,
                None,
                "Internal Error - We're working hard to fix this as soon as possible!",
                head,
            )
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["lfs"] and len(parts) >= 4:
            return self._lfs(parts[1] + "/" + parts[2], parts[3], "/".join(parts[4:]), head)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(parts[2] + "/" + parts[3], parts[4:], head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
        return self._error(404, None, "Not Found", head)

    def _repo(self, repo_id: str, head: bool) -> _Repo | None:
        hub = self.owner
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(
                401, "RepoNotFound", "Repository not found", head
            )  # the Hub answers 401 for unknown and private repos alike
            return None
        auth = self.headers.get("Authorization", "")
        if repo_id in hub.gated and not (hub.token and auth == f"Bearer {hub.token}"):
            self._error(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
                head,
            )
            return None
        return repo

    def _api(self, repo_id: str, rest: list[str], head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        revision = "main"
        if rest[:1] == ["revision"] and len(rest) >= 2 or rest[:1] == ["tree"] and len(rest) >= 2:
            revision = rest[1]
        elif rest:
            return self._error(404, None, "Not Found", head)
        commit = repo.commit(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        if rest[:1] == ["tree"]:
            entries = []
            for name, data in sorted(commit.files.items()):
                entry: dict[str, Any] = {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": _git_blob_sha1(data),
                }
                if name.endswith(LFS_SUFFIXES):
                    sha256 = hashlib.sha256(data).hexdigest()
                    entry["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return self._json(entries, head)
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit.sha,
            "private": False,
            "gated": "auto" if repo_id in self.owner.gated else False,
            "siblings": [{"rfilename": name} for name in sorted(commit.files)],
        }
        return self._json(info, head)

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        commit = repo.commit(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        data = commit.files.get(name)
        base = {"X-Repo-Commit": commit.sha}
        if data is None:
            self.send_response(404)
            for k, v in {
                **base,
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
            }.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if name.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            port = int(self.server.server_address[1])  # type: ignore[index]
            location = f"http://localhost:{port}/lfs/{repo_id}/{commit.sha}/{name}"
            headers = {
                **base,
                "ETag": f'"{_git_blob_sha1(data)}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "Location": location,
            }
            return self._send(302, b"", headers, head)
        headers = {**base, "ETag": f'"{_git_blob_sha1(data)}"', "Accept-Ranges": "bytes"}
        return self._body(data, headers, head)

    def _lfs(self, repo_id: str, sha: str, name: str, head: bool) -> None:
        repo = self.owner.repos.get(repo_id)
        commit = repo.commits.get(sha) if repo else None
        data = commit.files.get(name) if commit else None
        if data is None:
            return self._error(404, None, "Not Found", head)
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        return self._body(data, {"ETag": etag, "Accept-Ranges": "bytes"}, head, lfs=True)

    def _body(self, data: bytes, headers: dict[str, str], head: bool, lfs: bool = False) -> None:
        start = 0
        status = 200
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
            data = data[start : end + 1]
            status = 206
        drop = None if head or not lfs else self.owner._take_drop()
        if drop is None:
            return self._send(status, data, headers, head)
        # Announce the whole body, send part of it, then drop the connection.
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:drop])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)
