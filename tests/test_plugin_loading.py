"""Plugin loading without surprises (issue #10.2): any exception, unknown hooks, MILR_LOAD_PLUGINS.

Every plugin here is a real distribution on disk (dist-info + entry point), found through
`importlib.metadata` exactly like a pip-installed one.
"""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_milr
from PIL import Image
from plugin_fixtures import (
    EXIT_IN_REGISTER_PLUGIN,
    GOOD_PLUGIN,
    KEYBOARD_INTERRUPT_PLUGIN,
    MISSPELLED_HOOK_PLUGIN,
    SYSTEM_EXIT_PLUGIN,
    TOY_GENERATOR_PLUGIN,
    allow,
    load_env,
    make_distribution,
)

from milr import plugins, registry
from milr.errors import PluginError
from milr.registry import get_registry


@pytest.fixture
def site(tmp_path, fresh_plugins):
    fresh_plugins.syspath_prepend(str(tmp_path))
    return tmp_path


def _install(site, dist, source, ep=None):
    module = dist.replace("-", "_")
    make_distribution(site, dist, "0.1", {module: source}, {ep or dist.split("-", 1)[1]: module})


@pytest.mark.parametrize(
    ("source", "exc_name"),
    [(SYSTEM_EXIT_PLUGIN, "SystemExit"), (KEYBOARD_INTERRUPT_PLUGIN, "KeyboardInterrupt")],
    ids=["SystemExit", "KeyboardInterrupt"],
)
def test_base_exception_at_import_is_recorded_and_others_work(
    site, fresh_plugins, source, exc_name
):
    _install(site, "milr-killer", source)
    _install(site, "milr-squares", GOOD_PLUGIN)
    allow(fresh_plugins, "milr-killer", "milr-squares")
    reg = get_registry()
    info = plugins.get_plugin_manager().plugins["killer"]
    assert "squareness" in reg.critics and "color" in reg.critics
    assert info.distribution == "milr-killer" and not info.loaded
    assert info.error is not None and info.error.startswith(f"import: {exc_name}")


def test_system_exit_inside_register_hook_is_recorded(site, fresh_plugins):
    _install(site, "milr-exit-reg", EXIT_IN_REGISTER_PLUGIN, ep="exitreg")
    allow(fresh_plugins, "milr-exit-reg")
    reg = get_registry()
    info = plugins.get_plugin_manager().plugins["exitreg"]
    assert "color" in reg.critics
    assert info.error == "register: SystemExit: 3" and not info.loaded


def test_strict_mode_turns_system_exit_into_plugin_error(site, fresh_plugins):
    _install(site, "milr-killer", SYSTEM_EXIT_PLUGIN)
    allow(fresh_plugins, "milr-killer")
    fresh_plugins.setenv("MILR_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="milr-killer.*SystemExit"):
        get_registry()


@pytest.mark.parametrize(
    "source",
    [SYSTEM_EXIT_PLUGIN, KEYBOARD_INTERRUPT_PLUGIN],
    ids=["SystemExit", "KeyboardInterrupt"],
)
def test_cli_commands_exit_0_beside_a_plugin_that_exits_at_import(tmp_path, source):
    make_distribution(
        tmp_path, "milr-killer", "0.1", {"killer_mod": source}, {"killer": "killer_mod"}
    )
    red = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (220, 30, 30)).save(red)
    env = {"PYTHONPATH": str(tmp_path), **load_env("milr-killer")}
    critics = run_milr("critics", env=env)
    assert critics.returncode == 0, critics.stderr
    assert "color" in critics.stdout and "killer" in critics.stderr
    listing = run_milr("plugins", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    rows = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert rows["killer"]["distribution"] == "milr-killer" and rows["killer"]["loaded"] is False
    assert rows["killer"]["error"].startswith("import: ")
    score = run_milr("score", str(red), "--prompt", "red", "--critic", "color", env=env)
    assert score.returncode == 0, score.stderr
    assert "score 1.0000" in score.stdout


def test_hook_without_spec_is_failed_with_pluggy_reason(site, fresh_plugins):
    _install(site, "milr-typo", MISSPELLED_HOOK_PLUGIN)
    _install(site, "milr-squares", GOOD_PLUGIN)
    allow(fresh_plugins, "milr-typo", "milr-squares")
    reg = get_registry()
    info = plugins.get_plugin_manager().plugins["typo"]
    assert not info.loaded and info.distribution == "milr-typo"
    assert "unknown hook 'register_critic'" in info.error
    assert "register_critics" in info.error  # names the hooks that do exist
    assert "typo-critic" not in reg.critics and "squareness" in reg.critics


def test_cli_lists_an_unknown_hook_as_failed(tmp_path):
    make_distribution(
        tmp_path, "milr-typo", "0.1", {"typo_mod": MISSPELLED_HOOK_PLUGIN}, {"typo": "typo_mod"}
    )
    env = {"PYTHONPATH": str(tmp_path), **load_env("milr-typo")}
    out = run_milr("plugins", env=env)
    assert out.returncode == 0
    row = next(line for line in out.stdout.splitlines() if line.startswith("typo "))
    assert "FAILED" in row and "loaded" not in row
    assert "unknown hook 'register_critic'" in out.stderr


def test_load_plugins_selects_by_entry_point_or_distribution_name(site, fresh_plugins):
    make_distribution(site, "milr-squares", "1.0", {"sq": GOOD_PLUGIN}, {"squares": "sq"})
    _install(site, "milr-typo", MISSPELLED_HOOK_PLUGIN)
    fresh_plugins.setenv("MILR_LOAD_PLUGINS", "squares")  # entry-point name
    reg = get_registry()
    infos = plugins.get_plugin_manager().plugins
    assert "squareness" in reg.critics and "typo" not in infos
    assert "color" in reg.critics  # built-ins always load
    assert "milr-plugin-example" not in {i.distribution for i in infos.values()}

    fresh_plugins.setenv("MILR_LOAD_PLUGINS", "milr-typo")  # distribution name
    registry.reset()
    infos = plugins.get_plugin_manager().plugins
    assert "squareness" not in get_registry().critics and "typo" in infos

    fresh_plugins.setenv("MILR_LOAD_PLUGINS", "")
    registry.reset()
    reg = get_registry()
    assert {e.builtin for e in reg.critics.values()} == {True} and "color" in reg.critics


def test_load_plugins_reports_a_name_that_matches_nothing(site, fresh_plugins):
    fresh_plugins.setenv("MILR_LOAD_PLUGINS", "milr-nosuch,milr")
    get_registry()
    infos = plugins.get_plugin_manager().plugins
    assert "milr" not in infos  # naming milr itself is allowed (built-ins always load)
    assert "no installed plugin" in infos["milr-nosuch"].error
    assert not infos["milr-nosuch"].loaded


def test_the_suite_loads_no_ambient_plugin():
    """conftest limits third-party plugins to the example plugin this repository ships."""
    registry.reset()
    try:
        infos = plugins.get_plugin_manager().plugins.values()
        third_party = {i.distribution for i in infos if not i.builtin}
        assert third_party <= {"milr-plugin-example"}
    finally:
        registry.reset()


def test_either_reset_reloads_plugins(site, fresh_plugins):
    assert "squareness" not in get_registry().critics
    _install(site, "milr-squares", GOOD_PLUGIN)
    allow(fresh_plugins, "milr-squares")
    assert "squareness" not in get_registry().critics  # cached until a reset
    plugins.reset()  # the plugin manager alone: the registry notices
    assert "squareness" in get_registry().critics
    registry.reset()
    assert plugins.current_manager() is None
    assert "squareness" in get_registry().critics


def test_third_party_generator_runs_through_load_generator(site, fresh_plugins):
    import milr

    _install(site, "milr-toygen", TOY_GENERATOR_PLUGIN, ep="toygen")
    allow(fresh_plugins, "milr-toygen")
    entry = get_registry().generators["toygen"]
    assert (entry.distribution, entry.builtin) == ("milr-toygen", False)
    gen = milr.load_generator("toygen")
    assert type(gen).__name__ == "ToyGenerator"
    result = milr.MILR(
        gen,
        milr.build_critic(["color:target=red"]),
        milr.MILRConfig(mode="image", max_steps=3, seed=1, image_k=0.5),
    ).run("a red square")
    assert result.image is not None and result.image.size == (32, 32)
    palette = {(220, 30, 30), (30, 70, 220), (30, 160, 60), (235, 215, 25)}
    assert {rgb for _, rgb in result.image.getcolors()} <= palette


def test_third_party_generator_through_the_cli(tmp_path):
    make_distribution(
        tmp_path,
        "milr-toygen",
        "0.1",
        {"toygen_mod": TOY_GENERATOR_PLUGIN},
        {"toygen": "toygen_mod"},
    )
    out_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path), **load_env("milr-toygen")}
    args = ["generate", "a red square", "--model", "toygen", "--critic", "color:target=red"]
    proc = run_milr(*args, "--steps", "2", "--out", str(out_dir), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    traj = json.loads((out_dir / "trajectory.json").read_text())
    assert json.dumps(traj).count("toygen") >= 1
    with Image.open(out_dir / "final.png") as im:
        assert im.size == (32, 32)


WRONG_ARGUMENT_PLUGIN = """
    import milr

    @milr.hookimpl
    def register_critics(reg):  # the hook passes `register`
        pass
"""


def test_hookimpl_with_an_argument_the_spec_lacks_is_failed(site, fresh_plugins):
    _install(site, "milr-wrongarg", WRONG_ARGUMENT_PLUGIN)
    allow(fresh_plugins, "milr-wrongarg")
    reg = get_registry()
    info = plugins.get_plugin_manager().plugins["wrongarg"]
    assert not info.loaded and info.error.startswith("register: PluginValidationError")
    assert "reg" in info.error and "color" in reg.critics
