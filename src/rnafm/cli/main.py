"""`rnafm` entry point.

Each stage's commands live in ``rnafm.cli.<module>`` and are imported only when the CLI
starts (never at ``import rnafm``). A module listed here exposes click commands named in
``_COMMANDS``; adding a command means adding one line.
"""

from __future__ import annotations

import importlib
import logging

import click

from rnafm import __version__

# command name -> (module under rnafm.cli, attribute)
_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train_cmd"),
    "predict": ("predict", "predict_cmd"),
    "maps": ("maps", "maps_cmd"),
    "tile": ("slides", "tile_cmd"),
    "extract": ("slides", "extract_cmd"),
    "preprocess": ("slides", "preprocess_cmd"),
    "cohort": ("cohort", "cohort_cmd"),
    "genesets": ("cohort", "genesets_group"),
    "cv": ("evaluate", "cv_cmd"),
    "evaluate": ("evaluate", "evaluate_cmd"),
    "report": ("evaluate", "report_cmd"),
    "synth": ("demo", "synth_cmd"),
    "demo": ("demo", "demo_cmd"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[cmd_name]
        try:
            mod = importlib.import_module(f"rnafm.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"rnafm.cli.{module}":
                return None
            raise
        return getattr(mod, attr, None)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnafm")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """rnafm: predict bulk RNA-seq with uncertainty from H&E whole-slide images."""
    level = logging.WARNING - 10 * min(verbose, 2)  # default warnings; -v info; -vv debug
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True
    )


def main() -> None:
    """Console-script entry point; user errors exit with status 2 and a one-line message."""
    from rnafm.errors import RnafmError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(130) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except RnafmError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(2) from None
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
