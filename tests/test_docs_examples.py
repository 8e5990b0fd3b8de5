"""Every shell and Python example in README.md, docs/*.md and the plugins' READMEs runs as
written, or says why not.

Each fenced block tagged ``bash``/``sh``/``shell``/``console``/``python`` is one test, run in a
fresh folder per document (blocks of a document share it, in order, so a later block can use
an earlier one's output). The folder holds small test images named as the examples name them
(`IMAGES`). HTML comments on the lines right before a block change what happens to it:

- ``<!-- docs-test: skip REASON -->``: not run (it needs weights, a GPU, a network or minutes);
  the test reports the reason. A skipped shell block is still checked: every ``milr ...``
  command in it (also after ``torchrun ... -m milr``) must parse with the real command-line
  parser, and every ``--critic`` / ``--eval-critic`` value must be a valid spec. A skipped
  Python block must compile.
- ``<!-- docs-test: ci REASON -->``: not run here because ``.ci/run`` runs it; every line of the
  block must appear verbatim in ``.ci/run`` (the README's install and test commands).
- ``<!-- docs-test: file NAME -->``: the block is a file the examples use; it is written to
  NAME in the document's folder before its blocks run.
- ``<!-- docs-test: slow -->``: run, marked slow (over ~30 s).
- ``<!-- docs-test: hub -->``: a command with real checkpoints: run (marked slow) against a
  loopback Hugging Face Hub that serves tiny random stand-ins under the real repo ids
  (``tests/docs_hub.py``; the real huggingface_hub client downloads them into a fresh cache),
  with GPU-only flags mapped to the CPU (``--device cuda[:N]`` and ``device=cuda[:N]``) and
  OpenAI's endpoint (``https://api.openai.com/v1``) pointed at a loopback OpenAI-compatible
  server (``tests/test_critic_api_judge.py``'s; the official ``openai`` client calls it).
- ``<!-- docs-test: expect TEXT -->`` (one or more): run, and its output (stdout and stderr,
  whitespace collapsed) must contain each TEXT: the figures the prose promises the reader.

Every fenced block must carry a language tag, so none escapes classification (plain output
is tagged ``text``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "plugins").glob("*/README.md")),  # what plugin authors copy
]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|ci|file|slow|hub|expect)\b\s*(.*?)\s*-->")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
#: Images the examples name; each is a 64×64 red square with a blue square in it.
IMAGES = ("img.png", "a.png", "b.png", "cat.png", "image.png", "sign.png", "apple.png", "fox.png")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    marker: str | None  # skip, ci, file, slow, hub or None
    arg: str
    expects: list[str]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        above = text[: m.start()].rstrip("\n").split("\n")
        found = []
        while above and MARKER.fullmatch(above[-1].strip()):
            found.append(MARKER.fullmatch(above.pop().strip()))
        mk = next((f for f in found if f.group(1) != "expect"), None)
        expects = [f.group(2) for f in reversed(found) if f.group(1) == "expect"]
        out.append(
            Block(
                doc,
                line,
                m.group(1).lower(),
                m.group(2),
                mk.group(1) if mk else None,
                mk.group(2) if mk else "",
                expects,
            )  # fmt: skip
        )
    return out


def runnable(found: list[Block]) -> list[Block]:
    """The blocks that are examples: shell or Python, not a `file` block (a file is written into
    the workspace, not run; `test_file_blocks_are_used` checks those)."""
    return [b for b in found if b.lang in SHELL | PYTHON and b.marker != "file"]


ALL = [b for doc in DOCS for b in blocks(doc)]
EXAMPLES = runnable(ALL)
FILES = [b for b in ALL if b.marker == "file"]


def test_every_fenced_block_has_a_language():
    untagged = [b.id for b in ALL if not b.lang]
    assert not untagged, f"tag these blocks (bash, python, text, ...): {untagged}"


def test_markers_are_well_formed():
    for b in ALL:
        if b.marker in ("skip", "ci"):
            assert b.arg, f"{b.id}: a {b.marker} marker states its reason"
        assert all(b.expects), f"{b.id}: an expect marker states the text"
        if b.expects:
            assert b.marker in (None, "slow", "hub"), f"{b.id}: expect on a block that does not run"
        if b.marker == "file":
            assert re.fullmatch(r"[\w.-]+", b.arg), f"{b.id}: file marker needs a file name"
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"<!--\s*docs-test\b[^>]*-->", text):
            assert MARKER.fullmatch(m.group(0)), f"{doc.name}: unknown marker {m.group(0)!r}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if shutil.which("torchrun", path=env["PATH"]) is None:  # torch's console script, absent
        env["PATH"] = os.pathsep.join([str(_torchrun_shim()), env["PATH"]])  # from some venvs
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", YOLO_OFFLINE="1",
        YOLO_AUTOINSTALL="false", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
    )  # fmt: skip
    return env


def _torchrun_shim() -> Path:
    """A folder with ``torchrun``: what torch's console script runs, `torch.distributed.run`,
    for an environment whose bin folder lacks the script (a venv sharing another's torch)."""
    import hashlib
    import tempfile

    tag = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]  # one per interpreter
    folder = Path(tempfile.gettempdir()) / f"milr-torchrun-shim-{tag}"
    script = folder / "torchrun"
    if not script.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
        script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """One folder per document, made on first use: the test images and its `file` blocks."""
    made: dict[Path, Path] = {}

    def get(doc: Path) -> Path:
        if doc not in made:
            from PIL import Image

            folder = tmp_path_factory.mktemp(doc.stem)
            for name in IMAGES:
                im = Image.new("RGB", (64, 64), (220, 30, 30))
                im.paste((30, 70, 220), (20, 20, 44, 44))
                im.save(folder / name)
            for b in blocks(doc):
                if b.marker == "file":
                    (folder / b.arg).write_text(b.code, encoding="utf-8")
            made[doc] = folder
        return made[doc]

    return get


def _commands(code: str, console: bool) -> list[str]:
    """Shell commands of a block: continuation lines joined, `$ ` prompts honoured."""
    lines, cur = [], ""
    for raw in code.splitlines():
        if console:
            if not raw.startswith("$ ") and not cur:
                continue  # program output
            raw = raw[2:] if raw.startswith("$ ") else raw
        cur += raw
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip():
            lines.append(cur.strip())
        cur = ""
    return lines


def _milr_argvs(command: str) -> list[list[str]]:
    """The argument lists of every `milr` invocation in a shell command line: a simple command
    whose program is `milr` (after any VAR=value words), or `... -m milr ARGS` (python, torchrun)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError as exc:
        raise AssertionError(f"cannot split {command!r}: {exc}") from None
    simple: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", "||", ";", "|", "&"):
            simple.append([])
        else:
            simple[-1].append(w)
    out = []
    for cmd in simple:
        while cmd and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cmd[0]):
            cmd = cmd[1:]
        if cmd and os.path.basename(cmd[0]) == "milr":
            out.append(cmd[1:])
            continue
        for i in range(len(cmd) - 1):
            if cmd[i] == "-m" and cmd[i + 1] == "milr":
                out.append(cmd[i + 2 :])
                break
    return out


@contextlib.contextmanager
def _paths_need_not_exist(root):
    """A skipped example names paths of the reader's machine: check the syntax, not the disk."""
    import click

    patched = []

    def visit(cmd):
        for p in cmd.params:
            if isinstance(p.type, click.Path) and p.type.exists:
                p.type.exists = False
                patched.append(p.type)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                visit(cmd.get_command(ctx, name))

    visit(root)
    try:
        yield
    finally:
        for t in patched:
            t.exists = True


def _check_milr_argv(argv: list[str], where: str) -> None:
    """Parse `milr ARGV` with the real click commands (nothing runs) and check critic specs."""
    import click

    from milr.cli.main import cli
    from milr.specs import resolve_specs

    def parse(cmd: click.Command, name: str, args: list[str], parent=None) -> None:
        ctx = cmd.make_context(name, list(args), parent=parent)
        if isinstance(cmd, click.Group):
            protected = getattr(ctx, "_protected_args", None)
            if protected is None:
                protected = ctx.protected_args
            rest = [*protected, *ctx.args]
            if not rest:
                return
            sub_name, sub, sub_args = cmd.resolve_command(ctx, rest)
            assert sub is not None and sub_name is not None
            parse(sub, sub_name, sub_args, parent=ctx)
            return
        for key in ("critic_specs", "critic", "eval_critic"):
            for spec in ctx.params.get(key) or ():
                if not spec.endswith(".toml") and spec != "...":
                    resolve_specs([spec])  # as the CLI reads it: presets expand here

    if any(a in ("-h", "--help", "--version") for a in argv):
        return
    try:
        with _paths_need_not_exist(cli):
            parse(cli, "milr", argv)
    except click.exceptions.ClickException as exc:
        msg = exc.format_message()
        raise AssertionError(f"{where}: `milr {shlex.join(argv)}`: {msg}") from None
    except Exception as exc:
        raise AssertionError(f"{where}: `milr {shlex.join(argv)}`: {exc}") from exc


@pytest.fixture(scope="module")
def docs_hub(tmp_path_factory, shared_data):
    """`docs_hub.start`: the loopback Hub with the docs' checkpoints, once per module."""
    import docs_hub as module

    hub, yolo_cfg = module.start(tmp_path_factory.mktemp("docs-hub"), shared_data)
    yield hub, yolo_cfg
    hub.stop()


@pytest.fixture(scope="module")
def docs_openai():
    """A loopback OpenAI-compatible chat-completions server for `hub` blocks that call
    OpenAI (`test_critic_api_judge.FakeAPI`: yes/no with log-probabilities, WISE grades...)."""
    from test_critic_api_judge import FakeAPI, serve

    fake = FakeAPI()
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


#: OpenAI's endpoint as the docs write it (`hub` blocks call `docs_openai` instead).
OPENAI_URL = "https://api.openai.com/v1"

#: GPU-only spellings in the docs and their CPU stand-ins for `hub` blocks.
CPU_FLAGS = ((re.compile(r"(--device[ =]|device=)cuda(:\d+)?"), r"\1cpu"),)


def on_cpu(code: str) -> str:
    """`code` with every ``--device cuda[:N]`` / ``device=cuda[:N]`` turned into ``cpu``."""
    for pattern, repl in CPU_FLAGS:
        code = pattern.sub(repl, code)
    return code


def _run(
    cmd: list[str],
    cwd: Path,
    where: str,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> str:
    env = {**_env(), **(extra_env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{where} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            "\n(an example that cannot run offline says why on the line before its block: "
            "<!-- docs-test: skip REASON -->; see this test module's docstring)"
        )
    return proc.stdout + "\n" + proc.stderr


def _param(b: Block):
    marks = [pytest.mark.slow] if b.marker in ("slow", "hub") else []
    return pytest.param(b, id=b.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in EXAMPLES])
def test_example(block: Block, workspaces, request):
    where = block.id
    if block.marker in ("skip", "ci"):
        # still checked: it must parse (shell: milr's own parser; Python: the compiler)
        if block.lang in PYTHON:
            compile(block.code, where, "exec")
        else:
            for command in _commands(block.code, block.lang == "console"):
                for argv in _milr_argvs(command):
                    _check_milr_argv(argv, where)
        if block.marker == "ci":
            ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
            for command in _commands(block.code, block.lang == "console"):
                assert command in ci, f"{where}: .ci/run does not run {command!r} verbatim"
        pytest.skip(f"{block.marker}: {block.arg}")
    folder = workspaces(block.doc)
    code, extra_env = block.code, None
    if block.marker == "hub":
        hub, yolo_cfg = request.getfixturevalue("docs_hub")
        data = request.getfixturevalue("shared_data")
        for suite in ("geneval", "t2i-compbench"):  # the benchmarks' prompt files, as named
            if not (folder / suite).exists():
                shutil.copytree(data / suite, folder / suite)
        code = on_cpu(code)
        if OPENAI_URL in code:
            code = code.replace(OPENAI_URL, request.getfixturevalue("docs_openai").url)
        import docs_hub as module

        mirror = folder / ".data-mirror"
        if not mirror.exists():
            module.data_mirror(mirror, data)
        extra_env = {
            **hub.env(folder / ".hf-home"),
            "YOLO_CONFIG_DIR": str(yolo_cfg),
            "MILR_DATA_MIRROR": str(mirror),  # official prompt files by name (`milr bench geneval`)
            "MILR_CACHE": str(folder / ".milr-cache"),
        }
    if block.lang in PYTHON:
        script = folder / f"_example_{block.line}.py"
        script.write_text(code, encoding="utf-8")
        output = _run([sys.executable, script.name], folder, where, extra_env=extra_env)
    else:
        script = "\n".join(_commands(code, block.lang == "console"))
        output = _run(
            ["bash", "-e", "-o", "pipefail", "-c", script], folder, where, extra_env=extra_env
        )
    flat = " ".join(output.split())
    for expected in block.expects:
        assert expected in flat, f"{where}: the docs promise {expected!r}; it printed:\n{output}"


def test_a_file_block_is_not_an_example(tmp_path):
    """A `file` block in a runnable language used to become a test that returned early: a pass
    that checked nothing. It is no example; its checks are `test_file_blocks_are_used`'s."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- docs-test: file plugin.py -->\n```python\nVALUE = 1\n```\n\n"
        "```bash\npython plugin.py\n```\n",
        encoding="utf-8",
    )
    found = blocks(doc)
    assert [b.marker for b in found] == ["file", None]
    assert runnable(found) == [found[1]]


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in FILES])
def test_file_blocks_are_used(block: Block):
    """A `file` block is named by a later example of its document, and parses as its language."""
    later = [b for b in runnable(blocks(block.doc)) if b.line > block.line]
    assert any(block.arg in b.code for b in later), (
        f"{block.id}: no later example of {block.doc.name} uses {block.arg}"
    )
    if block.lang in PYTHON:
        compile(block.code, block.id, "exec")
    elif block.lang == "toml":
        from milr.specs import tomllib

        tomllib.loads(block.code)
    elif block.lang == "json":
        import json

        json.loads(block.code)


def test_hub_blocks_map_gpu_flags_to_the_cpu():
    assert on_cpu("milr generate x --device cuda:1 --critic geneval:device=cuda,weights=y") == (
        "milr generate x --device cpu --critic geneval:device=cpu,weights=y"
    )
    assert on_cpu("milr bench s --device=cuda") == "milr bench s --device=cpu"


def test_the_checker_catches_a_bad_flag_and_a_bad_spec():
    """The static check of skipped blocks is real: it refuses what the CLI would refuse."""
    with pytest.raises(AssertionError, match="No such option '--prompt'"):
        _check_milr_argv(["generate", "--model", "M", "--prompt", "x", "-c", "color"], "t")
    with pytest.raises(AssertionError, match="colorfulness,weight=0.5"):
        _check_milr_argv(["score", "a.png", "-p", "x", "-c", "colorfulness,weight=0.5"], "t")
    _check_milr_argv(["score", "a.png", "-p", "x", "-c", "colorfulness:weight=0.5"], "t")
    assert _milr_argvs("OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m milr bench s.jsonl") == [
        ["bench", "s.jsonl"]
    ]


DEMO_TIME = "8–18 s on a 2-core CPU"


def test_one_measured_demo_figure_everywhere():
    """README, docs, `milr --help` and `milr demo --help` state the same measured demo time."""
    from click.testing import CliRunner

    from milr.cli.main import cli

    texts = {
        "README.md": (ROOT / "README.md").read_text(encoding="utf-8"),
        "docs/index.md": (ROOT / "docs" / "index.md").read_text(encoding="utf-8"),
        "docs/shapes.md": (ROOT / "docs" / "shapes.md").read_text(encoding="utf-8"),
        "milr --help": CliRunner().invoke(cli, ["--help"], terminal_width=200).output,
        "milr demo --help": CliRunner().invoke(cli, ["demo", "--help"], terminal_width=200).output,
    }
    for where, text in texts.items():
        flat = " ".join(text.split())
        assert DEMO_TIME in flat, f"{where} does not state the demo time as {DEMO_TIME!r}"
        for stale in ("a few minutes", "8.5 s", "1-3 min", "1–3 min"):
            assert stale not in flat, f"{where} still says {stale!r}"
