"""Structured output: decoding constrained by a JSON grammar, so `response_format` JSON is always valid.

xgrammar compiles a JSON schema (or "any object" for `json_object`) against the tokenizer's vocabulary
and, per step, gives the set of tokens that keep the output a valid prefix. The engine masks the logits
with it before choosing a token, and stops the sequence once the value is complete. The only way to get
invalid JSON is to run out of `max_tokens` first; the finish reason then says "length".

Special tokens (chat markers and the like) are kept out of JSON strings: xgrammar would otherwise treat
them as ordinary text for byte-level vocabularies.
"""

from __future__ import annotations

import json
import threading

import torch

from tuneforge.errors import ConfigError, UserError


class Constraint:
    """One sequence's grammar state (used by the engine thread only)."""

    def __init__(self, matcher, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        self.matcher = matcher
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` with every token that would break the grammar set to -inf."""
        row = logits.clone().unsqueeze(0)
        self.matcher.fill_next_token_bitmask(self.bitmask, 0)
        self._xgr.apply_token_bitmask_inplace(row, self.bitmask.to(row.device))
        return row[0]

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"token {token} was chosen outside the grammar")

    def done(self) -> bool:
        return self.matcher.is_completed() or self.matcher.is_terminated()


class JsonGrammars:
    """Compiles and caches JSON grammars for one tokenizer."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        try:
            import xgrammar as xgr
        except ImportError:
            raise ConfigError(
                "response_format needs xgrammar for constrained decoding: pip install 'tuneforge[structured]'"
            ) from None
        self.vocab_size = vocab_size
        info = _tokenizer_info(xgr, tokenizer, vocab_size, stop_ids)
        self.compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._lock = threading.Lock()

    def constraint(self, schema: dict | None) -> Constraint:
        """A fresh constraint for a JSON schema; None means any JSON object (`json_object`)."""
        import xgrammar as xgr

        try:
            with self._lock:
                compiled = self.compiler.compile_json_schema(
                    json.dumps(schema if schema is not None else {"type": "object"}), any_whitespace=False,
                )
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"response_format.json_schema.schema is not a usable JSON schema: {exc}",
                            param="response_format") from None
        return Constraint(xgr.GrammarMatcher(compiled), self.vocab_size)


def _tokenizer_info(xgr, tokenizer, vocab_size: int, stop_ids: list[int]):
    meta = json.loads(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size).dump_metadata())
    vocab = [""] * vocab_size
    for token, i in tokenizer.get_vocab().items():
        if i < vocab_size:
            vocab[i] = token
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    for i in special - set(stop_ids):
        if i < vocab_size:
            vocab[i] = ""  # an empty string marks a special token: never allowed inside the grammar
    return xgr.TokenizerInfo(
        vocab, xgr.VocabType(meta["vocab_type"]), vocab_size=vocab_size, stop_token_ids=list(stop_ids),
        add_prefix_space=meta["add_prefix_space"],
    )
