"""Benchmark suites: GenEval metadata, T2I-CompBench prompt files, WISE JSON, ShapesEval.

milr does not vendor benchmark data; every loader takes a path. A suite is a list of
`BenchPrompt` with a stable id (used for seeds and resume), the prompt text, the metadata the
critics read, and the group the benchmark aggregates over (GenEval tag, T2I-CompBench category,
WISE category; a GenEval-format line with a ``category`` field, as in the shapes knowledge
suite, is grouped by that field).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milr.errors import MilrUserError
from milr.geneval_rules import validate_metadata

#: Suite formats understood by `load_suite`.
FORMATS = ("geneval", "shapes", "t2i-compbench", "wise")

#: GenEval's six tags, in the order of its paper's tables.
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

#: T2I-CompBench categories (file stems without the ``_val``/``_train``/``_test`` suffix).
T2I_CATEGORIES = (
    "color",
    "shape",
    "texture",
    "spatial",
    "3d_spatial",
    "non_spatial",
    "numeracy",
    "complex",
)

#: WISE categories and the official weights of the overall WiScore (PKU-YuanGroup/WISE README:
#: Overall = 0.4 Cultural + 0.167 Time + 0.133 Space + 0.1 Biology + 0.1 Physics + 0.1 Chemistry,
#: i.e. each category's share of the 1000 prompts).
WISE_WEIGHTS: dict[str, float] = {
    "Cultural": 0.4,
    "Time": 0.167,
    "Space": 0.133,
    "Biology": 0.1,
    "Physics": 0.1,
    "Chemistry": 0.1,
}
#: Official prompt_id ranges of the WISE categories (1-based, inclusive); used when the
#: ``Category``/``Subcategory`` fields do not name one of the six categories.
WISE_ID_RANGES: tuple[tuple[int, int, str], ...] = (
    (1, 400, "Cultural"),
    (401, 567, "Time"),
    (568, 700, "Space"),
    (701, 800, "Biology"),
    (801, 900, "Physics"),
    (901, 1000, "Chemistry"),
)
WISE_FIELDS = ("Prompt", "Explanation", "Category", "Subcategory", "prompt_id")


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark prompt: stable `id`, text, critic metadata and aggregation `group`."""

    id: str
    prompt: str
    group: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "group": self.group,
            "metadata": self.metadata,
        }


@dataclass
class Suite:
    """A loaded benchmark: its format, where it came from, a content hash and its prompts."""

    format: str
    source: str
    prompts: list[BenchPrompt]
    content_sha256: str
    #: For a suite given by name (`milr.bench.official`): its name, categories, protocol and
    #: pinned files (repository, commit, path, SHA-256, URL); None for a path.
    official: dict[str, Any] | None = None

    @property
    def groups(self) -> list[str]:
        """Groups in first-seen order."""
        return list(dict.fromkeys(p.group for p in self.prompts))

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {p.id: i for i, p in enumerate(self.prompts)}

    def index_of(self, prompt_id: str) -> int:
        """0-based position of the prompt `prompt_id` in the suite (`KeyError` if absent)."""
        return self._positions[prompt_id]

    def __len__(self) -> int:
        return len(self.prompts)


def _err(where: str, what: str) -> MilrUserError:
    return MilrUserError(f"{where}: {what}")


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MilrUserError(f"suite file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise MilrUserError(f"{str(path)!r} is a directory") from None
    except OSError as exc:
        raise MilrUserError(f"cannot read suite file {str(path)!r}: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MilrUserError(
            f"suite file {str(path)!r} is not UTF-8 text (byte {exc.start}); "
            "expected GenEval/ShapesEval JSONL, WISE JSON or T2I-CompBench .txt"
        ) from None
    if not text.strip():
        raise MilrUserError(
            f"suite file {str(path)!r} is empty; expected prompts "
            "(GenEval/ShapesEval JSONL, WISE JSON or a T2I-CompBench .txt file)"
        )
    return text


# --- GenEval / ShapesEval -----------------------------------------------------------------


def _geneval_entry(obj: Any, where: str) -> tuple[str, str, dict[str, Any]]:
    """Check one GenEval/ShapesEval line with `milr.geneval_rules.validate_metadata`.

    Any class name is accepted here (the evaluation critic checks its own vocabulary); counts,
    colours, relations and clause keys follow the rules engine, so a line without ``count`` or
    with a misspelled key (``colour``) is refused before any image is generated.
    """
    if not isinstance(obj, dict):
        raise _err(
            where,
            f'expected a JSON object with "tag", "include", "prompt"; got {type(obj).__name__}',
        )
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _err(where, f"field 'prompt' must be a non-empty string, got {prompt!r}")
    tag = obj.get("tag")
    if not isinstance(tag, str) or not tag.strip():
        raise _err(
            where, f"field 'tag' must be a non-empty string (e.g. {GENEVAL_TAGS[0]!r}), got {tag!r}"
        )
    include = obj.get("include")
    if not isinstance(include, list) or not include:
        raise _err(where, f"field 'include' must be a non-empty list of clauses, got {include!r}")
    try:  # the rules engine's own schema: what loads here is what the critics can evaluate
        validate_metadata(obj, classes=None)
    except MilrUserError as exc:
        raise _err(where, str(exc)) from None
    return prompt, tag, obj


def _load_jsonl(path: Path, text: str, fmt: str | None) -> Suite:
    prompts: list[BenchPrompt] = []
    records: list[tuple[int, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise _err(
                f"{path}:{lineno}",
                f"line is not JSON ({exc.msg} at column {exc.colno}); "
                "GenEval/ShapesEval files have one JSON object per line",
            ) from None
    first = records[0][1]
    if isinstance(first, dict) and {"Prompt", "prompt_id"} <= set(first):
        raise _err(
            f"{path}:{records[0][0]}",
            "this looks like a WISE record; WISE files are one JSON list (.json)",
        )
    if fmt is None:
        fmt = _detect_geneval_flavour(path, [r for _, r in records])
    seen: dict[str, int] = {}
    for index, (lineno, obj) in enumerate(records):
        where = f"{path}:{lineno}"
        prompt, tag, meta = _geneval_entry(obj, where)
        pid = obj.get("id", f"{index:05d}")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise _err(where, f"field 'id' must be a string or integer, got {pid!r}")
        pid = str(pid)
        if pid in seen:
            raise _err(where, f"prompt id {pid!r} repeats line {seen[pid]}; ids must be unique")
        seen[pid] = lineno
        # a WISE-style ``category`` (the shapes knowledge suite's) groups the line; else its tag
        category = obj.get("category")
        group = category.strip() if isinstance(category, str) and category.strip() else tag
        prompts.append(BenchPrompt(pid, prompt, group, dict(meta)))
    return Suite(fmt, str(path), prompts, _sha(text))


def _detect_geneval_flavour(path: Path, records: list[Any]) -> str:
    """ShapesEval files are GenEval-format; they say so by a field or by their name."""
    for obj in records[:1]:
        if isinstance(obj, dict):
            for key in ("suite", "benchmark", "world"):
                if str(obj.get(key, "")).lower() in {"shapes", "shapeseval"}:
                    return "shapes"
    if path.name.lower().startswith("shapes"):
        return "shapes"
    try:
        from milr.shapes.world import SHAPES
    except ImportError:  # pragma: no cover - shapes world not installed
        return "geneval"
    classes = {
        c.get("class")
        for obj in records
        if isinstance(obj, dict)
        for key in ("include", "exclude")
        for c in (obj.get(key) or [])
        if isinstance(c, dict)
    }
    return "shapes" if classes and classes <= set(SHAPES) else "geneval"


# --- T2I-CompBench ------------------------------------------------------------------------


def t2i_category(path: Path) -> str | None:
    """The T2I-CompBench category a prompt file holds, from its name (``color_val.txt``)."""
    stem = path.stem.lower()
    for suffix in ("_val", "_train", "_test"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem if stem in T2I_CATEGORIES else None


def _load_t2i_files(files: list[Path], source: str) -> Suite:
    prompts: list[BenchPrompt] = []
    digest = hashlib.sha256()
    for path in files:
        category = t2i_category(path)
        if category is None:
            raise MilrUserError(
                f"{path}: cannot tell the T2I-CompBench category from the file name; "
                f"name it CATEGORY_val.txt with CATEGORY one of {', '.join(T2I_CATEGORIES)}"
            )
        text = _read_text(path)
        digest.update(path.name.encode() + b"\0" + text.encode())
        for index, line in enumerate(text.splitlines()):
            prompt = line.strip()
            if not prompt:
                continue
            if prompt[0] in "{[":
                raise _err(
                    f"{path}:{index + 1}",
                    "looks like JSON; T2I-CompBench files hold one plain prompt per line",
                )
            prompts.append(
                BenchPrompt(f"{category}_{index:05d}", prompt, category, {"category": category})
            )
    return Suite("t2i-compbench", source, prompts, digest.hexdigest())


# --- WISE ---------------------------------------------------------------------------------


#: The stem of each WISE category's name as its files spell it ("Cultural knowledge", "time",
#: "Physical Knowledge", ...).
_WISE_STEMS = {
    "Cultural": "cultur",
    "Time": "time",
    "Space": "space",
    "Biology": "biolog",
    "Physics": "physic",
    "Chemistry": "chemi",
}


def wise_category(category: str, subcategory: str, prompt_id: int) -> str:
    """Map a WISE record to one of the six weighted categories (by name, else by id range).

    The id ranges are the original release's; WISE_Verified moved them (Time 401-520, ...), and
    its records are matched by their ``Category`` names ("Physical Knowledge" is Physics)."""
    for text in (category, subcategory):
        low = text.lower()
        for name, stem in _WISE_STEMS.items():
            if stem in low:
                return name
    for lo, hi, name in WISE_ID_RANGES:
        if lo <= prompt_id <= hi:
            return name
    raise ValueError(
        f"Category {category!r} / Subcategory {subcategory!r} names none of "
        f"{', '.join(WISE_WEIGHTS)} and prompt_id {prompt_id} is outside 1-1000"
    )


def _load_wise_items(path: Path, text: str) -> tuple[list[BenchPrompt], str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _err(
            f"{path}:{exc.lineno}",
            f"file is not JSON ({exc.msg} at column {exc.colno}); "
            "WISE files are a JSON list of objects",
        ) from None
    if not isinstance(data, list):
        raise _err(
            str(path),
            f"expected a JSON list of WISE objects with fields {', '.join(WISE_FIELDS)}; got a {type(data).__name__}",
        )
    if not data:
        raise _err(str(path), "the JSON list is empty; no prompts to run")
    prompts = []
    for i, obj in enumerate(data):
        where = f"{path}: item {i}"
        if not isinstance(obj, dict):
            raise _err(
                where, f"expected an object with fields {', '.join(WISE_FIELDS)}, got {obj!r}"
            )
        missing = [f for f in WISE_FIELDS if f not in obj]
        if missing:
            pid = obj.get("prompt_id", "?")
            raise _err(
                f"{where} (prompt_id {pid})",
                f"missing field(s) {', '.join(repr(m) for m in missing)}",
            )
        pid = obj["prompt_id"]
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise _err(where, f"field 'prompt_id' must be an integer, got {pid!r}")
        for key in ("Prompt", "Category", "Subcategory"):
            if not isinstance(obj[key], str) or not obj[key].strip():
                raise _err(
                    f"{where} (prompt_id {pid})",
                    f"field {key!r} must be a non-empty string, got {obj[key]!r}",
                )
        if not isinstance(obj["Explanation"], str):
            raise _err(
                f"{where} (prompt_id {pid})",
                f"field 'Explanation' must be a string, got {obj['Explanation']!r}",
            )
        try:
            group = wise_category(obj["Category"], obj["Subcategory"], pid)
        except ValueError as exc:
            raise _err(f"{where} (prompt_id {pid})", str(exc)) from None
        meta = dict(obj)
        meta["wise_category"] = group
        prompts.append(BenchPrompt(str(pid), obj["Prompt"], group, meta))
    return prompts, text


def _load_wise_files(files: list[Path], source: str) -> Suite:
    prompts: list[BenchPrompt] = []
    digest = hashlib.sha256()
    seen: dict[str, Path] = {}
    for path in files:
        text = _read_text(path)
        digest.update(path.name.encode() + b"\0" + text.encode())
        items, _ = _load_wise_items(path, text)
        for item in items:
            if item.id in seen:
                raise MilrUserError(
                    f"{path}: prompt_id {item.id} also appears in {seen[item.id]}; ids must be unique"
                )
            seen[item.id] = path
        prompts.extend(items)
    return Suite("wise", source, prompts, digest.hexdigest())


# --- entry point --------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_suite(path: str | Path, format: str | None = None) -> Suite:
    """Load a benchmark suite from a file (or a directory of T2I-CompBench / WISE files).
    (`milr.bench.official.load` also takes the official suites by name.)

    The format is detected from the file (``.jsonl`` GenEval/ShapesEval, ``.json`` WISE,
    ``.txt`` T2I-CompBench) unless `format` names one of `FORMATS`. Malformed entries raise
    `MilrUserError` naming the file, line (or item) and field.
    """
    if format is not None and format not in FORMATS:
        raise MilrUserError(f"unknown suite format {format!r}; use one of {', '.join(FORMATS)}")
    p = Path(path)
    if p.is_dir():
        return _load_dir(p, format)
    if not p.exists():
        raise MilrUserError(f"suite file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if format in ("geneval", "shapes") or (format is None and suffix == ".jsonl"):
        return _load_jsonl(p, _read_text(p), format)
    if format == "wise" or (format is None and suffix == ".json"):
        return _load_wise_files([p], str(p))
    if format == "t2i-compbench" or (format is None and suffix == ".txt"):
        return _load_t2i_files([p], str(p))
    # Unknown extension: sniff the content.
    text = _read_text(p)
    head = text.lstrip()[:1]
    if head == "[":
        return _load_wise_files([p], str(p))
    if head == "{":
        return _load_jsonl(p, text, None)
    raise MilrUserError(
        f"unknown suite format for {str(p)!r}: expected GenEval/ShapesEval metadata (.jsonl), "
        f"WISE prompts (.json) or a T2I-CompBench prompt file (CATEGORY_val.txt); pass --format "
        f"({', '.join(FORMATS)}) if the name misleads"
    )


def _load_dir(p: Path, format: str | None) -> Suite:
    txt = sorted(f for f in p.glob("*.txt") if t2i_category(f) is not None)
    js = sorted(p.glob("*.json"))
    if format == "t2i-compbench" or (format is None and txt and not js):
        # one split per category: prefer _val files when several splits are present
        by_cat: dict[str, Path] = {}
        for f in txt:
            cat = t2i_category(f)
            assert cat is not None
            if cat not in by_cat or f.stem.lower().endswith("_val"):
                by_cat[cat] = f
        if not by_cat:
            raise MilrUserError(f"no T2I-CompBench prompt files (CATEGORY_val.txt) in {str(p)!r}")
        return _load_t2i_files([by_cat[c] for c in T2I_CATEGORIES if c in by_cat], str(p))
    if format == "wise" or (format is None and js and not txt):
        if not js:
            raise MilrUserError(f"no WISE .json files in {str(p)!r}")
        return _load_wise_files(js, str(p))
    raise MilrUserError(
        f"cannot tell which benchmark the directory {str(p)!r} holds "
        f"({len(txt)} T2I-CompBench .txt, {len(js)} .json files); pass a single file or --format"
    )
