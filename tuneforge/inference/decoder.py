"""A lean forward pass for llama-family models over a slot KV cache: what the engine decodes with.

Why not the model's own forward: on a CPU a decode step of a small model is a few milliseconds of matrix
work wrapped in a forward pass that costs as much again in Python and bookkeeping (masks rebuilt, rotary
tables recomputed, every layer's cache concatenated into a new tensor each step), and a batch whose
sequences started at different times must be left-padded to one width. Here:

- every running sequence owns one row ("slot") of a preallocated cache per layer, [slots, kv heads,
  capacity, head dim]; a new token's keys and values are written in place at its own position, so nothing
  is copied or re-padded per step. Rows stay packed from 0: when a sequence ends, the last row moves into
  its place (`move`), and the engine reorders its list the same way;
- the rotary tables come from the model's own rotary module once (so they are the same numbers), and one
  step is ~12 tensor ops per layer;
- the layer's own modules do the matrix work (`q_proj`, `mlp`, the norms' weights), so what wraps or
  replaces a linear layer (multi_lora's adapters, quantize's kernels) works here unchanged.

Greedy decoding in float32 gives the same tokens as `model.generate` (tests/test_engine.py checks it).
Models of another shape (sliding-window attention, other norms) go through the model's own forward in
`padded_batch.py`; `supported` says which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FAMILIES = {"llama", "mistral", "qwen2", "qwen3"}
_POSITION_ONLY_ROPE = {"default", "linear", "llama3", "yarn"}  # tables that depend on the position alone
_BLOCK = 256  # cache capacity grows in steps of this many positions


def supported(model) -> str | None:
    """None when `SlotDecoder` can run this model, else why not."""
    cfg = model.config
    if cfg.model_type not in FAMILIES:
        return f"model type {cfg.model_type}"
    if getattr(cfg, "use_sliding_window", False) or (cfg.model_type == "mistral" and cfg.sliding_window):
        return "sliding-window attention"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window layers"
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope not in _POSITION_ONLY_ROPE:
        return f"rope type {rope}"
    return None


class SlotDecoder:
    """Prefills and decodes sequences held in cache slots; one thread only (the engine's)."""

    def __init__(self, model, max_rows: int, context: int):
        self.model, self.max_rows, self.context = model, max_rows, context
        inner = model.model
        self.layers = list(inner.layers)
        self.embed, self.norm, self.head, self.rotary = inner.embed_tokens, inner.norm, model.lm_head, inner.rotary_emb
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = model.config.num_attention_heads
        self.n_kv = model.config.num_key_value_heads
        self.scale = attn.scaling
        self.qk_norm = hasattr(attn, "q_norm")
        p = self.embed.weight
        self.dtype, self.device = p.dtype, p.device
        self.keys: list[torch.Tensor] = []  # per layer [rows, kv heads, capacity, head dim]
        self.values: list[torch.Tensor] = []
        self.rows = self.capacity = 0
        self._cos = self._sin = None  # [positions, head dim]

    # --- the cache
    def reserve(self, rows: int, length: int) -> None:
        """Room for `rows` sequences of up to `length` positions (grows; what is stored is kept)."""
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = min(self.max_rows, max(rows, 2 * self.rows))
        new_cap = min(self.context, -(-max(length, self.capacity) // _BLOCK) * _BLOCK)
        shape = (new_rows, self.n_kv, new_cap, self.head_dim)
        for store in (self.keys, self.values):
            old = list(store)
            store.clear()
            for kept in old or [None] * len(self.layers):
                grown = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if kept is not None:
                    grown[: self.rows, :, : self.capacity] = kept
                store.append(grown)
        self.rows, self.capacity = new_rows, new_cap
        if self._cos is None or self._cos.shape[0] < new_cap:
            positions = torch.arange(new_cap, device=self.device)[None]
            cos, sin = self.rotary(self.embed.weight[:1], positions)
            half = self.head_dim // 2
            # rotate_half(x) * sin == roll(x, half) * sin with the first half's sign flipped (exactly)
            self._cos, self._sin = cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)

    def release(self) -> None:
        """Give the cache's memory back (nothing is running)."""
        self.keys, self.values, self.rows, self.capacity = [], [], 0, 0

    def move(self, src: int, dst: int, length: int) -> None:
        """Row `src`'s first `length` positions into row `dst` (to keep rows packed)."""
        for store in (self.keys, self.values):
            for t in store:
                t[dst, :, :length] = t[src, :, :length]

    def save(self, row: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of row's first `length` positions, per layer (for the prefix cache)."""
        return [(k[row, :, :length].clone(), v[row, :, :length].clone()) for k, v in zip(self.keys, self.values)]

    def load(self, row: int, saved: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        for (k, v), kc, vc in zip(saved, self.keys, self.values):
            kc[row, :, :length] = k[:, :length]
            vc[row, :, :length] = v[:, :length]

    # --- forward
    @torch.no_grad()
    def prefill(self, row: int, ids: list[int], start: int) -> torch.Tensor:
        """Run `ids` at positions start.. of row `row` (positions before `start` already cached); the last
        position's logits [vocab]."""
        n = len(ids)
        end = start + n
        tokens = torch.tensor([ids], device=self.device)
        cos, sin = self._cos[start:end][None, None], self._sin[start:end][None, None]
        key_pos = torch.arange(end, device=self.device)
        mask = (key_pos[None, :] <= torch.arange(start, end, device=self.device)[:, None])[None, None]

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.keys[i][row, :, start:end] = k[0]
            self.values[i][row, :, start:end] = v[0]
            return self.keys[i][row:row + 1, :, :end], self.values[i][row:row + 1, :, :end]

        return self._forward(tokens, cos, sin, mask, write)[0]

    @torch.no_grad()
    def decode(self, ids: list[int], positions: list[int]) -> torch.Tensor:
        """One token for each of rows 0..len(ids)-1, at its own position; logits [rows, vocab]."""
        b = len(ids)
        tokens = torch.tensor(ids, device=self.device)[:, None]
        pos = torch.tensor(positions, device=self.device)
        width = max(positions) + 1
        cos, sin = self._cos[pos][:, None, None], self._sin[pos][:, None, None]
        mask = (torch.arange(width, device=self.device)[None, :] <= pos[:, None])[:, None, None]
        rows = torch.arange(b, device=self.device)

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.keys[i][rows, :, pos] = k[:, :, 0]
            self.values[i][rows, :, pos] = v[:, :, 0]
            return self.keys[i][:b, :, :width], self.values[i][:b, :, :width]

        return self._forward(tokens, cos, sin, mask, write)

    def _forward(self, tokens, cos, sin, mask, write) -> torch.Tensor:
        b, t = tokens.shape
        x = self.embed(tokens)
        gqa = self.n_heads != self.n_kv
        half = self.head_dim // 2
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = _rms(x, layer.input_layernorm)
            q = attn.q_proj(h).view(b, t, -1, self.head_dim)
            k = attn.k_proj(h).view(b, t, -1, self.head_dim)
            v = attn.v_proj(h).view(b, t, -1, self.head_dim).transpose(1, 2)
            if self.qk_norm:
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + q.roll(half, -1) * sin
            k = k * cos + k.roll(half, -1) * sin
            keys, values = write(i, k, v)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=gqa)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))
            x = x + layer.mlp(_rms(x, layer.post_attention_layernorm))
        return self.head(_rms(x[:, -1], self.norm))


def _rms(x: torch.Tensor, norm) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
