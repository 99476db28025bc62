"""`LocalChatClient`: calls from many threads become generation batches, and every call gets an answer or an
error, whatever the generator does and however the calls fall against the serving thread's idle exit.

A fake generator stands in for the model: it records each batch and answers with the prompts' text.
"""

from __future__ import annotations

import threading
import time

import pytest

from tuneforge.evals.chat import ChatError, LocalChatClient


class FakeGenerator:
    """`complete(prompts, params, batch_size)` like `tuneforge.inference.generate.Generator`, recording batches."""

    def __init__(self, *, fail: Exception | None = None, drop: int = 0, delay: float = 0.0):
        self.batches: list[tuple[list[str], object, int]] = []
        self.fail, self.drop, self.delay = fail, drop, delay

    def complete(self, prompts, params, batch_size):
        self.batches.append(([p.messages[-1]["content"] for p in prompts], params, batch_size))
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        texts = [f"re: {p.messages[-1]['content']}" for p in prompts]
        return texts[:len(texts) - self.drop]


def ask(client: LocalChatClient, text: str, temperature: float = 0.0) -> str:
    return client.complete([{"role": "user", "content": text}], max_tokens=8, temperature=temperature)


def ask_all(client: LocalChatClient, texts: list[str], temperatures: list[float] | None = None,
            timeout: float = 10.0) -> list[str | BaseException | None]:
    """Each text asked from its own thread at once; a result, the exception raised, or None if it never came."""
    results: list[str | BaseException | None] = [None] * len(texts)
    start = threading.Barrier(len(texts))

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = ask(client, texts[i], (temperatures or [0.0] * len(texts))[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def test_concurrent_calls_are_answered_in_batches():
    fake = FakeGenerator(delay=0.05)
    client = LocalChatClient(fake, "local", max_batch=8, gather_s=0.2)
    texts = [f"q{i}" for i in range(8)]
    assert ask_all(client, texts) == [f"re: {t}" for t in texts]
    sizes = [size for _, _, size in fake.batches]
    assert sum(sizes) == 8 and max(sizes) > 1
    assert all(size == len(prompts) for prompts, _, size in fake.batches)


def test_calls_with_different_sampling_settings_are_never_batched_together():
    fake = FakeGenerator()
    client = LocalChatClient(fake, "local", max_batch=8, gather_s=0.2)
    texts = [f"q{i}" for i in range(6)]
    temperatures = [0.0, 0.7] * 3
    assert ask_all(client, texts, temperatures) == [f"re: {t}" for t in texts]
    for prompts, params, _ in fake.batches:
        assert {temperatures[int(p[1:])] for p in prompts} == {params.temperature}


def test_an_error_from_the_generator_reaches_every_caller_of_the_batch():
    fake = FakeGenerator(fail=RuntimeError("out of memory"))
    client = LocalChatClient(fake, "local", gather_s=0.2)
    results = ask_all(client, ["a", "b", "c", "d"])
    assert all(isinstance(r, RuntimeError) and "out of memory" in str(r) for r in results)


def test_a_generator_returning_too_few_texts_fails_the_calls_left_without_one():
    fake = FakeGenerator(drop=1)
    client = LocalChatClient(fake, "local", max_batch=4, gather_s=0.5)
    results = ask_all(client, ["a", "b", "c", "d"])
    assert None not in results  # nobody is left waiting
    failed = [r for r in results if isinstance(r, ChatError)]
    assert len(failed) == len(fake.batches)  # one missing answer per batch
    assert all("returned" in str(r) and "local" in str(r) for r in failed)
    assert sum(isinstance(r, str) for r in results) == 4 - len(failed)


def test_a_call_after_the_serving_thread_went_idle_and_exited_is_still_answered():
    fake = FakeGenerator()
    client = LocalChatClient(fake, "local", gather_s=0.0, idle_s=0.02)
    assert ask(client, "first") == "re: first"
    deadline = time.monotonic() + 5
    while client._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client._thread is None  # the thread exited on its own
    assert ask_all(client, ["second"]) == ["re: second"]


@pytest.mark.parametrize("pause", [0.0, 0.01, 0.02, 0.03])
def test_calls_landing_as_the_thread_goes_idle_are_never_lost(pause):
    client = LocalChatClient(FakeGenerator(), "local", gather_s=0.0, idle_s=0.02)
    for i in range(15):
        assert ask_all(client, [f"q{i}"], timeout=5.0) == [f"re: q{i}"]
        time.sleep(pause)
