"""The running batch for models `decoder.SlotDecoder` does not cover, through the model's own forward.

The batch keeps one transformers `DynamicCache`, left-padded: new sequences are merged in by padding the
shorter side, finished ones are dropped with `batch_select_indices`, and columns that became padding for
every row are cut off, so a long finished prompt does not cost the others. Slower than the slot cache (the
cache is concatenated every step, the mask rebuilt), but it runs any causal LM transformers can.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


class PaddedBatch:
    prefill_together = True  # waiting prompts are prefilled in one padded batch

    def __init__(self, model, forward, pad_id: int, device):
        self.forward, self.pad_id, self.device = forward, pad_id, device
        # transformers renamed `past_key_values` to `cache` during 5.x
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None

    @torch.no_grad()
    def add(self, seqs: list) -> torch.Tensor:
        """Prefill `seqs` together and append them to the batch; their next-token logits [len(seqs), vocab].
        The batch is only changed once the prefill has succeeded."""
        width = max(len(s.req.prompt_ids) for s in seqs)
        ids = [[self.pad_id] * (width - len(s.req.prompt_ids)) + s.req.prompt_ids for s in seqs]
        mask = torch.tensor([[0] * (width - len(s.req.prompt_ids)) + [1] * len(s.req.prompt_ids) for s in seqs],
                            device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.forward(
            [s.adapter for s in seqs], input_ids=torch.tensor(ids, device=self.device), attention_mask=mask,
            position_ids=positions, use_cache=True, logits_to_keep=1, **{self.cache_arg: cache},
        )
        self._merge(cache, mask)
        return out.logits[:, -1, :]

    def _merge(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)], dim=0)
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)], dim=0)
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)], dim=0)

    @torch.no_grad()
    def step(self, seqs: list) -> torch.Tensor:
        """One token for every running sequence; logits [rows, vocab]."""
        ids = torch.tensor([[s.next_token] for s in seqs], device=self.device)
        mask = torch.cat([self.mask, torch.ones(len(seqs), 1, dtype=self.mask.dtype, device=self.device)], dim=1)
        positions = torch.tensor([[s.position] for s in seqs], device=self.device)
        out = self.forward(
            [s.adapter for s in seqs], input_ids=ids, attention_mask=mask, position_ids=positions,
            use_cache=True, **{self.cache_arg: self.cache},
        )
        self.mask = mask
        return out.logits[:, -1, :]

    def remove(self, seqs: list, gone: set[int]) -> list[int]:
        """Drop rows `gone`; the old indices of the rows kept, in their new order."""
        keep = [i for i in range(len(seqs)) if i not in gone]
        if not keep:
            self.reset()
            return keep
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        lead = int((self.mask.cumsum(dim=1) == 0).sum(dim=1).min())
        if lead:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]
            self.mask = self.mask[:, lead:]
        return keep

    def reset(self) -> None:
        self.cache = self.mask = None


def _left_pad(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)
