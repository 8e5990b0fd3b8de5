"""The docs' parameter tables come from the declarations: every critic has one, none is stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from milr.params import parameters_markdown
from milr.registry import get_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Critics still being rewritten on the declared-parameters base (issue #10).
PENDING: set[str] = set()


def _hook():
    spec = importlib.util.spec_from_file_location(
        "critic_params_hook", DOCS / "hooks" / "critic_params.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markers() -> dict[str, list[str]]:
    hook = _hook()
    found: dict[str, list[str]] = {}
    for page in sorted(DOCS.glob("*.md")):
        for name in hook.MARKER.findall(page.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(page.name)
    return found


def test_mkdocs_runs_the_hook():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "docs/hooks/critic_params.py" in text


def test_every_builtin_critic_has_a_parameter_table_in_the_docs():
    markers = _markers()
    builtins = {n for n, e in get_registry().critics.items() if e.builtin}
    missing = sorted(n for n in builtins - PENDING if n not in markers)
    assert not missing, f"add <!-- milr-critic-params: NAME --> to a docs page for {missing}"
    twice = {n: pages for n, pages in markers.items() if len(pages) > 1}
    assert not twice, f"one parameter table per critic: {twice}"
    unknown = sorted(set(markers) - set(get_registry().critics))
    assert not unknown, f"docs name critics that are not registered: {unknown}"


def test_hook_replaces_markers_with_the_declared_table():
    hook = _hook()
    page = "intro\n\n<!-- milr-critic-params: color -->\n\noutro"
    out = hook.on_page_markdown(page, page=None, config=None, files=None)
    from milr.critics.color import ColorCritic

    assert out == f"intro\n\n{parameters_markdown(ColorCritic)}\n\noutro"
    assert "| `tolerance` | `float` | `100.0` | > 0 |" in out
    with pytest.raises(Exception, match="unknown critic 'nosuch'"):
        hook.render("<!-- milr-critic-params: nosuch -->")
