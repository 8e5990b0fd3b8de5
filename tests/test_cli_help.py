"""Every command's help: each option explained, defaults shown one way, typos get suggestions,
and flags mean the same thing in every command (old spellings warn once and keep working)."""

from __future__ import annotations

import re

import click
import pytest
from cli_helpers import run_milr

from milr.cli.main import CONTEXT_SETTINGS, cli


def _walk(cmd: click.Command, ctx: click.Context):
    yield ctx.command_path, cmd, ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, name
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _commands():
    root = click.Context(cli, info_name="milr", **CONTEXT_SETTINGS)
    return list(_walk(cli, root))


def test_the_walk_reaches_every_command():
    paths = {p for p, _, _ in _commands()}
    for expected in ("milr generate", "milr score", "milr demo", "milr bench run", "milr critics"):
        assert expected in paths


@pytest.mark.parametrize("path", [p for p, _, _ in _commands()])
def test_every_option_has_help_and_defaults_show_one_way(path):
    _, cmd, ctx = next(c for c in _commands() if c[0] == path)
    assert cmd.help or cmd.short_help, f"{path} has no help text"
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        record = param.get_help_record(ctx)
        assert record is not None
        names, text = record
        assert param.help, f"{path} {names}: no help text"
        # the old style put defaults in bare brackets inside the help, e.g. "[0.1]"
        assert not re.search(r"\[[-+]?[\d.]+\]", param.help), f"{path} {names}: {param.help!r}"
        assert "default:" not in param.help.lower() and "(default" not in param.help.lower(), (
            f"{path} {names}: state the default with show_default, not in the help text"
        )
        if not param.expose_value:  # --help, --version: actions, not settings
            continue
        default = param.get_default(ctx, call=False)
        unset = default is None or type(default).__name__ == "Sentinel" or default in ((), [])
        has_default = not unset and not (param.is_flag and default is False)
        if has_default or isinstance(param.show_default, str):
            assert "[default: " in text, f"{path} {names}: default not shown ({text!r})"


def test_generate_help_shows_defaults_in_click_style():
    out = run_milr("generate", "--help")
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "Fraction of the reasoning tokens optimised, in (0, 1]. [default: 0.1]" in flat
    assert "--on-error [raise|skip] When a critic of the ensemble fails" in flat


def test_generate_help_says_text_prefix_comes_from_the_checkpoint():
    """--text-prefix unset is the checkpoint's recommendation, not always `paper` (the shapes
    model recommends at_least_one), and the help says so."""
    out = run_milr("generate", "--help")
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    block = flat.split("--text-prefix", 1)[1].split(" --", 1)[0]
    assert block.endswith(
        "[default: (the checkpoint's recommendation: paper for Janus-Pro, at_least_one for shapes)]"
    ), block
    from milr.generator import load_generator

    assert load_generator("shapes", device="cpu").default_text_prefix == "at_least_one"


def test_mistyped_command_gets_a_suggestion():
    out = run_milr("critic")
    assert out.returncode == 2
    assert "No such command 'critic'. Did you mean 'critics'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_mistyped_bench_subcommand_gets_a_suggestion(tmp_path):
    out = run_milr("bench", "sumary", str(tmp_path), cwd=str(tmp_path))
    assert out.returncode == 2
    assert "Did you mean 'summary'?" in out.stderr
    # an existing file of that name is a suite file, not a typo
    (tmp_path / "sumary").write_text("")
    out = run_milr("bench", "sumary", "--limit", "1", cwd=str(tmp_path))
    assert "Did you mean" not in out.stderr


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from milr.shapes.evalset import write_shapeseval

    return write_shapeseval(tmp_path_factory.mktemp("suite") / "s.jsonl", per_tag=1, seed=3)


def test_bench_old_dash_m_still_means_model_and_warns_once(suite, tmp_path):
    """-m is --metadata in generate/score; bench's old -m (= --model) keeps working, with a warning."""
    missing = str(tmp_path / "no-such-model")
    out = run_milr(
        "bench", str(suite), "-m", missing, "--limit", "1", "--steps", "1", "-q",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    warnings = [ln for ln in out.stderr.splitlines() if "deprecated" in ln]
    assert warnings == [
        "warning: -m is deprecated here; use -M/--model (-m means --metadata in generate and score)"
    ]
    # the value reached --model: the loader names it
    assert f"model path {missing!r} does not exist" in out.stderr
    new = run_milr(
        "bench", str(suite), "-M", missing, "--limit", "1", "-q", "--out", str(tmp_path / "r2")
    )
    assert "deprecated" not in new.stderr and f"model path {missing!r}" in new.stderr
    both = run_milr("bench", str(suite), "-m", missing, "-M", "shapes", "--out", str(tmp_path))
    assert both.returncode == 2
    assert "-m" in both.stderr and "disagree; pass only -M/--model" in both.stderr


def test_dash_m_means_metadata_in_generate_and_score():
    for command in ("generate", "score"):
        opt = next(
            p
            for p in click.Context(cli).command.get_command(click.Context(cli), command).params
            if "-m" in p.opts
        )
        assert opt.name == "metadata", command


def test_warn_deprecated_prints_once_per_process(capsys):
    from milr.cli.common import warn_deprecated

    with pytest.warns(DeprecationWarning):
        warn_deprecated("-x is deprecated here; use -y (test)")
    with pytest.warns(DeprecationWarning):
        warn_deprecated("-x is deprecated here; use -y (test)")
    assert capsys.readouterr().err.count("-x is deprecated") == 1
