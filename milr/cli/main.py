"""The `milr` command. Subcommands live in their own modules and load only when used.

Nothing here imports torch or a model library, so `milr --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

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
}


class LazyGroup(click.Group):
    """A group whose subcommands import on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="milr", prog_name="milr")
def cli() -> None:
    """milr: test-time latent reasoning (MILR) for unified image generators.

    Start with `milr demo` (offline, CPU, a few minutes), list reward critics with
    `milr critics`, and see `milr COMMAND --help`.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors exit 2 with one line; internal failures exit 1."""
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
