"""The engine's parts for speed: low-bit linear layers, the slot decoder on them, incremental detokenizing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tuneforge.inference import quantize
from tuneforge.inference.detokenize import TextStream


def on_4bit_grid(out: int, inp: int) -> torch.Tensor:
    """Weights a 4-bit group-of-32 format holds exactly (what a model converted from a Q4_1 GGUF has)."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (out, inp // 32, 32), generator=g).float()
    scale = torch.rand(out, inp // 32, 1, generator=g).to(torch.bfloat16).float() * 0.01
    low = (torch.randn(out, inp // 32, 1, generator=g) * 0.05).to(torch.bfloat16).float()
    return (q * scale + low).reshape(out, inp)


@pytest.mark.parametrize("rows", [1, 2, 7])
def test_low_bit_layers_compute_what_float32_does(rows):
    torch.manual_seed(0)
    linear = nn.Linear(96, 64, bias=True)
    with torch.no_grad():
        linear.weight.copy_(on_4bit_grid(64, 96))
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(rows))
    want = linear(x)
    fp16 = quantize.Fp16Linear(linear)(x)
    int4 = quantize.Int4Linear(linear)(x)
    assert fp16.shape == int4.shape == want.shape and int4.dtype == torch.float32
    assert (fp16 - want).abs().max() < 1e-3 * want.abs().max()
    # on the grid only bfloat16 costs precision: the small-batch kernel's activations, scales and zero points
    assert (int4 - want).abs().max() < 5e-2 * want.abs().max()
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # larger calls through a bfloat16 copy (oneDNN)
        bf16 = quantize.Int4Linear(linear, large="bf16")(x[None])[0]
        assert bf16.shape == want.shape and (bf16 - want).abs().max() < 2e-2 * want.abs().max()
        if rows > quantize.INT4_MAX_ROWS:
            assert not torch.equal(bf16, int4)  # not the fp16 copy's answer: the bfloat16 one ran
    off_grid = nn.Linear(96, 64)
    err = (quantize.Int4Linear(off_grid)(x) - off_grid(x)).abs().max() / off_grid(x).abs().max()
    assert 1e-4 < err < 0.2  # 4 bits lose something on arbitrary weights, but stay close


def test_large_calls_take_the_16_bit_copy_that_measured_faster(monkeypatch):
    assert quantize.large_call_kind((256, 128), rows=16, runs=3) in ("fp16", "bf16")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert quantize.large_call_kind((256, 128)) == "fp16"  # no oneDNN bfloat16: never chosen, nor timed


@pytest.mark.parametrize("mode", [None, "fp16", "int4"])
def test_joined_layers_give_each_members_output(mode):
    from tuneforge.inference.joined import Joined, Part, join

    torch.manual_seed(0)

    def block() -> nn.Module:
        b = nn.Module()
        b.a, b.b, b.c = nn.Linear(64, 32, bias=False), nn.Linear(64, 16, bias=True), nn.Linear(64, 48)
        return b

    model = block()
    x = torch.randn(2, 64)
    want = [model.a(x), model.b(x), model.c(x)]
    joined = join(model, model, ["a", "b", "c"], "abc")
    assert isinstance(model.abc, Joined) and joined.names == ["a", "b", "c"] and joined.sizes == [32, 16, 48]
    assert all(isinstance(getattr(model, n), Part) for n in "abc")
    if mode:  # quantizing after joining swaps the one joined layer, and the parts follow it
        assert quantize.apply(model, mode) == 1
    got = model.abc(x).split([32, 16, 48], dim=-1)
    for part, member in zip(got, want):
        if mode is None:
            assert torch.equal(part, member)  # the same dot products: stacking changes no arithmetic
        else:
            assert (part - member).abs().max() < {"fp16": 1e-3, "int4": 0.2}[mode] * member.abs().max()
    assert torch.equal(model.b(x), got[1])  # a member called on its own is its slice
    quantized = block()
    quantize.apply(quantized, "fp16")
    with pytest.raises(ValueError, match="before quantizing"):
        join(quantized, quantized, ["a", "b"], "ab")


def test_a_quantized_model_decodes_close_to_float32(tiny_model):
    from tuneforge.inference.decoder import SlotDecoder
    from tuneforge.models.loading import load_model

    prompt = [1, 50, 60, 70, 80, 90]
    logits = {}
    for mode in (None, "fp16", "int4"):
        model = load_model(str(tiny_model)).eval()
        dec = SlotDecoder(model, max_rows=2, context=64)  # joins q/k/v and gate/up, as the engine does first
        if mode:
            assert quantize.apply(model, mode) == 4 * 4 + 1  # every linear layer (joined), the LM head too
        dec.reserve(1, len(prompt) + 2)
        first = dec.prefill(0, prompt, 0)
        second = dec.decode([int(first.argmax())], [len(prompt)])[0]
        logits[mode] = torch.stack([first, second])
    for mode, tolerance in (("fp16", 1e-4), ("int4", 0.1)):
        cos = torch.nn.functional.cosine_similarity(logits[mode], logits[None], dim=-1)
        assert cos.min() > 1 - tolerance, (mode, cos)
    with pytest.raises(Exception, match="int4"):
        quantize.apply(load_model(str(tiny_model)), "int8")


def test_the_decoder_follows_layers_swapped_after_it_ran_and_runs_hooks(tiny_model):
    """The decoder calls layers through a plan of plain callables (no module-call overhead); a layer swapped
    later (quantizing, an adapter wrapping it) must be picked up, and a module with hooks is called as one."""
    from tuneforge.inference.decoder import SlotDecoder
    from tuneforge.models.loading import load_model

    prompt = [1, 50, 60, 70, 80, 90]

    def first_logits(dec):
        dec.reserve(1, len(prompt) + 1)
        return dec.prefill(0, prompt, 0)

    quantized_first = load_model(str(tiny_model)).eval()
    dec = SlotDecoder(quantized_first, max_rows=1, context=64)
    quantize.apply(quantized_first, "int4")
    want = first_logits(dec)

    model = load_model(str(tiny_model)).eval()
    calls = []
    model.model.layers[1].self_attn.o_proj.register_forward_hook(lambda *_: calls.append(1))
    dec = SlotDecoder(model, max_rows=1, context=64)
    as_float = first_logits(dec)
    assert len(calls) == 1
    quantize.apply(model, "int4")  # after the decoder ran: its plan must not keep the float layers
    got = first_logits(dec)
    assert not torch.equal(got, as_float) and torch.equal(got, want)


def test_text_streams_like_decoding_the_whole_answer(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = "Café ☕ naïve — 日本語 and 🎉 done.\n  indented {\"json\": [1, 2]}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tok)
    pieces = [stream.add(t) for t in ids]
    pieces.append(stream.flush())
    assert "".join(pieces) == stream.text == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)  # half a character is held back, never sent
    cut = TextStream(tok)
    for t in tok("🎉", add_special_tokens=False)["input_ids"][:1]:  # an answer cut mid-character
        assert cut.add(t) == ""
    assert cut.flush() == tok.decode(tok("🎉", add_special_tokens=False)["input_ids"][:1])


def test_the_cache_grows_in_length_without_growing_in_rows(tiny_model):
    from tuneforge.inference.decoder import SlotDecoder
    from tuneforge.models.loading import load_model

    dec = SlotDecoder(load_model(str(tiny_model)).eval(), max_rows=8, context=1024)
    dec.reserve(1, 10)
    dec.prefill(0, [1, 2, 3], 0)
    kept = dec.keys[0][0, :, :3].clone()
    dec.reserve(1, 600)
    assert (dec.rows, dec.capacity) == (1, 768) and torch.equal(dec.keys[0][0, :, :3], kept)
    dec.reserve(3, 600)
    assert dec.rows == 3
    dec.reserve(3, 5000)  # never past the context
    assert dec.capacity == 1024


def test_an_adapter_that_fails_to_load_leaves_the_loaded_ones_working(tiny_model, tmp_path):
    from safetensors.torch import save_file

    from tuneforge.errors import UserError
    from tuneforge.inference.multi_lora import MultiLoRA
    from tuneforge.models.loading import load_model

    def adapter(name: str, modules: list[str]):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "lora_alpha": 8}')
        state = {}
        for m in modules:
            key = f"base_model.model.{m}"
            state[f"{key}.lora_A.weight"] = torch.randn(4, 64)
            state[f"{key}.lora_B.weight"] = torch.randn(64 if "q_proj" in m else 32, 4)
        save_file(state, str(folder / "adapter_model.safetensors"))
        return folder

    model = load_model(str(tiny_model)).eval()
    lora = MultiLoRA(model, slots=2)
    lora.load("good", adapter("good", ["model.layers.0.self_attn.q_proj"]))
    with pytest.raises(UserError, match="no layer"):  # layer 0's k_proj is fine, layer 99 does not exist
        lora.load("bad", adapter("bad", ["model.layers.0.self_attn.k_proj", "model.layers.99.self_attn.q_proj"]))
    x = torch.randn(1, 3, 64)
    with lora.rows(["good"]):
        with_adapter = model.model.layers[0].self_attn.q_proj(x)
    assert not isinstance(model.model.layers[0].self_attn.k_proj, type(model.model.layers[0].self_attn.q_proj))
    assert not torch.allclose(with_adapter, model.model.layers[0].self_attn.q_proj.base(x))


def test_small_steps_take_the_thread_count_that_ran_faster():
    from tuneforge.inference.threads import EXPLORE, TRIALS, WINDOW, SmallStepThreads

    for fast in (1, 2):
        threads = SmallStepThreads(2)
        assert threads.for_small() == 1  # one thread until measured
        tried = []
        while threads.choice is None:
            n = threads.for_trial()
            tried.append(n)
            threads.record(n, 0.01 if n == fast else 0.02)
        assert threads.choice == threads.for_small() == fast
        assert tried[:4] == [1, 2, 1, 2] and sorted(tried) == [1] * TRIALS + [2] * TRIALS
    assert SmallStepThreads(1).choice == SmallStepThreads(1).for_trial() == 1  # nothing to choose on one core

    # a choice that the first steps got wrong is corrected: the other option is still tried now and then
    threads = SmallStepThreads(2)
    for _ in range(TRIALS):
        threads.record(1, 0.01)  # one thread looked faster at first (the server was busy, say)
        threads.record(2, 0.02)
    assert threads.choice == 1
    tried = []
    for _ in range(EXPLORE * (WINDOW + 1)):  # from now on two threads are the faster
        n = threads.for_trial()
        tried.append(n)
        threads.record(n, 0.01 if n == 2 else 0.015)
    assert threads.choice == 2 and threads.for_small() == 2
    assert tried[:EXPLORE - 1] == [1] * (EXPLORE - 1) and tried[EXPLORE - 1] == 2  # explored, not switched at once
    assert tried[-EXPLORE + 1:].count(1) <= 1  # and once switched, stays


def test_the_engine_measures_its_single_row_steps(tiny_model):
    import threading

    from tuneforge.inference.engine import Engine, Params, Request

    engine = Engine(str(tiny_model), max_batch=4)
    engine.stop_ids = set()  # random weights: run to the token budget
    done = threading.Event()
    engine.submit(Request([1, 50, 60], Params(max_tokens=16, temperature=0),
                          lambda d: d.finish_reason and done.set()))
    assert done.wait(60)
    engine.close()
    assert engine._small.choice in {1, engine._threads}
