"""Plugin discovery through real entry points: provenance, isolation, blocking, strict mode."""

from __future__ import annotations

import pytest
from plugin_fixtures import (
    BROKEN_IMPORT_PLUGIN,
    BROKEN_REGISTER_PLUGIN,
    DUPLICATE_PLUGIN,
    GOOD_PLUGIN,
    allow,
    make_distribution,
)

import milr
from milr import plugins
from milr.errors import DuplicateNameError, PluginError
from milr.registry import get_registry


@pytest.fixture
def site(tmp_path, fresh_plugins):
    """A directory on sys.path holding fake distributions (named in MILR_LOAD_PLUGINS)."""
    fresh_plugins.syspath_prepend(str(tmp_path))
    allow(fresh_plugins, "milr-squares", "milr-good", "milr-broken", "milr-badreg", "milr-dup")
    return tmp_path


def _install_broken(site):
    """Install ``milr-broken``, whose plugin module raises on import."""
    make_distribution(
        site,
        "milr-broken",
        "0.0.1",
        {"broken_plugin": BROKEN_IMPORT_PLUGIN},
        {"broken": "broken_plugin"},
    )


def test_builtins_register_through_the_hook(fresh_plugins):
    reg = get_registry()
    entry = reg.critics["color"]
    assert entry.plugin == "milr.critics.color"
    assert entry.distribution == "milr" and entry.builtin
    assert "colorfulness" in reg.critics and "sharpness" in reg.critics


def test_third_party_plugin_discovered_with_provenance(site):
    make_distribution(
        site,
        "milr-squares",
        "2.3.1",
        {"squares_plugin": GOOD_PLUGIN},
        {"squares": "squares_plugin"},
    )
    entry = get_registry().critics["squareness"]
    assert (entry.plugin, entry.distribution, entry.version, entry.builtin) == (
        "squares",
        "milr-squares",
        "2.3.1",
        False,
    )
    critic = get_registry().create_critic("squareness")
    from PIL import Image

    assert critic.score(Image.new("RGB", (4, 4)), "x").score == 1.0


def test_broken_plugins_are_isolated_and_reported(site):
    make_distribution(
        site, "milr-good", "1.0", {"good_plugin": GOOD_PLUGIN}, {"good": "good_plugin"}
    )
    _install_broken(site)
    make_distribution(
        site,
        "milr-badreg",
        "0.2",
        {"badreg_plugin": BROKEN_REGISTER_PLUGIN},
        {"badreg": "badreg_plugin"},
    )
    reg = get_registry()
    assert "squareness" in reg.critics and "color" in reg.critics
    infos = plugins.get_plugin_manager().plugins
    assert (
        "broken on purpose" in infos["broken"].error
        and infos["broken"].distribution == "milr-broken"
    )
    assert "registration exploded" in infos["badreg"].error


def test_strict_mode_makes_a_broken_plugin_fatal(site):
    _install_broken(site)
    site_mp = pytest.MonkeyPatch()
    site_mp.setenv("MILR_STRICT_PLUGINS", "1")
    try:
        with pytest.raises(PluginError, match="milr-broken"):
            get_registry()
    finally:
        site_mp.undo()


def test_blocking_by_plugin_and_distribution_name(site, fresh_plugins):
    make_distribution(
        site, "milr-squares", "1.0", {"squares_plugin": GOOD_PLUGIN}, {"squares": "squares_plugin"}
    )
    fresh_plugins.setenv("MILR_DISABLE_PLUGINS", "milr-squares,milr.critics.color")
    reg = get_registry()
    assert "squareness" not in reg.critics
    assert "color" not in reg.critics  # built-ins can be blocked too
    assert "sharpness" in reg.critics
    infos = plugins.get_plugin_manager().plugins
    assert infos["squares"].blocked and infos["milr.critics.color"].blocked


def test_duplicate_critic_name_is_an_error_naming_both(site):
    make_distribution(
        site, "milr-dup", "9.9", {"dup_plugin": DUPLICATE_PLUGIN}, {"dup": "dup_plugin"}
    )
    with pytest.raises(DuplicateNameError) as info:
        get_registry()
    msg = str(info.value)
    assert "milr.critics.color" in msg and "milr-dup" in msg and "'color'" in msg


def test_duplicate_resolved_by_blocking_one(site, fresh_plugins):
    make_distribution(
        site, "milr-dup", "9.9", {"dup_plugin": DUPLICATE_PLUGIN}, {"dup": "dup_plugin"}
    )
    fresh_plugins.setenv("MILR_DISABLE_PLUGINS", "dup")
    assert get_registry().critics["color"].plugin == "milr.critics.color"


def test_unknown_critic_lists_known_ones(fresh_plugins):
    with pytest.raises(milr.UnknownCriticError, match="known critics: .*color"):
        get_registry().create_critic("nope")


def test_bad_constructor_arguments_are_user_errors(fresh_plugins):
    with pytest.raises(milr.MilrUserError, match="color"):
        get_registry().create_critic("color", colour="red")


def test_registration_is_lazy_no_torch_import():
    import subprocess
    import sys

    code = "import sys, milr; milr.get_registry(); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_hook_implementations_and_score_batch_are_fully_typed():
    """Plugin authors copy the built-ins: every ``@hookimpl`` function and every ``score_batch``
    in milr/, critics/ and the example plugins annotates each parameter and its return."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    untyped = []
    for base in ("milr", "critics", "plugins"):
        for path in sorted((root / base).rglob("*.py")):
            if "build" in path.relative_to(root).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                hook = any(
                    (isinstance(d, ast.Name) and d.id == "hookimpl")
                    or (isinstance(d, ast.Attribute) and d.attr == "hookimpl")
                    for d in node.decorator_list
                )
                if not hook and node.name != "score_batch":
                    continue
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                bare = [
                    a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")
                ]
                if bare or node.returns is None:
                    where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                    untyped.append(f"{where} (unannotated: {bare or 'return'})")
    assert untyped == [], untyped
