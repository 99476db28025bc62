"""The SDK wrapper's on-disk outbox: every batch of records is written here before it is sent, and deleted
once the platform has it. A batch survives the platform being down, the app exiting, or the app being
killed mid-send; the record ids make a second delivery harmless.

Files are `{time_ns}-{pid}-{rand}.jsonl`. A sender claims one by renaming it to `*.sending-{pid}` (atomic, so
two processes sharing the folder never send the same file at once); claims of dead processes are reclaimed.
Batches the platform refused (a bad key, say) move to `rejected/` to be looked at, not retried forever.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any


class Spool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._reclaim()

    def write(self, records: list[dict[str, Any] | str], before: Path | None = None) -> Path:
        """One batch: records as dicts or as JSON text already. `before`: name it to sort just before that
        batch (a split batch keeps its place in the order)."""
        stamp = int(before.name.split("-", 1)[0]) - 1 if before is not None else time.time_ns()
        name = f"{stamp}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "w") as f:
            f.writelines((r if isinstance(r, str) else json.dumps(r, separators=(",", ":"))) + "\n" for r in records)
        os.replace(tmp, self.folder / name)
        return self.folder / name

    def pending(self) -> list[Path]:
        """Unclaimed batches, oldest first."""
        return sorted(self.folder.glob("*.jsonl"))

    def claim(self, path: Path) -> tuple[Path, list[bytes]] | None:
        """Take a batch to send: (its claimed path, its records as JSON lines), or None if already taken."""
        claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:  # another process took it
            return None
        return claimed, [line for line in claimed.read_bytes().splitlines() if line.strip()]

    def done(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def release(self, claimed: Path) -> None:
        os.rename(claimed, claimed.with_name(claimed.name.split(".sending-")[0]))

    def reject(self, claimed: Path) -> Path:
        (self.folder / "rejected").mkdir(exist_ok=True)
        target = self.folder / "rejected" / claimed.name.split(".sending-")[0]
        os.rename(claimed, target)
        return target

    def _reclaim(self) -> None:
        for path in self.folder.glob("*.jsonl.sending-*"):
            pid = path.name.rsplit("-", 1)[1]
            if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
                self.release(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
