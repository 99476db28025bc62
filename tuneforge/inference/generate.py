"""Batched generation for a base model with an optional adapter: what `chat`, `generate` and evals use.

Prompts are rendered by `tuneforge.data.render.encode_prompt`, the same renderer training uses.
Batches are formed from prompts of similar length (less padding), left-padded, and decoded greedily
unless a temperature is given; generation stops at every end-of-turn token the model knows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tuneforge.data.render import encode_prompt
from tuneforge.errors import UserError
from tuneforge.models import registry
from tuneforge.models.loading import compute_dtype, default_device, load_model, load_tokenizer, stop_token_ids
from tuneforge.progress import Callback, Event, ignore


@dataclass
class Prompt:
    messages: list[dict]
    tools: list[dict] | None = None


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


def drop_final_answer(messages: list[dict]) -> list[dict]:
    """A conversation's prompt: everything before its final assistant turn, if it ends with one."""
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


class Generator:
    """One loaded model (an adapter, if any, merged into its base) that answers prompts in batches."""

    def __init__(self, model: str, adapter: str | None = None, device: str | None = None, on_event: Callback = ignore):
        ref = registry.resolve(model, lambda m: on_event(Event("message", m)))
        if adapter and ref.adapter:
            raise UserError(f"{model} is already an adapter: pass it as --model or as --adapter, not both")
        adapter_path = adapter or ref.adapter
        if adapter_path is not None:
            adapter_ref = registry.resolve(str(adapter_path))
            if adapter_ref.adapter is None:
                raise UserError(f"{adapter_path} is not an adapter folder (no adapter_config.json)")
            adapter_path = adapter_ref.adapter
        self.device = device or default_device()
        self.tokenizer = load_tokenizer(ref.base)
        model_obj = load_model(ref.base, dtype=compute_dtype(self.device), device=self.device)
        if adapter_path is not None:
            from peft import PeftModel

            # Merging once makes every later token as cheap as the base model's.
            model_obj = PeftModel.from_pretrained(model_obj, adapter_path).merge_and_unload()
        self.model = model_obj.eval()
        self.stop_ids = stop_token_ids(self.model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]

    def complete(
        self, prompts: list[Prompt], params: SamplingParams | None = None, batch_size: int = 16,
        on_event: Callback = ignore,
    ) -> list[str]:
        """The generated text of each prompt, in the order given."""
        params = params or SamplingParams()
        encoded = [encode_prompt(self.tokenizer, p.messages, p.tools) for p in prompts]
        outputs: list[str] = [""] * len(prompts)
        done = 0
        on_event(Event("start", "generating", total=len(prompts)))
        for batch in _length_batches(encoded, batch_size):
            texts = self._generate([encoded[i] for i in batch], params)
            for i, text in zip(batch, texts):
                outputs[i] = text
            done += len(batch)
            on_event(Event("progress", step=done, total=len(prompts)))
        return outputs

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[str]:
        """Text pieces of one answer as they are generated (for the interactive chat)."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        params = params or SamplingParams()
        ids = torch.tensor([encode_prompt(self.tokenizer, prompt.messages, prompt.tools)], device=self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(params) | {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        thread = Thread(target=self.model.generate, kwargs=kwargs | {"streamer": streamer})
        thread.start()
        yield from streamer
        thread.join()

    def _generate_kwargs(self, params: SamplingParams) -> dict:
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sample = params.temperature > 0
        kwargs = dict(
            max_new_tokens=params.max_new_tokens, do_sample=sample, eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
        )
        if sample:
            kwargs |= dict(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs |= dict(temperature=None, top_p=None, top_k=None)
        return kwargs

    @torch.no_grad()
    def _generate(self, batch: list[list[int]], params: SamplingParams) -> list[str]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=self.device)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **self._generate_kwargs(params))
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


def _length_batches(encoded: list[list[int]], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
