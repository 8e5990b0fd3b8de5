"""The official benchmarks by name: prompt files pinned to a commit of their authors' repositories,
downloaded once (SHA-256 checked, cached), with each benchmark's own protocol.

``milr bench geneval``, ``milr bench t2i-compbench`` (``t2i-compbench:color,shape`` picks
categories), ``milr bench wise`` (the WISE paper's prompts, graded by GPT-4o) and ``milr bench
wise-verified`` (the WISE_Verified prompts, graded by a local judge) name a suite instead of a
path. The files are never shipped with milr; they are fetched on first use from
``https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH`` (or from ``MILR_DATA_MIRROR``,
which holds the same ``OWNER/REPO/COMMIT/PATH`` layout: an http(s) URL or a local directory),
checked against the pinned SHA-256 and kept in the cache (``MILR_CACHE``, else the user cache
directory of platformdirs, ``.../milr``) under ``data/OWNER/REPO/COMMIT/PATH``.

Offline rule: with ``MILR_OFFLINE=1`` (or Hugging Face offline mode, ``HF_HUB_OFFLINE=1``)
milr does not contact GitHub; a mirror named by ``MILR_DATA_MIRROR`` is still used (it was
named on purpose). A file that is neither cached nor reachable is a one-line `MilrUserError`
naming the file and how to pass a local path instead.

Protocols (`Protocol`): GenEval scores 4 images per prompt, T2I-CompBench 10 per prompt on the
validation prompts, WISE 1. A run of a named suite takes its protocol's count unless
``--seeds`` says otherwise; the summary header then says "non-standard protocol".
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from milr.bench import suites as loaders
from milr.errors import MilrUserError

#: Where the files are fetched from when ``MILR_DATA_MIRROR`` is unset.
DEFAULT_BASE = "https://raw.githubusercontent.com"
#: Environment variables this module reads.
MIRROR_ENV, CACHE_ENV, OFFLINE_ENV = "MILR_DATA_MIRROR", "MILR_CACHE", "MILR_OFFLINE"
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


@dataclass(frozen=True)
class PinnedFile:
    """One file of an authors' repository at a commit, with its SHA-256 (hex)."""

    repo: str  # OWNER/REPO
    commit: str  # 40 hex digits
    path: str  # path inside the repository
    sha256: str

    @property
    def key(self) -> str:
        """``OWNER/REPO/COMMIT/PATH``: the layout of raw file hosts, mirrors and the cache."""
        return f"{self.repo}/{self.commit}/{self.path}"

    def as_dict(self, url: str | None = None) -> dict[str, Any]:
        out = {"repo": self.repo, "commit": self.commit, "path": self.path, "sha256": self.sha256}
        if url is not None:
            out["url"] = url
        return out


@dataclass(frozen=True)
class Protocol:
    """How a benchmark's authors score it: images per prompt and which prompts."""

    name: str  # e.g. "GenEval"
    seeds: int  # images per prompt
    prompts: str  # which prompts, in words
    weights: Mapping[str, float] | None = None  # overall = weighted sum of categories
    weights_source: str = ""

    def describe(self) -> str:
        n = self.seeds
        return f"{self.name}: {n} image{'s' if n != 1 else ''} per prompt, {self.prompts}"


@dataclass(frozen=True)
class OfficialSuite:
    """A benchmark by name: its format, pinned prompt files (in suite order) and protocol."""

    name: str
    format: str
    files: tuple[tuple[str, PinnedFile], ...]  # (category or "", file)
    protocol: Protocol
    #: categories graded by default (None: all); the rest must be picked by name
    default_categories: tuple[str, ...] | None = None


GENEVAL_REPO, GENEVAL_COMMIT = "djghosh13/geneval", "af4902f24d3ca90ebbb446dd9891a59e0f82725f"
T2I_REPO, T2I_COMMIT = "Karine-Huang/T2I-CompBench", "1b7094991a57f3c22abdd4f6e8ba6c1a15517073"
WISE_REPO, WISE_COMMIT = "PKU-YuanGroup/WISE", "eb51174483a5de2e34e8614cf9dfb3319ee7fcd0"

#: T2I-CompBench validation files (examples/dataset/CATEGORY_val.txt) and their SHA-256.
_T2I_VAL = {
    "color": "1634259756dbc77d13093d907d414480080ec9790a8c97ad09efaea7b2534f2d",
    "shape": "37e1a276906c7ea9516cbd7ac8501be896006c0c17ca7344f260562834455bae",
    "texture": "fbb5363515b4a28009e360afaaaf389d2dd2289e50dbb0c6ef4ea0c7fe4f3d4f",
    "spatial": "8707a1d7e42ce3002d95363cf55f74bd043c843ae27108f5125aaaa7840ca988",
    "3d_spatial": "c9953597315f36a5fcb41291bb19bdc6ab5f64a0fa760d691b4854a73f5d1fe9",
    "non_spatial": "04c56cc9ac441dc9ea6c5157652058bd1635b5308526dd31bb29a1caab9a758d",
    "numeracy": "dad8df141604b70ba7554bec724e3db0a80023680769b5c514854ea2d2527bbe",
    "complex": "1b808018b8d9916db3d47d5aa2ef18377a3549a56901a474156f799824cdf3b4",
}

#: WISE's overall WiScore weights. Legacy (the paper; WISE_legacy/Calculate.py): 0.4 Cultural
#: + 0.167 Time + 0.133 Space + 0.1 each Biology, Physics, Chemistry. WISE_Verified
#: (calculate_verified.py): 0.40 Cultural + 0.12 each of the other five.
WISE_LEGACY_WEIGHTS: dict[str, float] = loaders.WISE_WEIGHTS  # the suite loader's, one table
WISE_VERIFIED_WEIGHTS: dict[str, float] = {
    "Cultural": 0.40,
    "Time": 0.12,
    "Space": 0.12,
    "Biology": 0.12,
    "Physics": 0.12,
    "Chemistry": 0.12,
}

#: WISE's three prompt files per protocol: the path pattern (``{}``: the file's stem) and the
#: SHA-256 of each stem's file, in suite order. Legacy: the paper's prompts; Verified: the
#: rewritten ones.
_WISE_FILES: dict[str, tuple[str, dict[str, str]]] = {
    "wise": (
        "WISE_legacy/data/{}.json",
        {
            "cultural_common_sense": (
                "7a59216c768698280cea37caa574b52f3faf054d73b398b9bb6b3161baf8e3aa"
            ),
            "spatio-temporal_reasoning": (
                "e27d797885ad86e64d857d0cc93d33e04be572a8dcae95692a2c7e7876233f9a"
            ),
            "natural_science": "b262fae58e413c7a4bd3c3d5a089f8c6529feac227e4b6606be261a949035544",
        },
    ),
    "wise-verified": (
        "data_verified/{}_verified.json",
        {
            "cultural_common_sense": (
                "23482925266e2784b2ba24b75239fdc6691bf85ae253d2c4aa38b71b45fefa89"
            ),
            "spatio-temporal_reasoning": (
                "42c0b9d829365e392c2d4af283850dc76b1f922ab0c79198366de4f306eaf2b6"
            ),
            "natural_science": "6f346c336f16f611e5c73e0fcacdccb336c200d534cf111526b22d50ea912555",
        },
    ),
}


def _wise_files(name: str) -> tuple[tuple[str, PinnedFile], ...]:
    pattern, shas = _WISE_FILES[name]
    return tuple(
        ("", PinnedFile(WISE_REPO, WISE_COMMIT, pattern.format(stem), sha))
        for stem, sha in shas.items()
    )


SUITES: dict[str, OfficialSuite] = {
    "geneval": OfficialSuite(
        "geneval",
        "geneval",
        (
            (
                "",
                PinnedFile(
                    GENEVAL_REPO,
                    GENEVAL_COMMIT,
                    "prompts/evaluation_metadata.jsonl",
                    "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13",
                ),
            ),
        ),
        Protocol("GenEval", 4, "all 553 prompts of evaluation_metadata.jsonl"),
    ),
    "t2i-compbench": OfficialSuite(
        "t2i-compbench",
        "t2i-compbench",
        tuple(
            (cat, PinnedFile(T2I_REPO, T2I_COMMIT, f"examples/dataset/{cat}_val.txt", sha))
            for cat, sha in _T2I_VAL.items()
        ),
        Protocol("T2I-CompBench", 10, "the validation prompts (CATEGORY_val.txt)"),
        default_categories=tuple(c for c in _T2I_VAL if c != "3d_spatial"),
    ),
    "wise": OfficialSuite(
        "wise",
        "wise",
        _wise_files("wise"),
        Protocol(
            "WISE (legacy, the paper's)",
            1,
            "the 1000 original prompts, GPT-4o-2024-05-13 judge",
            WISE_LEGACY_WEIGHTS,
            "0.4 Cultural + 0.167 Time + 0.133 Space + 0.1 Biology + 0.1 Physics + 0.1 Chemistry",
        ),
    ),
    "wise-verified": OfficialSuite(
        "wise-verified",
        "wise",
        _wise_files("wise-verified"),
        Protocol(
            "WISE_Verified",
            1,
            "the 1000 verified prompts, binary 0/1 judge (Qwen3.5-35B-A3B via vLLM)",
            WISE_VERIFIED_WEIGHTS,
            "0.40 Cultural + 0.12 Time + 0.12 Space + 0.12 Biology + 0.12 Physics + 0.12 Chemistry",
        ),
    ),
}

#: Protocol of each suite format, for runs of a suite file given by path.
FORMAT_PROTOCOL = {
    "geneval": SUITES["geneval"].protocol,
    "t2i-compbench": SUITES["t2i-compbench"].protocol,
    "wise": SUITES["wise"].protocol,
}

_NAME = re.compile(r"^([a-z0-9][a-z0-9-]*)(?::(.*))?$")


def parse_name(text: str | os.PathLike[str]) -> tuple[OfficialSuite, tuple[str, ...]] | None:
    """``(suite, categories)`` when `text` names an official suite (``geneval``,
    ``t2i-compbench:color,shape``...), else None (a path). Names win over a file of the same
    name in the working directory; write ``./geneval`` for that file. An unknown category is a
    `MilrUserError` listing the known ones."""
    if not isinstance(text, str):
        return None
    match = _NAME.match(text.strip())
    if match is None or match.group(1) not in SUITES:
        return None
    suite = SUITES[match.group(1)]
    known = [c for c, _ in suite.files if c]
    if match.group(2) is None:
        cats = suite.default_categories or tuple(known)
        return suite, tuple(cats)
    if not known:
        raise MilrUserError(
            f"suite {suite.name!r} has no categories to pick ({text!r}); write {suite.name}"
        )
    cats = tuple(c.strip() for c in match.group(2).split(",") if c.strip())
    bad = [c for c in cats if c not in known]
    if bad or not cats:
        raise MilrUserError(
            f"{text!r}: unknown {suite.name} categor{'y' if len(bad) == 1 else 'ies'} "
            f"{', '.join(map(repr, bad)) or '(none given)'}; pick from {', '.join(known)}"
        )
    return suite, tuple(dict.fromkeys(cats))


# --- download, check, cache ---------------------------------------------------------------


def offline() -> bool:
    """Whether milr may not contact GitHub: ``MILR_OFFLINE`` or Hugging Face offline mode on."""
    from milr.checkpoints import hf_offline

    value = os.environ.get(OFFLINE_ENV)
    if value:
        return value.upper() in _TRUE
    return hf_offline()


def cache_dir() -> Path:
    """``MILR_CACHE``, else platformdirs' user cache directory for milr."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("milr", appauthor=False))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_pass(suite: OfficialSuite | None) -> str:
    fmt = suite.format if suite else "the benchmark's"
    return f"pass the {fmt} file or directory as a path instead of the name"


def fetch(pin: PinnedFile, suite: OfficialSuite | None = None) -> tuple[Path, str]:
    """The local path of `pin` (downloaded and checked if not cached) and where it came from.

    Raises `MilrUserError` (one line, naming the file) when it is not cached and cannot be
    fetched (offline, unreachable, or its SHA-256 differs from the pinned one).
    """
    dest = cache_dir() / "data" / pin.key
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    base = mirror.rstrip("/") or DEFAULT_BASE
    source = f"{base}/{pin.key}"
    if dest.is_file() and _sha256(dest) == pin.sha256:
        return dest, source
    if not mirror and offline():
        raise MilrUserError(
            f"{pin.repo}@{pin.commit[:7]} {pin.path} is not in the cache ({dest.parent}) and "
            f"milr is offline ({OFFLINE_ENV} or HF_HUB_OFFLINE); set {MIRROR_ENV}, go online "
            f"once, or {_how_to_pass(suite)}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if re.match(r"^https?://", base):
        _download(source, pin, dest, suite)
    else:  # a local mirror directory (a shared filesystem of an air-gapped cluster)
        src = Path(base).expanduser() / pin.key
        if not src.is_file():
            raise MilrUserError(
                f"{MIRROR_ENV}={mirror!r} has no {pin.key}; copy the file there or "
                f"{_how_to_pass(suite)}"
            )
        if _sha256(src) != pin.sha256:
            raise MilrUserError(
                f"{src} has SHA-256 {_sha256(src)[:12]}..., not the pinned "
                f"{pin.sha256[:12]}... of {pin.repo}@{pin.commit[:7]} {pin.path}; replace it "
                f"with the file at that commit or {_how_to_pass(suite)}"
            )
        tmp = dest.with_name(dest.name + f".{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        source = str(src)
    return dest, source


def _download(url: str, pin: PinnedFile, dest: Path, suite: OfficialSuite | None) -> None:
    """pooch fetches to a temporary file, checks the hash and moves it into place."""
    import pooch
    import requests

    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{pin.sha256}",
            fname=dest.name,
            path=dest.parent,
            progressbar=False,
        )
    except ValueError as exc:  # pooch: hash mismatch
        if "hash" not in str(exc).lower():
            raise
        raise MilrUserError(
            f"{url} does not hold the pinned {pin.repo}@{pin.commit[:7]} {pin.path} (SHA-256 "
            f"differs from {pin.sha256[:12]}...); fix the mirror or {_how_to_pass(suite)}"
        ) from None
    except requests.RequestException as exc:
        response = getattr(exc, "response", None)
        if response is not None:
            reason = f"HTTP {response.status_code}"
        else:
            reason = " ".join(str(exc).split())[:160]
        raise MilrUserError(
            f"cannot download {pin.repo}@{pin.commit[:7]} {pin.path} from {url} ({reason}); "
            f"set {MIRROR_ENV}, check the connection, or {_how_to_pass(suite)}"
        ) from None


def load(path: str | Path, format: str | None = None) -> loaders.Suite:
    """`milr.bench.suites.load_suite`, and the official suites by name: ``geneval``,
    ``t2i-compbench`` (``t2i-compbench:color,shape``), ``wise``, ``wise-verified`` are
    downloaded at their pinned commits (`fetch`) and loaded with their provenance."""
    named = parse_name(path) if isinstance(path, str) else None
    if named is None:
        return loaders.load_suite(path, format)
    suite, categories = named
    if format is not None and format != suite.format:
        raise MilrUserError(
            f"--format {format} contradicts the suite {path!r} ({suite.format}); drop "
            f"--format, or write ./{path} for a local file of that name"
        )
    return load_official(suite, categories)


def load_official(suite: OfficialSuite, categories: Iterable[str]) -> loaders.Suite:
    """Fetch the pinned files of `suite` (those of `categories` for T2I-CompBench) and load them
    with the suite's loader; the `Suite` carries the provenance in ``suite.official``."""
    cats = list(categories)
    chosen = [(c, p) for c, p in suite.files if not c or c in cats]
    local, files = [], []
    for _, pin in chosen:
        path, url = fetch(pin, suite)
        local.append(path)
        files.append(pin.as_dict(url))
    label = (
        f"{suite.name} ({', '.join(sorted({f['repo'] + '@' + f['commit'][:7] for f in files}))})"
    )
    if suite.format == "geneval":
        loaded = loaders.load_suite(local[0], "geneval")
        loaded.source = label
    elif suite.format == "t2i-compbench":
        loaded = loaders._load_t2i_files(local, label)
    else:
        loaded = loaders._load_wise_files(local, label)
    loaded.official = {
        "name": suite.name,
        "categories": [c for c, _ in chosen if c],
        "protocol": protocol_dict(suite.protocol),
        "files": files,
        "prompts_total": len(loaded),
    }
    return loaded


def protocol_dict(protocol: Protocol) -> dict[str, Any]:
    return {
        "name": protocol.name,
        "seeds": protocol.seeds,
        "prompts": protocol.prompts,
        "weights": dict(protocol.weights) if protocol.weights else None,
        "weights_source": protocol.weights_source or None,
    }
