"""The serving engine: continuous batching with mixed adapters gives each request what it would get alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tuneforge.inference.engine import Delta, Engine, Params, Request
from tuneforge.inference.sampling import safe_length, stop_index


def random_adapter(base: Path, folder: Path, seed: int, rank: int = 4, targets="all-linear") -> Path:
    """A LoRA adapter with random (non-zero) weights, so it really changes the model's answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=rank, target_modules=targets, init_lora_weights=False))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    peft.save_pretrained(folder)
    return folder


def reference(base: Path, adapter: Path | None, prompt: list[int], max_tokens: int) -> list[int]:
    """Greedy tokens from transformers' own generate, one request alone, adapter merged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return out[0, len(prompt):].tolist()


class Collector:
    def __init__(self):
        self.deltas: list[Delta] = []
        self.done = threading.Event()

    def __call__(self, delta: Delta) -> None:
        self.deltas.append(delta)
        if delta.finish_reason:
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [t for d in self.deltas for t in d.token_ids]

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    # ranks differ, and one adapter leaves out some of the layers the decoder joins (k of q/k/v, gate of gate/up)
    shapes = [(4, "all-linear"), (8, ["q_proj", "v_proj", "up_proj", "o_proj"]), (2, "all-linear")]
    return [random_adapter(tiny_model, root / f"a{i}", seed=i, rank=r, targets=t) for i, (r, t) in enumerate(shapes)]


@pytest.fixture(params=["slots", "padded"])
def batch_kind(request, monkeypatch) -> str:
    """Run a test on both running batches: the slot decoder, and the model's own forward (other models)."""
    if request.param == "padded":
        from tuneforge.inference import decoder

        monkeypatch.setattr(decoder, "supported", lambda model: "forced for the test")
    return request.param


def test_mixed_adapter_batch_matches_each_request_alone(tiny_model, adapters, batch_kind):
    engine = Engine(str(tiny_model), max_batch=8, max_adapters=2)  # 3 adapters through a 2-slot LRU
    assert type(engine.batch).__name__ == {"slots": "SlotBatch", "padded": "PaddedBatch"}[batch_kind]
    engine.stop_ids = set()  # random weights: run every request to its token budget
    prompts = [[1, 50, 60, 70], [1, 80], [1, 5, 6, 7, 8, 9, 10, 11], [1, 300, 301], [1, 42, 43, 44, 45]]
    choices = [None, adapters[0], adapters[1], adapters[0], adapters[2]]
    budgets = [6, 9, 4, 7, 5]
    collectors = [Collector() for _ in prompts]
    for prompt, adapter, budget, col in zip(prompts, choices, budgets, collectors):
        engine.submit(Request(prompt, Params(max_tokens=budget, temperature=0), col, adapter=adapter))
    for col in collectors:
        assert col.done.wait(60)
    engine.close()
    for prompt, adapter, budget, col in zip(prompts, choices, budgets, collectors):
        assert col.tokens == reference(tiny_model, adapter, prompt, budget)
        assert col.deltas[-1].finish_reason == "length"
        assert col.deltas[-1].completion_tokens == budget
    assert len(engine.adapters) <= 2
    # the requests were decoded together, not one after another
    assert engine.steps < sum(budgets)


def test_requests_join_a_running_batch(tiny_model, adapters, batch_kind):
    engine = Engine(str(tiny_model), max_batch=8)
    engine.stop_ids = set()
    first, second = Collector(), Collector()
    engine.submit(Request([1, 2, 3], Params(max_tokens=40, temperature=0), first, adapter=adapters[0]))
    while not first.deltas:
        pass
    engine.submit(Request([1, 9, 9, 9, 9, 9], Params(max_tokens=5, temperature=0), second, adapter=adapters[1]))
    assert first.done.wait(60) and second.done.wait(60)
    engine.close()
    assert first.tokens == reference(tiny_model, adapters[0], [1, 2, 3], 40)
    assert second.tokens == reference(tiny_model, adapters[1], [1, 9, 9, 9, 9, 9], 5)


@pytest.fixture(scope="module")
def tiny_gemma3(smollm2_tokenizer, tmp_path_factory) -> Path:
    """A random 4-layer Gemma 3: sandwich norms, q/k norms, and sliding-window layers with a window of 4."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    tok = smollm2_tokenizer
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"] * 2, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_gemma3_layers_decode_like_generate(tiny_gemma3, tmp_path):
    adapter = random_adapter(tiny_gemma3, tmp_path / "g", seed=3)
    engine = Engine(str(tiny_gemma3), max_batch=4)
    assert type(engine.batch).__name__ == "SlotBatch"
    engine.stop_ids = set()
    asks = [([1, 20, 30, 40, 50, 60, 70, 80, 90], None, 9), ([1, 5, 6], adapter, 12), ([1, 7, 7, 7, 7, 7, 7], None, 6)]
    cols = [Collector() for _ in asks]
    for (prompt, a, n), col in zip(asks, cols):
        engine.submit(Request(prompt, Params(max_tokens=n, temperature=0), col, adapter=a))
    assert all(col.done.wait(60) for col in cols)
    engine.close()
    for (prompt, a, n), col in zip(asks, cols):  # the longer ones run past the window of 4
        assert col.tokens == reference(tiny_gemma3, a, prompt, n)


def test_prompts_sharing_a_prefix_reuse_its_cache_and_answer_the_same(tiny_model, adapters):
    engine = Engine(str(tiny_model), max_batch=8)
    engine.stop_ids = set()
    system = list(range(100, 140))  # a shared "system prompt" of 40 tokens
    asks = [(system + [7, 8, 9], None), (system + [5, 6], None), (system + [7, 8, 9, 10], adapters[0]),
            (system + [3], adapters[0]), (system + [7, 8, 9], None)]
    got = []
    for prompt, adapter in asks:  # one at a time, so each finds the ones before it in the cache
        col = Collector()
        engine.submit(Request(prompt, Params(max_tokens=5, temperature=0), col, adapter=adapter))
        assert col.done.wait(60)
        got.append(col.tokens)
    hits, reused = engine.prefixes.hits, engine.prefixes.reused_tokens
    engine.close()
    for (prompt, adapter), tokens in zip(asks, got):
        assert tokens == reference(tiny_model, adapter, prompt, 5)
    # the base's 2nd and 5th prompts (the 5th whole but its last token), the adapter's 4th: not across adapters
    assert hits == 3 and reused == 40 + 42 + 40


def test_cancel_and_seeded_sampling(tiny_model):
    engine = Engine(str(tiny_model))
    engine.stop_ids = set()
    long = Collector()
    handle = engine.submit(Request([1, 2], Params(max_tokens=10_000, temperature=0), long))
    while len(long.deltas) < 3:
        pass
    handle.cancel()
    assert long.done.wait(30)
    assert long.deltas[-1].finish_reason == "cancelled"
    runs = []
    for _ in range(2):
        col = Collector()
        engine.submit(Request([1, 2, 3], Params(max_tokens=12, temperature=1.0, seed=7), col))
        assert col.done.wait(30)
        runs.append(col.tokens)
    engine.close()
    assert runs[0] == runs[1]


@pytest.mark.parametrize("chunked", [False, True])
def test_score_gives_prompt_logprobs(tiny_model, chunked):
    from transformers import AutoModelForCausalLM

    engine = Engine(str(tiny_model))
    if chunked:  # logits for two positions of three rows at a time: the KV cache carries the earlier chunks
        engine.score_bytes = 2 * 3 * engine.vocab_size * 4
    ids = [1, 50, 60, 70, 80]
    futures = [engine.score(ids[:k], top=2) for k in (2, 5, 3)]  # scored together, right-padded
    short, result, mid = (f.result(timeout=30) for f in futures)
    engine.close()
    assert [x.logprob for x in short[1:]] == pytest.approx([x.logprob for x in result[1:2]], abs=1e-5)
    assert [x.logprob for x in mid[1:]] == pytest.approx([x.logprob for x in result[1:3]], abs=1e-5)
    logits = AutoModelForCausalLM.from_pretrained(tiny_model)(torch.tensor([ids])).logits[0].log_softmax(-1)
    assert result[0] is None
    for i in range(1, len(ids)):
        assert result[i].logprob == pytest.approx(float(logits[i - 1, ids[i]]), abs=1e-4)
        assert len(result[i].top) == 2 and result[i].top[0][1] >= result[i].top[1][1]


def test_a_request_that_breaks_fails_alone_and_a_full_queue_refuses(tiny_model, tmp_path):
    from tuneforge.errors import RateLimited

    engine = Engine(str(tiny_model), max_batch=1, max_queue=2)
    outputs: dict[str, list[Delta]] = {"long": [], "broken": [], "after": []}
    ended = {k: threading.Event() for k in outputs}

    def collect(key):
        def on_output(d: Delta) -> None:
            outputs[key].append(d)
            if d.finish_reason:
                ended[key].set()
        return on_output

    long = engine.submit(Request([1, 2, 3], Params(max_tokens=400, temperature=0), collect("long")))
    while engine.queued:  # the long request is decoding
        threading.Event().wait(0.01)
    broken = tmp_path / "broken-adapter"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    engine.submit(Request([1, 2], Params(max_tokens=4), collect("broken"), adapter=broken))
    engine.submit(Request([1, 2], Params(max_tokens=4, temperature=0), collect("after")))
    with pytest.raises(RateLimited):  # two waiting already
        engine.submit(Request([1], Params(max_tokens=1), lambda d: None))
    engine.max_queue = 10
    broken_score, base_score = engine.score([1, 2, 3], broken), engine.score([1, 2, 3])  # scored in one round
    with pytest.raises(Exception, match="adapter_config|Expecting"):
        broken_score.result(timeout=30)
    assert len(base_score.result(timeout=30)) == 3  # the base's prompt is scored all the same
    long.cancel()
    assert ended["broken"].wait(30) and ended["after"].wait(30) and ended["long"].wait(30)
    engine.close()
    assert outputs["broken"][-1].finish_reason == "error" and "adapter" in outputs["broken"][-1].error
    assert outputs["long"][-1].finish_reason == "cancelled"  # not failed by its neighbour's broken adapter
    assert outputs["after"][-1].finish_reason == "length" and outputs["after"][-1].completion_tokens == 4


def test_a_request_submitted_while_the_engine_closes_is_answered_or_refused(tiny_model):
    """`close` must not slip between a submit's check that the engine is open and its put into the queue:
    that request would wait forever. The check is slowed here so that close starts inside that gap."""
    from tuneforge.errors import RateLimited

    engine = Engine(str(tiny_model), max_batch=1)
    check = engine._check_room
    entered = threading.Event()

    def slow_check(n: int) -> None:
        check(n)
        entered.set()
        threading.Event().wait(0.3)

    engine._check_room = slow_check
    ended = threading.Event()
    outcome: list = []

    def submit() -> None:
        try:
            engine.submit(Request([1, 2], Params(max_tokens=2), lambda d: d.finish_reason and ended.set()))
            outcome.append("queued")
        except RateLimited:
            outcome.append("refused")

    submitter = threading.Thread(target=submit)
    submitter.start()
    assert entered.wait(30)
    engine.close()  # while the submit is between its check and its put
    submitter.join(30)
    assert outcome == ["queued"] and ended.wait(5)  # answered (cancelled by the close), not left waiting
    with pytest.raises(RateLimited):
        engine.submit(Request([1], Params(max_tokens=1), lambda d: None))


def test_stop_strings_are_held_back_until_decided():
    assert stop_index("hello END there", ["END"]) == 6
    assert stop_index("hello", ["END"]) == -1
    assert safe_length("hello EN", ["END"]) == len("hello ")
    assert safe_length("hello E", ["END", "EOF"]) == len("hello ")
    assert safe_length("hello", ["END"]) == 5
    assert safe_length("caf\ufffd", []) == 3


def test_sampling_survives_extreme_settings():
    from tuneforge.inference.sampling import choose, new_generator

    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 5
    best = int(logits.argmax())
    g = new_generator(1)
    assert choose(logits, 1.0, 1e-300, g) == best  # top_p below float32's range keeps the best token
    assert choose(logits, 1e-9, 1.0, g) == best
    masked = torch.full_like(logits, float("-inf"))
    masked[7] = 0.0
    assert choose(masked, 2.0, 0.5, g) == 7
