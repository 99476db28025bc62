"""The command line as a user meets it: mistyped commands and options get typer's usage message and exit 2,
and `tuneforge train` offers every TrainConfig option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.training.config import TrainConfig

EXECUTABLE = Path(sys.executable).parent / "tuneforge"  # the console script the package installs


def run(command: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("command", [[str(EXECUTABLE)], [sys.executable, "-m", "tuneforge"]],
                         ids=["installed", "module"])
@pytest.mark.parametrize("args, problem", [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["train", "--bogus-flag"], "No such option: --bogus-flag"),
])
def test_usage_errors_print_usage_and_exit_2(command, args, problem):
    assert EXECUTABLE.exists(), "install the package (scripts/install) to get the `tuneforge` executable"
    proc = run(command, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Usage: " in proc.stderr and "tuneforge" in proc.stderr and problem in proc.stderr


def test_train_help_lists_every_train_config_option():
    proc = run([str(EXECUTABLE)], "train", "--help")
    assert proc.returncode == 0, proc.stderr
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in proc.stdout, f"{flag} missing from `tuneforge train --help`"
        assert field.description.split(";")[0].split(":")[0] in proc.stdout
