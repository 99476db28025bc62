"""The renderer: loss masks on exact tokens, and training == inference rendering."""

from __future__ import annotations

import pytest

from tuneforge.data.render import IGNORE, encode_example, encode_prompt

CONVERSATION = [
    {"role": "system", "content": "You route tickets."},
    {"role": "user", "content": "My card was charged twice."},
    {"role": "assistant", "content": "PAY-OPS"},
    {"role": "user", "content": "And my parcel is late."},
    {"role": "assistant", "content": "SHIP-LOG", "weight": 0},
    {"role": "user", "content": "Also, delete my data."},
    {"role": "assistant", "content": "LEGAL-PRIV"},
]


def trained_text(tokenizer, enc) -> list[str]:
    """Decode each run of consecutive trained tokens."""
    runs, current = [], []
    for tok, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_loss_covers_assistant_turns_and_end_of_turn_only(smollm2_tokenizer):
    enc = encode_example(smollm2_tokenizer, CONVERSATION)
    assert trained_text(smollm2_tokenizer, enc) == ["PAY-OPS<|im_end|>", "LEGAL-PRIV<|im_end|>"]
    assert [label for label in enc.labels if label != IGNORE] == [
        t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE
    ]


def test_training_prefix_is_the_inference_prompt(smollm2_tokenizer):
    enc = encode_example(smollm2_tokenizer, CONVERSATION)
    for i, m in enumerate(CONVERSATION):
        if m["role"] != "assistant":
            continue
        prompt = encode_prompt(smollm2_tokenizer, CONVERSATION[:i])
        assert enc.input_ids[: len(prompt)] == prompt
        answer = smollm2_tokenizer(m["content"], add_special_tokens=False)["input_ids"]
        assert enc.input_ids[len(prompt) : len(prompt) + len(answer)] == answer


def test_gemma_template_renders_gemma_turns_identically(tmp_path):
    from tuneforge.models import registry
    from tuneforge.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(registry.materialize("gemma-3-270m")))
    enc = encode_example(tokenizer, CONVERSATION)
    text = tokenizer.decode(enc.input_ids)
    assert text.startswith("<bos><start_of_turn>user\nYou route tickets.\n\nMy card was charged twice.<end_of_turn>\n")
    assert trained_text(tokenizer, enc) == ["PAY-OPS<end_of_turn>", "LEGAL-PRIV<end_of_turn>"]
    prompt = encode_prompt(tokenizer, CONVERSATION[:1 + 1])
    assert enc.input_ids[: len(prompt)] == prompt
    assert tokenizer.decode(prompt).endswith("<start_of_turn>model\n")


def test_tool_calls_and_tools_are_rendered_into_text_for_templates_without_tool_support(smollm2_tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
        {"role": "assistant", "content": "4 degrees."},
    ]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    enc = encode_example(smollm2_tokenizer, messages, tools)
    runs = trained_text(smollm2_tokenizer, enc)
    assert runs[0] == '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>'
    assert runs[1] == "4 degrees.<|im_end|>"
    assert '"name": "weather"' in smollm2_tokenizer.decode(encode_prompt(smollm2_tokenizer, messages[:1], tools))


def test_truncation_keeps_the_start(smollm2_tokenizer):
    full = encode_example(smollm2_tokenizer, CONVERSATION)
    short = encode_example(smollm2_tokenizer, CONVERSATION, max_length=20)
    assert short.input_ids == full.input_ids[:20] and short.labels == full.labels[:20]


@pytest.mark.parametrize("weight", [0, 1])
def test_weight_zero_turns_carry_no_loss(smollm2_tokenizer, weight):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": weight}]
    assert (encode_example(smollm2_tokenizer, messages).num_trained > 0) == bool(weight)
