"""The typer application, shared options, and the one place user errors become one-line messages."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tuneforge import paths
from tuneforge.errors import TuneforgeError

PRIVATE = 0o077  # umask bits: nothing for group or others
console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="tuneforge", help="Turn an expensive general model into a cheap specialist.", no_args_is_help=True,
    pretty_exceptions_enable=False, add_completion=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="TUNEFORGE_DATA_DIR", help="Data folder (default ~/.tuneforge).",
                 show_default=False),
]


def use(data_dir: Path | None) -> None:
    """Every command calls this first with its --data-dir. What the process writes from here on is private to
    its user (files 0600, folders 0700): the data dir holds key hashes, uploads and logged traffic."""
    os.umask(os.umask(PRIVATE) | PRIVATE)
    paths.use_data_dir(data_dir)


def _quiet_libraries() -> None:
    """Our own progress bars say what is happening; the libraries' loading bars and notices only clutter."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gguf.*", category=UserWarning)


def main() -> None:
    """The `tuneforge` executable. Typer runs in standalone mode, so usage errors (an unknown command or
    option, a bad value) get its own usage message and exit 2, whichever click it vendors; our errors are
    one line and exit 1."""
    _quiet_libraries()
    from tuneforge.cli import commands  # noqa: F401  (registers the commands)

    try:
        app()  # exits: 0, a typer.Exit's code, 2 for usage errors, 1 for an abort
    except TuneforgeError as exc:
        from rich.markup import escape

        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
