"""The docs stand alone: no pointers to files outside the repository or to issue threads.

A reader of README.md, docs/, an API docstring or a benchmark script the docs cite has only
the repository; "DESIGN §5", "the
issue asks for" or "issue #12" point at texts they cannot open.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Pointers at texts a reader of the repository does not have.
OUTSIDE = re.compile(
    r"DESIGN(?:\.md|\s*§)|STYLE\.md|\bthe issue\b|(?<!transformers )\bissues? #?\d|\(#\d+\)|/work/",
    re.IGNORECASE,
)


def _texts() -> list[Path]:
    docs = sorted((ROOT / "docs").rglob("*.md"))
    code = sorted(p for d in ("milr", "critics") for p in (ROOT / d).rglob("*.py"))
    benchmarks = sorted((ROOT / "benchmarks").glob("*.[ps][yh]"))  # cited by the docs
    plugin = sorted((ROOT / "plugins").rglob("*.md"))
    return [ROOT / "README.md", *docs, *code, *benchmarks, *plugin]


@pytest.mark.parametrize("path", _texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointer_outside_the_repository(path):
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, "\n".join(hits)


def test_readme_says_what_the_shared_data_tests_need():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tests", 1)[1].split("\n## ", 1)[0]
    assert "MILR_SHARED_DATA" in section and "skipped" in section
    needing = sorted(
        p.name
        for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"def \w+\([^)]*\bshared_data\b", p.read_text(encoding="utf-8"))
    )
    assert needing, "no test uses the shared_data fixture any more: update the README"
    missing = [name for name in needing if f"`{name}`" not in section]
    assert not missing, f"README's Tests section does not name {missing}"
