"""The `milr` command. Subcommands live in their own modules and load only when used.

Nothing here imports torch or a model library, so `milr --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from milr.errors import ExternalServiceError, MilrUserError

#: command name -> "module:attribute"; modules must import only cheap things at top level.
COMMANDS: dict[str, str] = {
    "critics": "milr.cli.registry_cmds:critics",
    "plugins": "milr.cli.registry_cmds:plugins",
    "score": "milr.cli.score:score",
    "generate": "milr.cli.generate:generate",
    "demo": "milr.cli.demo:demo",
    "bench": "milr.cli.bench:bench",
    "download": "milr.cli.download:download",
}


class LazyGroup(click.Group):
    """A group whose subcommands import on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, but a mistyped name gets "Did you mean ...?" from the lazy command list."""
        name = click.utils.make_str(args[0])
        if (
            self.get_command(ctx, name) is None
            and not ctx.resilient_parsing
            and not name.startswith("-")
        ):
            raise click.exceptions.NoSuchCommand(name, possibilities=list(COMMANDS), ctx=ctx)
        return super().resolve_command(ctx, args)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not built into this version
                return None
            raise
        return getattr(module, attr)


#: Every command shows its defaults the same way ("[default: ...]"), inherited from the group.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="milr", prog_name="milr")
def cli() -> None:
    """milr: test-time latent reasoning (MILR) for unified image generators.

    Start with `milr demo` (offline: 8–18 s on a 2-core CPU), list reward critics
    with `milr critics`, and see `milr COMMAND --help`.
    """


def shadowed_package() -> str | None:
    """Why `milr` is not milr's package in this process, or None when it is.

    Started in a folder that holds a folder named ``milr`` without an ``__init__.py`` (typically
    the folder above a source checkout), Python makes that folder an empty namespace package
    named ``milr`` before it looks at the editable install; submodules still load, but
    everything ``milr/__init__.py`` defines is missing (``module 'milr' has no attribute
    'run_milr'``).
    """
    package = sys.modules.get("milr")
    if package is None or getattr(package, "__file__", None) is not None:
        return None
    where = next(iter(getattr(package, "__path__", []) or []), "?")
    return (
        f"'milr' was imported from {where}, a folder without milr's code (an empty namespace "
        f"package), because Python was started in {os.path.dirname(where)} and the current "
        "folder comes first on sys.path (the folder above a milr checkout?); run from another "
        "folder, or use the `milr` command"
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors exit 2 with one line; internal failures exit 1."""
    shadowed = shadowed_package()
    if shadowed:
        click.echo(f"error: {shadowed}", err=True)
        sys.exit(2)
    try:
        cli.main(args=argv, prog_name="milr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MilrUserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ExternalServiceError as exc:
        # a server or tool a critic called failed: not a milr bug, nothing to report
        for line in exc.lines():
            click.echo(f"error: {line}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("MILR_DEBUG"):
            traceback.print_exc()
        else:
            click.echo(
                f"internal error: {type(exc).__name__}: {exc}\n"
                "(set MILR_DEBUG=1 for the traceback, and please report it)",
                err=True,
            )
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
