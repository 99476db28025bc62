"""bench/gpu_check.py's orchestration: every stage ends as one JSON line, a hung one too (and its children die).

The stages themselves run on a GPU machine; `bench/gpu_check.py --device cpu --shapes tiny` runs them all here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(tmp_path: Path, budget: float = 60):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = argparse.Namespace(work=tmp_path, budget=budget, wheels=None, tail=200, device="cpu")
    return module.Check(args)


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_stage_result_is_its_result_line(tmp_path, capsys):
    check = _check(tmp_path)
    result = check.run("env", [sys.executable, "-c", "print('noise'); print('RESULT {\"x\": 1}')"])
    assert result["x"] == 1 and result["seconds"] >= 0
    assert _lines(capsys) == []


def test_a_hung_stage_and_its_children_are_killed_and_reported(tmp_path, capsys):
    check = _check(tmp_path)
    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            f" open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    assert check.run("serve", [sys.executable, "-c", hang], timeout=2) is None
    assert time.monotonic() - t0 < 10
    [line] = _lines(capsys)
    assert line["name"] == "serve" and not line["ok"] and "timed out" in line["error"] and "started" in line["tail"]
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()


def test_a_failed_stage_reports_its_output_tail_and_no_time_left_skips(tmp_path, capsys):
    check = _check(tmp_path)
    assert check.run("cli", [sys.executable, "-c", "raise SystemExit('out of memory')"]) is None
    check.deadline = time.monotonic()
    assert check.run("train:tiny", [sys.executable, "-c", "print(1)"]) is None
    failed, skipped = _lines(capsys)
    assert failed["error"] == "exit status 1" and "out of memory" in failed["tail"]
    assert skipped["skipped"] and skipped["name"] == "train:tiny"
