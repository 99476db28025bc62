"""Where tuneforge keeps things: the data dir (per user or per test) and the model cache (shared)."""

from __future__ import annotations

import os
from pathlib import Path

_chosen: Path | None = None


def use_data_dir(path: str | os.PathLike | None) -> None:
    """Set the data dir for this process (the CLI's --data-dir); None keeps the default."""
    global _chosen
    _chosen = Path(path).expanduser() if path else None


def data_dir() -> Path:
    """The data dir: --data-dir, else $TUNEFORGE_DATA_DIR, else ~/.tuneforge.

    Created private (0700): it holds key hashes, uploads and logged traffic. One that exists keeps its mode (it
    may be a folder the operator made and shares on purpose); the CLI's umask keeps what we write in it private."""
    raw = _chosen or os.environ.get("TUNEFORGE_DATA_DIR") or Path.home() / ".tuneforge"
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def model_cache() -> Path:
    """Materialized base models: $TUNEFORGE_MODEL_CACHE, else the data dir's models/ folder.

    The variable lets many data dirs (one per test, say) share one copy of each base model.
    """
    raw = os.environ.get("TUNEFORGE_MODEL_CACHE") or data_dir() / "models"
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
