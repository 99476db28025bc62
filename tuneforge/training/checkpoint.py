"""Resumable checkpoints: trainable weights, optimizer, scheduler, RNG and step, written atomically.

A checkpoint folder is also a usable model: it holds the adapter (or full weights) and a manifest. Each write
goes through a temporary folder of its own (two writers never share one) and a rename; a caller's `may_write`
is asked before the write starts and again before the rename, and stops it by raising (a worker that no longer
holds its job: `tuneforge.jobs.context`).
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

STATE = "trainer_state.pt"


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:06d}"


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint (a crash mid-write leaves only a .tmp folder, which is ignored)."""
    root = out / "checkpoints"
    if not root.exists():
        return None
    done = sorted(p for p in root.glob("step-*") if ".tmp" not in p.name and (p / STATE).exists())
    return done[-1] if done else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write(out: Path, step: int, save_weights, state: dict, manifest: dict, keep: int,
          may_write: Callable[[], None] | None = None) -> Path:
    """Write checkpoint `step` via a temporary folder and a rename, then prune all but the newest `keep` (and
    the temporary folders that writers which stopped midway left)."""
    check = may_write or (lambda: None)
    check()
    final = checkpoint_dir(out, step)
    tmp = final.with_name(f"{final.name}.tmp-{secrets.token_hex(4)}")
    try:
        tmp.mkdir(parents=True)
        save_weights(tmp)
        torch.save(state, tmp / STATE)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        check()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    steps = sorted(p for p in final.parent.glob("step-*") if ".tmp" not in p.name)
    for old in [*steps[:-keep], *final.parent.glob("step-*.tmp*")]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read(path: Path) -> dict:
    return torch.load(path / STATE, weights_only=False)
