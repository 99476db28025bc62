"""The running batch on a `decoder.SlotDecoder`: each sequence in a cache row, prompts prefilled one at a
time after whatever prefix the `PrefixCache` already holds (a shared system prompt is computed once)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tuneforge.inference.decoder import SlotDecoder
from tuneforge.inference.prefix_cache import PrefixCache


class SlotBatch:
    prefill_together = False  # one prompt at a time: each gets its first token as soon as it is ready

    def __init__(self, decoder: SlotDecoder, rows: Callable, prefixes: PrefixCache | None):
        self.decoder, self.rows, self.prefixes = decoder, rows, prefixes
        self.count = 0  # rows in use: 0..count-1

    @torch.no_grad()
    def add(self, seqs: list) -> torch.Tensor:
        """Prefill `seqs` into the next free rows; their next-token logits [len(seqs), vocab]. Rows count
        as used only once every prefill has succeeded."""
        logits = []
        for j, seq in enumerate(seqs):
            row, prompt = self.count + j, seq.req.prompt_ids
            self.decoder.reserve(row + 1, len(prompt) + 1)
            entry, shared = self.prefixes.lookup(seq.adapter, prompt) if self.prefixes else (None, 0)
            if entry is not None:
                self.decoder.load(row, entry.kv, shared)
            with self.rows([seq.adapter]):
                logits.append(self.decoder.prefill(row, prompt[shared:], shared))
            if self.prefixes:
                self.prefixes.store(seq.adapter, prompt, self.decoder.save(row, len(prompt)))
        self.count += len(seqs)
        return torch.stack(logits)

    @torch.no_grad()
    def step(self, seqs: list) -> torch.Tensor:
        """One token for every running sequence (row i is seqs[i]); logits [rows, vocab]."""
        self.decoder.reserve(len(seqs), max(s.position for s in seqs) + 1)
        with self.rows([s.adapter for s in seqs]):
            return self.decoder.decode([s.next_token for s in seqs], [s.position for s in seqs])

    def remove(self, seqs: list, gone: set[int]) -> list[int]:
        """Drop rows `gone`, moving the last rows into the holes; the old indices of the rows kept, in their
        new order."""
        order = list(range(len(seqs)))
        for i in sorted(gone, reverse=True):  # every hole above i is filled already, so the last row is kept
            last = len(order) - 1
            if i != last:
                self.decoder.move(last, i, seqs[order[last]].position)
                order[i] = order[last]
            order.pop()
        self.count = len(order)
        if not order:
            self.decoder.release()
        return order

    def reset(self) -> None:
        self.count = 0
        self.decoder.release()
