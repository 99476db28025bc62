"""Choosing the next token of one sequence, and the log-probabilities a client may ask for.

Pure functions over one row of logits, so the engine, the naive baseline and tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TokenLogprob:
    """A chosen token's log-probability, with the `top` most likely alternatives at that position."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def new_generator(seed: int | None) -> torch.Generator:
    """A per-request random stream: a seed makes a request's sampling repeatable whatever else is batched."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def biased(logits: torch.Tensor, bias: dict[int, float]) -> torch.Tensor:
    """`logits` with OpenAI's `logit_bias` added (-100 bans a token in practice, 100 all but forces it)."""
    ids = torch.tensor(list(bias), device=logits.device)
    return logits.index_add(0, ids, torch.tensor(list(bias.values()), dtype=logits.dtype, device=logits.device))


def choose(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0; otherwise nucleus sampling from softmax(logits / temperature)."""
    if temperature < 1e-4:  # below this the distribution is one-hot in float32 anyway
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if not torch.isfinite(probs).all():
        return int(torch.argmax(logits))
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop = before >= top_p  # keep the smallest head whose mass reaches top_p...
        drop[0] = False  # ...and always the best token (a top_p below float32's range rounds to 0)
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def logprob_of(logprobs: torch.Tensor, token_id: int, top: int) -> TokenLogprob:
    """Log-probability of `token_id` in one row of log-softmaxed logits, with the `top` best alternatives."""
    best: list[tuple[int, float]] = []
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        best = [(int(i), float(v)) for i, v in zip(ids, values)]
    return TokenLogprob(token_id, float(logprobs[token_id]), best)


def stop_index(text: str, stops: list[str]) -> int:
    """Where the first stop string starts in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else -1


def safe_length(text: str, stops: list[str]) -> int:
    """How much of `text` can be streamed now: hold back a tail that may be the start of a stop string,
    and a trailing replacement character (half of a multi-byte character)."""
    end = len(text)
    if text.endswith("\ufffd"):
        end -= 1
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:k]):
                end = min(end, len(text[:end]) - k)
                break
    return max(end, 0)
