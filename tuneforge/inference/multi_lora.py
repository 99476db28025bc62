"""Many LoRA adapters on one base model, each row of a batch through its own adapter, in three ops per layer.

PEFT can run a mixed-adapter batch (`adapter_names=`), but it loops over the adapters in every LoRA layer
(index the rows, two matmuls, scatter back), so its cost grows with the number of adapters in a batch; on
small models that per-op overhead is of the order of the base model's own work. Here every targeted linear
layer keeps all loaded adapters side by side, transposed for the matmuls: A as [in, slots x rank], B (with
the adapter's scaling folded in) as [slots x rank, out]. One forward computes

    y = base(x) + ((x @ A_all) * row_mask) @ B_all

where row_mask (one per batch, shared by every layer) keeps, for each row, only its own adapter's rank
block (all zeros for rows on the base model). Extra compute is batch x slots x rank x (in + out) per layer,
small next to the base layer; the number of ops does not grow with the number of adapters. (This is the
dense form of the segmented-gather kernels of Punica / S-LoRA, which suit GPUs with many adapters.) When
every row of a batch uses the same adapter (an eval, one client), that adapter's own A and B are used with
no mask: two matmuls and an add.

Reads PEFT adapter folders (adapter_config.json + adapter_model.safetensors) of plain LoRA on linear layers.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tuneforge.errors import UserError
from tuneforge.inference.joined import Part


class _Adapter:
    def __init__(self, folder: Path, dtype: torch.dtype, device):
        from safetensors.torch import load_file

        config = json.loads((folder / "adapter_config.json").read_text())
        unsupported = [k for k in ("use_dora", "modules_to_save", "alpha_pattern") if config.get(k)]
        if config.get("peft_type", "LORA") != "LORA" or unsupported:
            found = unsupported or config["peft_type"]
            raise UserError(f"{folder}: only plain LoRA adapters can be served (found {found})")
        alpha, rslora = config["lora_alpha"], config.get("use_rslora", False)
        state = load_file(str(folder / "adapter_model.safetensors"))
        self.weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                if "lora_embedding" in key or not key.endswith(".lora_B.weight"):
                    raise UserError(f"{folder}: weight {key} is not a LoRA linear weight; it cannot be served")
                continue
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = state[key.replace(".lora_A.", ".lora_B.")]
            rank = a.shape[0]
            scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
            self.weights[module] = (a.to(device, dtype), (b * scaling).to(device, dtype))
        self.rank = max((a.shape[0] for a, _ in self.weights.values()), default=0)


class _LoRALinear(nn.Module):
    """A base linear layer plus every loaded adapter's low-rank update for it."""

    def __init__(self, base: nn.Linear, owner: MultiLoRA):
        super().__init__()
        self.base, self.owner = base, [owner]  # a list, so the owner is not registered as a submodule
        self.in_features, self.out_features = base.in_features, base.out_features
        self.a: torch.Tensor | None = None  # [in, slots * rank]: every slot's A, transposed
        self.b: torch.Tensor | None = None  # [slots * rank, out]: every slot's B (scaled), transposed
        self.per_slot: list[tuple[torch.Tensor, torch.Tensor] | None] = []  # the same, one slot's own

    members = 1  # layers whose updates this one applies (a joined layer has several)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        owner = self.owner[0]
        if owner.single is not None:  # every row on one adapter: its own A and B, no mask
            pair = self.per_slot[owner.single]
            return y if pair is None else y + (x @ pair[0]) @ pair[1]
        if owner.mask is None or self.a is None:
            return y
        mask = owner.mask_for(self.members)
        width = mask.shape[1]  # only the slots in use this batch (they come first)
        low = (x @ self.a[:, :width]) * (mask if x.dim() == 2 else mask.unsqueeze(1))
        return y + low @ self.b[:width]


class _LoRAJoined(_LoRALinear):
    """A joined layer (joined.py: q/k/v or gate/up stacked) plus every loaded adapter's updates for all its
    members at once. The layout is `_LoRALinear`'s with each slot's block holding the members' ranks side by
    side: A [in, slots x members x rank], B [slots x members x rank, out], block-diagonal within a slot."""

    def __init__(self, base: nn.Module, owner: MultiLoRA):
        super().__init__(base, owner)
        self.names, self.sizes, self.members = base.names, base.sizes, len(base.names)


class MultiLoRA:
    """Adapters by name in a fixed number of slots; `rows(names)` sets which one each batch row uses."""

    def __init__(self, model: nn.Module, slots: int):
        self.model, self.slots = model, slots
        self.names: list[str | None] = [None] * slots
        self.adapters: dict[str, _Adapter] = {}
        self.layers: dict[str, _LoRALinear] = {}
        self.joined: dict[str, _LoRAJoined] = {}  # joined layers (joined.py) with a targeted member, by name
        self.rank = 0
        self.mask: torch.Tensor | None = None
        self._masks: dict[int, torch.Tensor] = {}  # the mask widened for joined layers, per member count
        self.single: int | None = None  # the slot every row of this batch uses, when they all use one
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device

    def load(self, name: str, folder: Path) -> None:
        if None not in self.names:
            raise RuntimeError("no free adapter slot: unload one first")
        adapter = _Adapter(folder, self.dtype, self.device)
        targets = {m: self._target(m, folder) for m in adapter.weights if m not in self.layers}  # all checked first
        for module, (parent, attr, base) in targets.items():  # so a bad adapter leaves no layer half-wrapped
            wrapper = _LoRALinear(base, self)
            wrapper.per_slot = [None] * self.slots
            setattr(parent, attr, wrapper)
            self.layers[module] = wrapper
            if isinstance(base, Part) and base.path not in self.joined:
                self._wrap_joined(base.path)
        self.adapters[name] = adapter
        self.names[self.names.index(None)] = name
        self.rank = max(self.rank, adapter.rank)
        self._rebuild()

    def _wrap_joined(self, path: str) -> None:
        parent_name, _, attr = path.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        wrapper = _LoRAJoined(getattr(parent, attr), self)
        wrapper.per_slot = [None] * self.slots
        setattr(parent, attr, wrapper)
        self.joined[path] = wrapper

    def mask_for(self, members: int) -> torch.Tensor:
        """This batch's row mask for a layer applying `members` layers' updates (one rank block each)."""
        if members == 1:
            return self.mask
        if members not in self._masks:
            rows, width = self.mask.shape
            per_slot = self.mask.view(rows, width // self.rank, self.rank)[:, :, :1]
            self._masks[members] = per_slot.expand(-1, -1, members * self.rank).reshape(rows, -1)
        return self._masks[members]

    def unload(self, name: str) -> None:
        self.names.remove(name)  # slots stay packed from 0, so a batch can use a prefix of them
        self.names.append(None)
        del self.adapters[name]
        self._rebuild()

    def __contains__(self, name: str) -> bool:
        return name in self.adapters

    @contextmanager
    def rows(self, names: list[str | None]):
        """Within the block, batch row i goes through adapter names[i] (None: the base model alone)."""
        if all(n is None for n in names) or not self.rank:
            yield
            return
        if all(n == names[0] for n in names):
            self.single = self.names.index(names[0])
            try:
                yield
            finally:
                self.single = None
            return
        used = max(self.names.index(n) for n in names if n is not None) + 1
        mask = torch.zeros(len(names), used * self.rank, dtype=self.dtype, device=self.device)
        for i, name in enumerate(names):
            if name is not None:
                s = self.names.index(name)
                mask[i, s * self.rank:(s + 1) * self.rank] = 1
        self.mask, self._masks = mask, {}
        try:
            yield
        finally:
            self.mask, self._masks = None, {}

    def _target(self, module: str, folder: Path):
        """(parent, attribute, linear layer) for a module an adapter targets; UserError if it cannot be one."""
        parent_name, _, attr = module.rpartition(".")
        try:
            parent = self.model.get_submodule(parent_name)
            base = getattr(parent, attr)
        except AttributeError:
            raise UserError(f"{folder}: the base model has no layer {module} (trained on another base?)") from None
        if not isinstance(base, nn.Linear) and not hasattr(base, "in_features"):  # or a quantize.py layer
            raise UserError(f"{folder}: {module} is not a linear layer; only LoRA on linear layers can be served")
        return parent, attr, base

    def _rebuild(self) -> None:
        """Restack every layer's A and B over the slots (on load and unload only, never per request)."""
        r = self.rank
        for module, layer in self.layers.items():
            base = layer.base
            a = torch.zeros(base.in_features, self.slots * r, dtype=self.dtype, device=self.device)
            b = torch.zeros(self.slots * r, base.out_features, dtype=self.dtype, device=self.device)
            layer.per_slot = []
            for s, name in enumerate(self.names):
                if name is None or module not in self.adapters[name].weights:
                    layer.per_slot.append(None)
                    continue
                wa, wb = self.adapters[name].weights[module]
                a[:, s * r:s * r + wa.shape[0]] = wa.T
                b[s * r:s * r + wb.shape[1]] = wb.T
                layer.per_slot.append((wa.T.contiguous(), wb.T.contiguous()))
            layer.a, layer.b = a, b
        for group in self.joined.values():
            self._rebuild_joined(group)

    def _rebuild_joined(self, group: _LoRAJoined) -> None:
        r, m = self.rank, group.members
        block = m * r  # one slot's columns: each member's rank side by side
        a = torch.zeros(group.base.in_features, self.slots * block, dtype=self.dtype, device=self.device)
        b = torch.zeros(self.slots * block, group.base.out_features, dtype=self.dtype, device=self.device)
        starts = [sum(group.sizes[:j]) for j in range(m)]
        group.per_slot = []
        for s, name in enumerate(self.names):
            weights = self.adapters[name].weights if name is not None else {}
            found = False
            for j, member in enumerate(group.names):
                if member in weights:
                    wa, wb = weights[member]
                    col = s * block + j * r
                    a[:, col:col + wa.shape[0]] = wa.T
                    b[col:col + wb.shape[1], starts[j]:starts[j] + group.sizes[j]] = wb.T
                    found = True
            group.per_slot.append(
                (a[:, s * block:(s + 1) * block].contiguous(), b[s * block:(s + 1) * block].contiguous())
                if found else None)
        group.a, group.b = a, b
