"""What a merge writes beside its weights (`manifest.json`): the inputs with the hashes of their weights, the
config as given and as run, the engine and its version. A merged model can then be traced and re-made."""

from __future__ import annotations

import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_hashes: dict[tuple[str, int, float], str] = {}  # (file, size, mtime) -> sha256: a folder is hashed once


def folder_hash(folder: str | Path) -> str:
    """sha256 over a folder's weight files (names and contents, in name order)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES):
        h.update(f.name.encode())
        h.update(file_hash(f).encode())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _hashes:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def write(folder: Path, *, kind: str, inputs: list[dict], config: dict, engine: str, **extra) -> dict:
    manifest = {"kind": kind, "created_at": int(time.time()), "inputs": inputs, "config": config,
                "engine": {"name": engine, "version": version(engine)}, **extra}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def read(folder: str | Path) -> dict | None:
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None
