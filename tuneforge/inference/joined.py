"""Linear layers that read the same input, joined into one: q/k/v, and an MLP's gate/up.

A decode step of a small model on a CPU is a couple of hundred small matrix calls; each call has a fixed
cost (a low-bit kernel also converts its input once per call), so three calls on one input cost more than
one call of the three stacked (measured with 8-bit kernels: a step's matrix work at one row went from ~12
to ~10 ms). `join` stacks the layers' weights into one linear layer and puts `Part`s in the members' places,
so the weights are held once; the slot decoder calls the joined layer, and the model's own forward
(scoring prompts) still works through the parts, at the cost of computing the whole joined layer per
part. Joining comes before quantize.py swaps the linear layers, which then swaps the joined one.
multi_lora applies the members' adapters to the joined layer in one go.

Stacking changes no arithmetic: each output is the same dot product (float32 outputs were bit-identical
in our checks, and greedy decoding still equals `generate`).
"""

from __future__ import annotations

import torch
from torch import nn


class Joined(nn.Module):
    """The stacked layer; `names` are the members' module names, `sizes` their output widths, in order."""

    def __init__(self, layer: nn.Module, names: list[str], sizes: list[int]):
        super().__init__()
        self.layer, self.names, self.sizes = layer, names, sizes
        self.in_features, self.out_features = layer.in_features, sum(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class Part(nn.Module):
    """One member's slice of a joined layer, for code that calls the member on its own."""

    def __init__(self, joined: Joined, start: int, end: int, path: str):
        super().__init__()
        self.whole = [joined]  # a list: the joined layer is registered where it was put, not here too
        self.start, self.end, self.path = start, end, path  # path: the joined layer's name in the model
        self.in_features, self.out_features = joined.in_features, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.whole[0](x)[..., self.start:self.end].contiguous()


def join(model: nn.Module, parent: nn.Module, attrs: list[str], name: str) -> nn.Module:
    """Join `parent`'s linear layers `attrs` into `parent.<name>`; the members become parts of it. Joined
    already (another decoder on the same model): nothing changes."""
    if hasattr(parent, name):
        return getattr(parent, name)
    paths = {id(m): n for n, m in model.named_modules()}
    members = [getattr(parent, a) for a in attrs]
    joined = Joined(_stack(members), [paths[id(m)] for m in members], [m.out_features for m in members])
    setattr(parent, name, joined)
    path = f"{paths[id(parent)]}.{name}".lstrip(".")
    start = 0
    for attr, size in zip(attrs, joined.sizes):
        setattr(parent, attr, Part(joined, start, start + size, path))
        start += size
    return joined


def _stack(members: list[nn.Module]) -> nn.Linear:
    if any(type(m) is not nn.Linear for m in members) or len({m.in_features for m in members}) != 1:
        raise ValueError("only float linear layers on one input can be joined (join before quantizing)")
    first = members[0]
    out = nn.Linear(first.in_features, sum(m.out_features for m in members), bias=False,
                    device=first.weight.device, dtype=first.weight.dtype)
    out.weight = nn.Parameter(torch.cat([m.weight.detach() for m in members]), requires_grad=False)
    if any(m.bias is not None for m in members):
        out.bias = nn.Parameter(torch.cat([m.bias.detach() if m.bias is not None else
                                           m.weight.new_zeros(m.out_features) for m in members]),
                                requires_grad=False)
    return out
