"""Keys and values of recent prompts, reused by later prompts that start the same way.

Most traffic to a fine-tuned task shares one long system prompt (and the chat template around it), so the
first positions of most prompts are the same tokens. A position's keys and values depend only on the
tokens up to it, so a new prompt that shares its first n tokens with a stored one (same model, same
adapter) can copy those n positions and compute only the rest. Entries are whole prompts: the shared part
is found at lookup as the longest common prefix, so no one has to say where the system prompt ends.
Bounded by bytes, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

MIN_SHARED = 16  # fewer shared tokens than this are cheaper to recompute than to look up and copy


@dataclass
class Entry:
    tokens: torch.Tensor  # [n] int64
    kv: list  # per layer (keys, values), [kv heads, n, head dim]
    nbytes: int


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple[str, int], Entry] = OrderedDict()  # (adapter, id) -> entry
        self._next = 0
        self.hits = self.reused_tokens = 0

    def lookup(self, adapter: str, prompt: list[int]) -> tuple[Entry | None, int]:
        """The stored entry sharing the longest prefix with `prompt`, and how many tokens it shares (at most
        len(prompt) - 1: the last position is always computed, for its logits)."""
        if not self.entries or len(prompt) <= MIN_SHARED:
            return None, 0
        ids = torch.tensor(prompt)
        best, best_n, best_key = None, 0, None
        for key, entry in self.entries.items():
            if key[0] != adapter:
                continue
            n = min(len(entry.tokens), len(ids) - 1)
            differ = (entry.tokens[:n] != ids[:n]).nonzero()
            shared = int(differ[0]) if len(differ) else n
            if shared > best_n:
                best, best_n, best_key = entry, shared, key
        if best_n < MIN_SHARED:
            return None, 0
        self.entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best_n
        return best, best_n

    def store(self, adapter: str, prompt: list[int], kv: list) -> None:
        """Keep this prompt's keys and values (skipped when too short, or too big for the cache at all)."""
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if len(prompt) <= MIN_SHARED or nbytes > self.max_bytes:
            return
        for key, entry in self.entries.items():  # a prompt seen again replaces its older copy
            if key[0] == adapter and len(entry.tokens) == len(prompt) and entry.tokens.tolist() == prompt:
                self._drop(key)
                break
        while self.bytes + nbytes > self.max_bytes:
            self._drop(next(iter(self.entries)))
        self._next += 1
        self.entries[(adapter, self._next)] = Entry(torch.tensor(prompt), kv, nbytes)
        self.bytes += nbytes

    def forget(self, adapter: str) -> None:
        """Drop an adapter's entries (it was unloaded: a new adapter of the same name may differ)."""
        for key in [k for k in self.entries if k[0] == adapter]:
            self._drop(key)

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _drop(self, key) -> None:
        self.bytes -= self.entries.pop(key).nbytes
