"""`milr critics` and `milr plugins` tables fit the terminal; piped output keeps whole rows."""

from __future__ import annotations

from collections import Counter

import pytest
from cli_helpers import run_milr

COMMANDS = [
    ("critics",),
    ("critics", "api-judge"),
    ("critics", "ocr"),
    ("critics", "--presets"),
    ("critics", "preset:mixed-reward"),
    ("plugins",),
]


@pytest.mark.parametrize("columns", [60, 100])
def test_tables_fit_the_terminal_width(columns):
    for args in COMMANDS:
        proc = run_milr(*args, env={"COLUMNS": str(columns)})
        assert proc.returncode == 0, proc.stderr
        # a file path is never broken (it is copied as a whole)
        wide = [
            line
            for line in proc.stdout.splitlines()
            if len(line) > columns and not line.startswith("spec file: ")
        ]
        assert not wide, f"milr {' '.join(args)} at COLUMNS={columns}:\n" + "\n".join(wide)


def test_wrapped_rows_keep_every_critic_and_word():
    piped = run_milr("critics", env={"COLUMNS": ""})
    narrow = run_milr("critics", env={"COLUMNS": "70"})
    assert piped.returncode == narrow.returncode == 0
    rows = piped.stdout.splitlines()[2:]
    names = [r.split()[0] for r in rows]
    assert "api-judge" in names and "color" in names
    assert max(len(r) for r in rows) > 70  # one line per critic when piped, however wide
    starts = [line.split()[0] for line in narrow.stdout.splitlines()[2:] if line[:1].strip()]
    assert starts == names  # each critic's row starts at the left margin, in order
    # words of at most 10 characters are never broken: every one of them is still there
    short = Counter(w for w in piped.stdout.split() if len(w) <= 10)
    assert not short - Counter(narrow.stdout.split())
