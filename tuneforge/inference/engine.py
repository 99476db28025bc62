"""A serving engine: one copy of a base model, many LoRA adapters, requests batched continuously.

Why our own loop: transformers' `generate` runs one fixed batch to the end, and its continuous-batching
manager does not take PEFT adapters; a server needs requests to join and leave a running batch at every
token, each with its own adapter, sampling settings, stop strings and constraints. `multi_lora.py` runs
each row of a batch through its own adapter (and says why not PEFT's mixed batches); this module does the
scheduling:

- one background thread owns the model; `submit` queues a request and returns a handle at once;
- each iteration admits waiting requests (prefilled), then decodes one token for every running sequence
  in a single forward pass;
- the running batch is a `slot_batch.SlotBatch` (llama-family models: a lean forward over a cache row per
  sequence, with a prefix cache) or else a `padded_batch.PaddedBatch` (the model's own forward over one
  left-padded cache); both add, step and drop rows the same way;
- `quantize` ("fp16" or "int4", see quantize.py) swaps the linear layers for low-bit CPU kernels;
- adapters are loaded on demand and kept in an LRU of `max_adapters`; one in use is never evicted.

Outputs go to each request's `on_output` callback from the engine thread, one `Delta` per token (text may
be empty while a multi-byte character or a possible stop string is incomplete), the last with a
`finish_reason`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache

from tuneforge.errors import RateLimited
from tuneforge.inference import decoder, sampling
from tuneforge.inference import quantize as quantizing
from tuneforge.inference.detokenize import TextStream
from tuneforge.inference.multi_lora import MultiLoRA
from tuneforge.inference.padded_batch import PaddedBatch
from tuneforge.inference.prefix_cache import PrefixCache
from tuneforge.inference.sampling import TokenLogprob
from tuneforge.inference.slot_batch import SlotBatch
from tuneforge.inference.threads import SmallStepThreads
from tuneforge.models.loading import compute_dtype, context_length, default_device, load_model, load_tokenizer
from tuneforge.models.loading import stop_token_ids as model_stop_ids

log = logging.getLogger(__name__)

BASE = "__base__"  # a row on the base model alone
SMALL_WORK = 4  # rows (tokens) in a forward pass up to which the thread count is measured (threads.py)


@dataclass
class Params:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: dict[int, float] = field(default_factory=dict)  # added to a token's logit before choosing


@dataclass
class Delta:
    """What one step produced for one request."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Request:
    prompt_ids: list[int]
    params: Params
    on_output: Callable[[Delta], None]
    adapter: Path | None = None
    constraint: object | None = None  # a tuneforge.inference.constraints.Constraint
    cancelled: threading.Event = field(default_factory=threading.Event)


class Handle:
    def __init__(self, request: Request):
        self._request = request

    def cancel(self) -> None:
        """Stop generating for this request at the next step (e.g. the client went away)."""
        self._request.cancelled.set()


@dataclass
class _Score:
    future: Future
    token_ids: list[int]
    adapter: Path | None
    top: int


@dataclass
class _Seq:
    req: Request
    adapter: str
    generator: torch.Generator
    position: int  # tokens of this sequence already in the KV cache
    text: TextStream
    next_token: int = -1
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the text already sent


class Engine:
    """Serves one base model; `submit` may be called from any thread."""

    def __init__(self, base: str, device: str | None = None, max_batch: int = 32, max_adapters: int = 8,
                 max_prefill_tokens: int = 4096, max_queue: int = 256, score_bytes: int = 256 << 20,
                 quantize: str | None = None, prefix_cache_bytes: int = 256 << 20):
        self.device = device or default_device()
        self.tokenizer = load_tokenizer(base)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.max_batch, self.max_adapters, self.max_prefill_tokens = max_batch, max_adapters, max_prefill_tokens
        self.max_queue = max_queue  # requests waiting (not yet decoding) before `submit` refuses more
        self.score_bytes = score_bytes  # float32 logits held at once while scoring prompts
        self.adapters: OrderedDict[str, Path] = OrderedDict()  # LRU: name -> folder
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: list[Request] = []
        self._running: list[_Seq] = []
        self._admitting: list[_Seq] = []  # taken from the queue, not yet in the batch
        self._scores: list[_Score] = []
        self._closed = False
        self._closing = threading.Lock()  # `close` cannot slip between a submit's check and its put
        self.held = 0  # requests being prepared for this engine (the server's `Engines` counts them)
        self._grammars = None
        self.steps = 0
        # read here, on the caller's thread: a new thread starts from whatever count a thread set last
        self._threads = torch.get_num_threads()
        self._small = SmallStepThreads(self._threads)
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(ready, base, quantize, prefix_cache_bytes),
                                        name="tuneforge-engine", daemon=True)
        self._thread.start()
        ready.result()  # the model is loaded (or its error raised here)

    def _load(self, base: str, quantize: str | None, prefix_cache_bytes: int) -> None:
        """Load the model, on the engine's own thread. OpenMP (torch's CPU threads) keeps a team of worker
        threads per thread that ran parallel work; when there are more of them than cores, its workers stop
        spinning between parallel regions and every region pays a wake-up (~50 us; a decode step has ~120
        matrix calls). So the thread that decodes is the one that loads, and the caller's thread does no
        parallel work here."""
        self.model = load_model(base, dtype=compute_dtype(self.device), device=self.device).eval()
        self.context = context_length(self.model) or 2048
        self.vocab_size = self.model.get_input_embeddings().weight.shape[0]
        self._logit_width = self.model.get_output_embeddings().weight.shape[0]
        self.stop_ids = set(model_stop_ids(self.model, self.tokenizer))
        # transformers renamed `past_key_values` to `cache` during 5.x
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.lora = MultiLoRA(self.model, self.max_adapters)
        why_not = decoder.supported(self.model)
        self.prefixes = PrefixCache(prefix_cache_bytes) if why_not is None and prefix_cache_bytes else None
        if why_not is None:
            lean = decoder.SlotDecoder(self.model, self.max_batch, self.context)  # joins layers: before quantizing
            self.batch = SlotBatch(lean, self._rows, self.prefixes)
        else:
            self.batch = PaddedBatch(self.model, self._forward, self.pad_id, self.device)
        if quantize:
            quantizing.apply(self.model, quantize)

    def _run(self, ready: Future, base: str, quantize: str | None, prefix_cache_bytes: int) -> None:
        torch.set_num_threads(self._threads)
        try:
            self._load(base, quantize, prefix_cache_bytes)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        self._loop()

    # --- public API (any thread)
    def submit(self, request: Request) -> Handle:
        """Queue a request; RateLimited when `max_queue` requests are already waiting or the engine was closed
        (its model unloaded to make room for another: the caller retries, and gets a fresh engine)."""
        with self._closing:
            self._check_room(1)
            self._inbox.put(request)
        return Handle(request)

    def score(self, token_ids: list[int], adapter: Path | None = None, top: int = 0) -> Future:
        """Future of each token's log-probability given the ones before it (the first token gets None)."""
        if len(token_ids) > self.context:
            raise ValueError(f"cannot score {len(token_ids)} tokens: the model's context is {self.context}")
        future: Future = Future()
        with self._closing:
            self._check_room(1)
            self._inbox.put(_Score(future, token_ids, adapter, top))
        return future

    def _check_room(self, n: int) -> None:
        if self._closed:
            raise RateLimited("The model was just unloaded to make room for another; retry.", retry_after=1,
                              code="server_overloaded")
        if self.queued + n > self.max_queue:
            raise RateLimited(f"The server is busy: {self.queued} requests are waiting for this model. "
                              "Retry after a short wait.", code="server_overloaded")

    def close(self) -> None:
        """Stop the loop (what is in flight gets finish_reason "cancelled") and let go of the model's memory."""
        if self.batch is None:  # closed already
            return
        with self._closing:  # a submit under way puts its request first; later ones see the engine closed
            self._closed = True
            self._inbox.put(None)
        self._thread.join()  # the step under way ends first (the loop checks `_closed` between steps)
        while True:  # what arrived after the loop's last look
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Request):
                self._waiting.append(item)
            elif isinstance(item, _Score):
                item.future.set_exception(RuntimeError("the model was unloaded"))
        self._fail_all("the model was unloaded", reason="cancelled")
        self.batch.reset()
        self.model = self.lora = self.batch = self.prefixes = self._grammars = None

    def json_constraint(self, schema: dict | None):
        """A grammar constraint for `response_format` (None: any JSON object); see constraints.py."""
        if self._grammars is None:
            from tuneforge.inference.constraints import JsonGrammars

            self._grammars = JsonGrammars(self.tokenizer, self._logit_width, sorted(self.stop_ids))
        return self._grammars.constraint(schema)

    @property
    def busy(self) -> int:
        """Requests running or queued."""
        return len(self._running) + self.queued

    @property
    def queued(self) -> int:
        """Requests not yet decoding: waiting for a batch slot, or not yet taken from the inbox."""
        return len(self._waiting) + self._inbox.qsize()

    # --- the loop (engine thread)
    def _loop(self) -> None:
        while not self._closed:
            try:
                self._drain_inbox(block=not self._running and not self._waiting)
                self._drop_cancelled()
                self._admit()
                if self._running:
                    self._decode_step()
            except Exception as exc:  # a bug must not hang every client: fail what is in flight, keep serving
                self._fail_all(f"{type(exc).__name__}: {exc}")

    def _drain_inbox(self, block: bool) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                break
            block = False
            if item is None:
                break
            if isinstance(item, Request):
                self._waiting.append(item)
            elif isinstance(item, _Score):
                self._scores.append(item)
            else:
                item()  # work that must run on the engine thread
        if self._scores:
            self._run_scores()

    def _drop_cancelled(self) -> None:
        gone = [i for i, s in enumerate(self._running) if s.req.cancelled.is_set()]
        for i in gone:
            self._finish(self._running[i], "cancelled")
        if gone:
            self._remove(set(gone))
        for req in [r for r in self._waiting if r.cancelled.is_set()]:
            self._waiting.remove(req)
            req.on_output(Delta(finish_reason="cancelled", prompt_tokens=len(req.prompt_ids)))

    def _fail_all(self, message: str, reason: str = "error") -> None:
        """The last resort when the batch itself broke (a decode step raised): everything in flight ends."""
        for seq in self._running + self._admitting:
            seq.req.on_output(Delta(finish_reason=reason, error=message))
        for req in self._waiting:
            req.on_output(Delta(finish_reason=reason, error=message))
        self._running, self._admitting, self._waiting = [], [], []
        self.batch.reset()

    # --- adapters
    def _adapter_name(self, path: Path | None) -> str | None:
        """The loaded adapter's name for `path`, loading it (evicting the least recently used) if needed;
        None when every slot holds an adapter in use."""
        if path is None:
            return BASE
        name = _name_of(path)
        if name in self.adapters:
            self.adapters.move_to_end(name)
            return name
        if len(self.adapters) >= self.max_adapters and not self._evict_one():
            return None
        self.lora.load(name, Path(path))
        self.adapters[name] = path
        return name

    def _evict_one(self) -> bool:
        in_use = {s.adapter for s in self._running + self._admitting}
        for name in self.adapters:
            if name not in in_use:
                self._delete_adapter(name)
                return True
        return False

    def _delete_adapter(self, name: str) -> None:
        del self.adapters[name]
        self.lora.unload(name)
        if self.prefixes is not None:
            self.prefixes.forget(name)

    def unload(self, path: Path) -> None:
        """Forget an adapter (e.g. its model was deleted) unless a running request still uses it."""

        def run() -> None:
            name = _name_of(path)
            if name in self.adapters and name not in {s.adapter for s in self._running}:
                self._delete_adapter(name)

        self._inbox.put(run)

    def _rows(self, adapters: list[str]):
        """Within the block, batch row i goes through adapters[i]."""
        return self.lora.rows([None if a == BASE else a for a in adapters])

    def _forward(self, adapters: list[str], **kwargs):
        with self._rows(adapters):
            return self.model(**kwargs)

    # --- scoring (prompt log-probabilities for /v1/completions echo)
    @torch.no_grad()
    def _run_scores(self) -> None:
        """Score every queued prompt, those on one adapter together in right-padded batches."""
        todo, self._scores = self._scores, []
        self._use_threads(sum(len(item.token_ids) for item in todo))
        by_adapter: dict = {}
        for item in todo:
            by_adapter.setdefault(item.adapter, []).append(item)
        for adapter, items in by_adapter.items():
            try:
                name = self._adapter_name(adapter)
                if name is None:
                    raise RuntimeError("every adapter slot is in use; retry shortly")
                for i in range(0, len(items), 8):
                    self._score_batch(name, items[i:i + 8])
            except Exception as exc:  # this adapter's prompts fail; the others' are scored all the same
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)

    def _score_batch(self, name: str, items: list[_Score]) -> None:
        """Right-padded, in chunks of positions small enough that the float32 logits held at once stay under
        `score_bytes` (a long prompt's full logits are context x vocabulary: gigabytes), the KV cache carrying
        the earlier chunks."""
        width = max(len(x.token_ids) for x in items)
        pad = self.pad_id
        ids = torch.tensor([x.token_ids + [pad] * (width - len(x.token_ids)) for x in items], device=self.device)
        mask = torch.tensor([[1] * len(x.token_ids) + [0] * (width - len(x.token_ids)) for x in items],
                            device=self.device)
        step = max(1, self.score_bytes // (len(items) * self.vocab_size * 4))
        cache = DynamicCache() if step < width else None
        results: list[list[TokenLogprob | None]] = [[None] for _ in items]
        for start in range(0, width, step):
            end = min(width, start + step)
            kwargs = {"use_cache": False} if cache is None else {
                "use_cache": True, self._cache_arg: cache,
                "position_ids": torch.arange(start, end, device=self.device).expand(len(items), -1)}
            logits = self._forward([name] * len(items), input_ids=ids[:, start:end], attention_mask=mask[:, :end],
                                   **kwargs).logits
            for row, x in enumerate(items):
                upto = min(end, len(x.token_ids) - 1)  # position p predicts token p + 1
                if upto <= start:
                    continue
                logprobs = torch.log_softmax(logits[row, : upto - start].float(), dim=-1)
                for p in range(start, upto):
                    results[row].append(sampling.logprob_of(logprobs[p - start], x.token_ids[p + 1], x.top))
            del logits
        for x, result in zip(items, results):
            x.future.set_result(result)

    # --- admission and prefill
    def _admit(self) -> None:
        room = self.max_batch - len(self._running)
        chosen = self._admitting = []
        budget = self.max_prefill_tokens
        for req in list(self._waiting):
            if room <= 0 or (chosen and len(req.prompt_ids) > budget):
                break
            try:
                name = self._adapter_name(req.adapter)
            except Exception as exc:  # this request's adapter cannot load: it fails, nobody else does
                self._waiting.remove(req)
                req.on_output(Delta(finish_reason="error", error=f"the model's adapter did not load: {exc}"))
                continue
            if name is None:
                break  # wait for an adapter slot to free up
            self._waiting.remove(req)
            seed = sampling.new_generator(req.params.seed)
            chosen.append(_Seq(req, name, seed, position=len(req.prompt_ids), text=TextStream(self.tokenizer)))
            room -= 1
            budget -= len(req.prompt_ids)
        # the slot batch prefills one prompt at a time: each request's first token goes out as soon as it is ready
        for group in [chosen] if self.batch.prefill_together else [[s] for s in chosen]:
            self._prefill_isolated(group)
        self._admitting = []

    def _prefill_isolated(self, seqs: list[_Seq]) -> None:
        """Prefill together; if that fails, one by one, so only the request that breaks it fails. The running
        batch is only touched once a prefill has succeeded."""
        try:
            logits = self._prefill(seqs)
        except Exception as exc:
            if len(seqs) == 1:
                self._admitting.remove(seqs[0])
                seqs[0].req.on_output(Delta(finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
                return
            for seq in seqs:
                self._prefill_isolated([seq])
            return
        self._running.extend(seqs)
        self._admitting = [s for s in self._admitting if all(s is not t for t in seqs)]
        self._advance(seqs, logits, offset=len(self._running) - len(seqs))

    def _prefill(self, seqs: list[_Seq]) -> torch.Tensor:
        """Add `seqs` to the batch; their next-token logits."""
        self._use_threads(sum(len(s.req.prompt_ids) for s in seqs))
        return self.batch.add(seqs)

    # --- decoding
    def _decode_step(self) -> None:
        seqs = self._running
        timed = len(seqs) == 1
        threads = self._use_threads(len(seqs), trial=timed)
        start = time.perf_counter()
        logits = self.batch.step(seqs)
        if timed:
            before = self._small.choice
            self._small.record(threads, time.perf_counter() - start)
            if self._small.choice != before:
                log.info("small decode steps now run on %d thread(s) (%s)", self._small.choice, self._small.summary())
        for s in seqs:
            s.position += 1
        self.steps += 1
        self._advance(seqs, logits, offset=0)

    def _advance(self, seqs: list[_Seq], logits: torch.Tensor, offset: int) -> None:
        """Choose each sequence's next token, report it, and drop the sequences that finished."""
        logits = logits.float()
        want_logprobs = any(s.req.params.logprobs for s in seqs)
        logprobs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        done: list[int] = []
        for i, s in enumerate(seqs):
            try:
                row = logits[i]
                if s.req.params.logit_bias:
                    row = sampling.biased(row, s.req.params.logit_bias)
                if s.req.constraint is not None:
                    row = s.req.constraint.mask(row)
                p = s.req.params
                token = sampling.choose(row, p.temperature, p.top_p, s.generator)
                info = sampling.logprob_of(logprobs[i], token, p.top_logprobs) if p.logprobs else None
                reason = self._emit(s, token, info)
            except Exception as exc:  # one request's bad state must not fail the others in the batch
                s.req.on_output(Delta(finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
                reason = "error"
            if reason:
                done.append(offset + i)
        if done:
            self._remove(set(done))

    def _emit(self, s: _Seq, token: int, info: TokenLogprob | None) -> str | None:
        p = s.req.params
        reason = None
        if s.req.constraint is not None and token not in self.stop_ids:
            s.req.constraint.accept(token)
        if token in self.stop_ids:
            reason = "stop"
        else:
            s.generated.append(token)
            s.next_token = token
            s.text.add(token)
        text = s.text.text
        cut = sampling.stop_index(text, p.stop) if p.stop else -1
        if cut >= 0:
            text, reason = text[:cut], "stop"
        else:
            if reason is None and s.req.constraint is not None and s.req.constraint.done():
                reason = "stop"
            elif reason is None and (len(s.generated) >= p.max_tokens or s.position + 1 >= self.context):
                reason = "length"
            if reason:
                s.text.flush()
                text = s.text.text
        end = len(text) if reason else sampling.safe_length(text, p.stop)
        delta = Delta(
            text=text[s.sent:end], token_ids=[] if token in self.stop_ids else [token],
            logprobs=[info] if info else [], finish_reason=reason,
            prompt_tokens=len(s.req.prompt_ids), completion_tokens=len(s.generated),
        )
        s.sent = max(s.sent, end)
        s.req.on_output(delta)
        return reason

    def _finish(self, s: _Seq, reason: str) -> None:
        s.req.on_output(Delta(finish_reason=reason, prompt_tokens=len(s.req.prompt_ids),
                              completion_tokens=len(s.generated)))

    def _use_threads(self, rows: int, trial: bool = False) -> int:
        """All compute threads for big work; for work of a few rows, what `threads.SmallStepThreads` measured
        to be faster in this process (`trial`: this step is one of its timed single-row steps)."""
        if rows > SMALL_WORK:
            want = self._threads
        else:
            want = self._small.for_trial() if trial else self._small.for_small()
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
        return want

    def _remove(self, gone: set[int]) -> None:
        """Drop these rows of the running batch (the batch may reorder the rest)."""
        order = self.batch.remove(self._running, gone)
        self._running = [self._running[i] for i in order]


def _name_of(adapter: Path) -> str:
    return "a" + hashlib.sha1(str(adapter).encode()).hexdigest()[:12]

