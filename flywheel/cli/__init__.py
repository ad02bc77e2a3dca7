"""The `flywheel` command. Only typer and rich are imported at start-up, so `--help` is instant;
every command imports what it needs inside its body.

Commands are grouped by feature; each module of this package (`curate`, `models`, `caption`, `train`,
`eval`, `loop`, `review`, `server`, `deploy`) exposes `register(app)`.
"""

from __future__ import annotations

import importlib
import sys

import typer

from flywheel import config  # noqa: F401 - sets the offline/telemetry environment defaults

app = typer.Typer(
    name="flywheel",
    help="Curate image-text data for image-generation models and close the loop from failures back to data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FEATURES = (
    "flywheel.cli.curate",
    "flywheel.cli.models",
    "flywheel.cli.caption",
    "flywheel.cli.train",
    "flywheel.cli.eval",
    "flywheel.cli.loop",
    "flywheel.cli.review",
    "flywheel.cli.audit",
    "flywheel.cli.server",
    "flywheel.cli.catalog",
    "flywheel.cli.deploy",
)


def _register_all() -> None:
    import flywheel.flows  # noqa: F401 - a committed dataset version emits its Prefect event (cheap: no Prefect import)

    for mod in FEATURES:
        importlib.import_module(mod).register(app)


class UserError(Exception):
    """An error whose message already says what to do next; printed without a traceback."""


def main() -> None:
    _register_all()
    try:
        app()
    except Exception as e:
        from flywheel.catalog_pg import CatalogUnavailable

        if not isinstance(e, (UserError, CatalogUnavailable)):  # a catalog that cannot be reached: say where, no traceback
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    # Under `python -m flywheel.cli` this module is `__main__`; import the real one so the
    # commands raise the same UserError class that main() catches.
    from flywheel.cli import main as _main

    _main()
