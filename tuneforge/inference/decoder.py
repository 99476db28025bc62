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
- the layer's own modules do the matrix work, so what replaces a linear layer (quantize's kernels) works
  here unchanged; q/k/v and the MLP's gate/up are joined into one layer each first (joined.py: fewer,
  larger matrix calls; the decoder then runs the rotary embedding once over queries and keys together),
  and multi_lora applies adapters to the joined layers.

Covers llama, mistral (without a sliding window), qwen2, qwen3 and Gemma 3's text model (sliding-window
layers, sandwich norms). Greedy decoding in float32 gives the same tokens as `model.generate`
(tests/test_engine.py checks it for llama and Gemma 3). Other models go through their own forward in
`padded_batch.py`; `supported` says why.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.inference.joined import Joined, join

FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma3_text"}
_POSITION_ONLY_ROPE = {"default", "linear", "llama3", "yarn"}  # tables that depend on the position alone
_BLOCK = 256  # cache capacity grows in steps of this many positions
FULL, SLIDING = "full_attention", "sliding_attention"
_LLAMA_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}


def supported(model) -> str | None:
    """None when `SlotDecoder` can run this model, else why not."""
    cfg = model.config
    if cfg.model_type not in FAMILIES:
        return f"model type {cfg.model_type}"
    if getattr(cfg, "use_sliding_window", False) or (cfg.model_type == "mistral" and cfg.sliding_window):
        return "sliding-window attention on every layer"
    if any(t not in (FULL, SLIDING) for t in _layer_types(cfg)):
        return f"layer types {sorted(set(_layer_types(cfg)))}"
    for name in ("attn_logit_softcapping", "final_logit_softcapping", "use_bidirectional_attention"):
        if getattr(cfg, name, None):
            return name
    rope = getattr(model.model.rotary_emb, "rope_type", "default")
    kinds = set(rope.values()) if isinstance(rope, dict) else {rope}
    if kinds - _POSITION_ONLY_ROPE:
        return f"rope type {sorted(kinds - _POSITION_ONLY_ROPE)}"
    return None


def _layer_types(cfg) -> list[str]:
    return list(getattr(cfg, "layer_types", None) or [FULL] * cfg.num_hidden_layers)


class SlotDecoder:
    """Prefills and decodes sequences held in cache slots; one thread only (the engine's).

    Layers are llama's (norm, attention, residual, norm, MLP, residual) or Gemma 3's "sandwich" (each block's
    output normed again before the residual; some layers attend within a sliding window, with their own
    rotary table); the layer's own norm modules run, so their arithmetic is the model's."""

    def __init__(self, model, max_rows: int, context: int):
        self.model, self.max_rows, self.context = model, max_rows, context
        inner, cfg = model.model, model.config
        self.layers = list(inner.layers)
        self.embed, self.norm, self.rotary = inner.embed_tokens, inner.norm, inner.rotary_emb
        self.kinds = _layer_types(cfg)
        self.window = getattr(cfg, "sliding_window", None) if SLIDING in self.kinds else None
        self.sandwich = hasattr(self.layers[0], "pre_feedforward_layernorm")
        self._typed_rotary = "layer_type" in inspect.signature(self.rotary.forward).parameters
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.scale = attn.scaling
        self.qk_norm = hasattr(attn, "q_norm")
        p = self.embed.weight
        self.dtype, self.device = p.dtype, p.device
        for layer in self.layers:
            join(model, layer.self_attn, ["q_proj", "k_proj", "v_proj"], "joined_qkv")
            join(model, layer.mlp, ["gate_proj", "up_proj"], "joined_gate_up")
        self.keys: list[torch.Tensor] = []  # per layer [rows, kv heads, capacity, head dim]
        self.values: list[torch.Tensor] = []
        self.rows = self.capacity = 0
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # layer type -> cos, signed sin
        self._plans: list[_LayerPlan] = []
        self._plan_of: list[tuple] = []  # (a module's children, name, the child the plans were made from)

    # --- the cache
    def reserve(self, rows: int, length: int) -> None:
        """Room for `rows` sequences of up to `length` positions (grows; what is stored is kept)."""
        length = min(length, self.context)
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = self.rows if rows <= self.rows else min(self.max_rows, max(rows, 2 * self.rows))
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
        if not self._tables or next(iter(self._tables.values()))[0].shape[0] < new_cap:
            self._make_tables(new_cap)

    def _make_tables(self, length: int) -> None:
        positions = torch.arange(length, device=self.device)[None]
        half = self.head_dim // 2
        for kind in set(self.kinds):
            extra = (kind,) if self._typed_rotary else ()
            cos, sin = self.rotary(self.embed.weight[:1], positions, *extra)
            # rotate_half(x) * sin == roll(x, half) * sin with the first half's sign flipped (exactly)
            self._tables[kind] = cos[0], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)

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
        end = start + len(ids)
        tokens = torch.tensor([ids], device=self.device)
        queries = torch.arange(start, end, device=self.device)
        rotary = {kind: (cos[start:end][None, :, None], sin[start:end][None, :, None])
                  for kind, (cos, sin) in self._tables.items()}
        masks = self._masks(queries[:, None], end)
        masks = {kind: m[None, None] for kind, m in masks.items()}

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.keys[i][row, :, start:end] = k[0]
            self.values[i][row, :, start:end] = v[0]
            return self.keys[i][row:row + 1, :, :end], self.values[i][row:row + 1, :, :end]

        return self._forward(tokens, rotary, masks, write)[0]

    @torch.no_grad()
    def decode(self, ids: list[int], positions: list[int]) -> torch.Tensor:
        """One token for each of rows 0..len(ids)-1, at its own position; logits [rows, vocab]."""
        b = len(ids)
        tokens = torch.tensor(ids, device=self.device)[:, None]
        width = max(positions) + 1
        if b == 1:  # views instead of indexing; one row sees every key it has (no mask) unless a window cuts
            p = width - 1
            rotary = {kind: (cos[None, p:width, None], sin[None, p:width, None])
                      for kind, (cos, sin) in self._tables.items()}
            masks = {FULL: None}
            if self.window:
                query = torch.tensor([[p]], device=self.device)
                masks[SLIDING] = self._masks(query, width)[SLIDING][:, None, None] if width > self.window else None
        else:
            pos = torch.tensor(positions, device=self.device)
            rotary = {kind: (cos[pos][:, None, None], sin[pos][:, None, None])
                      for kind, (cos, sin) in self._tables.items()}
            masks = {kind: m[:, None, None] for kind, m in self._masks(pos[:, None], width).items()}
            rows = torch.arange(b, device=self.device)

        def write(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if b == 1:  # a slice is cheaper than indexing by tensors
                self.keys[i][:1, :, p:width] = k
                self.values[i][:1, :, p:width] = v
            else:
                self.keys[i][rows, :, pos] = k[:, :, 0]
                self.values[i][rows, :, pos] = v[:, :, 0]
            return self.keys[i][:b, :, :width], self.values[i][:b, :, :width]

        return self._forward(tokens, rotary, masks, write)

    def _masks(self, queries: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
        """Which keys each query sees, per layer type: the ones up to it (and, sliding, within the window)."""
        keys = torch.arange(width, device=self.device)[None, :]
        causal = keys <= queries
        masks = {FULL: causal}
        if self.window:
            masks[SLIDING] = causal & (keys > queries - self.window)
        return masks

    def _forward(self, tokens, rotary, masks, write) -> torch.Tensor:
        b, t = tokens.shape
        x = self.embed(tokens)
        gqa = self.n_heads != self.n_kv
        half = self.head_dim // 2
        nq, nqk = self.n_heads, self.n_heads + self.n_kv
        for i, (kind, plan) in enumerate(zip(self.kinds, self._plan())):
            h = plan.input_norm(x)
            qkv = plan.qkv(h).view(b, t, nqk + self.n_kv, self.head_dim)  # heads: queries, keys, values
            if plan.q_norm is not None:
                qk = torch.cat([plan.q_norm(qkv[:, :, :nq]), plan.k_norm(qkv[:, :, nq:nqk])], dim=2)
            else:
                qk = qkv[:, :, :nqk]
            cos, sin = rotary[kind]
            qk = qk * cos + qk.roll(half, -1) * sin
            q, k = qk[:, :, :nq].transpose(1, 2), qk[:, :, nq:].transpose(1, 2)
            keys, values = write(i, k, qkv[:, :, nqk:].transpose(1, 2))
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=masks[kind], scale=self.scale,
                                                 enable_gqa=gqa)
            out = plan.o(out.transpose(1, 2).reshape(b, t, -1))
            if self.sandwich:
                x = x + plan.post_norm(out)
                x = x + plan.post_ff_norm(self._mlp(plan, plan.pre_ff_norm(x)))
            else:
                x = x + out
                x = x + self._mlp(plan, plan.post_norm(x))
        return self.model.lm_head(self.norm(x[:, -1]))  # looked up here: quantize.py may have swapped it

    @staticmethod
    def _mlp(plan, h: torch.Tensor) -> torch.Tensor:
        gate, up = plan.gate_up(h).split(plan.split, dim=-1)
        return plan.down(plan.act(gate) * up)

    def _plan(self) -> list[_LayerPlan]:
        """Each layer's parts as plain callables (a module call costs microseconds of Python, ~10 per layer
        per step: ~15% of a one-row step of a small model); rebuilt when a linear layer was swapped
        (quantize.py, multi_lora). The check reads the modules' own dicts: nn.Module's attribute lookup
        would cost more than it saves."""
        if not self._plan_of or any(where[name] is not module for where, name, module in self._plan_of):
            self._plans = [_LayerPlan(layer, self.dtype) for layer in self.layers]
            self._plan_of = [(parent._modules, name, parent._modules[name]) for layer in self.layers
                             for parent, name in ((layer.self_attn, "joined_qkv"), (layer.self_attn, "o_proj"),
                                                  (layer.mlp, "joined_gate_up"), (layer.mlp, "down_proj"))]
        return self._plans


class _LayerPlan:
    """One decoder layer's norms, linear layers and activation as callables with the modules' arithmetic."""

    def __init__(self, layer, dtype: torch.dtype):
        attn, mlp = layer.self_attn, layer.mlp
        norm = lambda name: _norm(getattr(layer, name), dtype) if hasattr(layer, name) else None  # noqa: E731
        self.input_norm, self.post_norm = norm("input_layernorm"), norm("post_attention_layernorm")
        self.pre_ff_norm, self.post_ff_norm = norm("pre_feedforward_layernorm"), norm("post_feedforward_layernorm")
        self.q_norm = _norm(attn.q_norm, dtype) if hasattr(attn, "q_norm") else None
        self.k_norm = _norm(attn.k_norm, dtype) if hasattr(attn, "k_norm") else None
        self.qkv, self.o = _linear(attn.joined_qkv), _linear(attn.o_proj)
        self.gate_up, self.down = _linear(mlp.joined_gate_up), _linear(mlp.down_proj)
        self.split = mlp.down_proj.in_features
        self.act = F.silu if type(mlp.act_fn) is nn.SiLU else mlp.act_fn.forward


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)  # a profiler's, say: run them


def _linear(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if _hooked(module):
        return module
    if isinstance(module, Joined):
        return _linear(module.layer)
    if type(module) is nn.Linear:
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    return module.forward  # quantize.py's layers, multi_lora's wrappers: their forward, without the call machinery


def _norm(module: nn.Module, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The RMS norms of the supported families as one `F.rms_norm` call, which computes them with the same
    operations in the same order (float32 results are bit-identical: tests/test_engine.py's greedy checks);
    any other module: its forward."""
    if _hooked(module):
        return module
    if dtype != torch.float32 or module.weight.dtype != torch.float32:
        return module.forward
    name, shape = type(module).__name__, module.weight.shape
    if name in _LLAMA_NORMS and hasattr(module, "variance_epsilon"):
        weight, eps = module.weight.detach(), module.variance_epsilon
        return lambda x: F.rms_norm(x, shape, weight, eps)
    if name == "Gemma3RMSNorm":
        scale, eps = 1.0 + module.weight.detach(), module.eps  # the module adds 1 per call: the same sum
        return lambda x: F.rms_norm(x, shape, scale, eps)
    return module.forward
