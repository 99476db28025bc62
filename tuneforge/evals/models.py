"""From the model names of an eval to candidates and a judge client.

One naming for the CLI, the API and the job:
- `answers`: each row's own final assistant message (in a dataset of captured calls, the teacher's reply);
- `column:KEY`: answers already in the file, in each row's field KEY (a string or an assistant message);
- a model this process can load: what `locate(name)` finds (the CLI: registry names, model and adapter
  folders; the platform's workers: registry names and the project's `ft:` models and checkpoints);
- any model a configured upstream serves (`gpt-4o` through $TUNEFORGE_UPSTREAM_URL or a routes file).

Local models load lazily (a run whose outputs are all cached loads nothing) and once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuneforge.capture.upstreams import Upstreams, from_env
from tuneforge.data.prune import prune
from tuneforge.errors import NotFound, UserError
from tuneforge.evals.answerers import client_answerer, generator_answerer
from tuneforge.evals.chat import ChatClient, LocalChatClient, OpenAIChatClient
from tuneforge.evals.runner import Candidate, Sampling

ANSWERS = "answers"
COLUMN = "column:"
UPSTREAM_CONCURRENCY = 8
LOCAL_CHUNK = 64  # rows handed to a local model at once: its engine batches them continuously


@dataclass(frozen=True)
class Local:
    """A loadable model: its base (folder or registry name) and adapter folder, and an id for the cache key."""

    base: str
    adapter: str | None = None
    cache_id: str | None = None
    pruning_rules: tuple[str, ...] = ()  # texts the served model cuts from its requests: cut here too


Locate = Callable[[str], Local | None]


def locate_files(name: str) -> Local | None:
    """The CLI's lookup: registry names, model folders and adapter folders (`registry.resolve`)."""
    from pathlib import Path

    from tuneforge.models import registry

    if not registry.is_base(name) and not Path(name).expanduser().is_dir():
        return None
    ref = registry.resolve(name)
    adapter = str(ref.adapter) if ref.adapter else None
    return Local(ref.base, adapter, cache_id=_folder_id(adapter or ref.base, name))


class Models:
    """Resolves names, and keeps the generators it loaded so a judge and a candidate share one copy."""

    def __init__(self, locate: Locate = locate_files, upstreams: Upstreams | None = None,
                 aliases: dict[str, str] | None = None, hosted: Callable[[str], bool] = lambda _name: False):
        """`hosted(name)`: names of this platform's own models (registry names, `ft:...`): such a name must be
        found by `locate`, never sent to an upstream (a default upstream would take any name)."""
        self.upstreams = upstreams if upstreams is not None else from_env()
        self._locate, self.aliases, self.hosted = locate, dict(aliases or {}), hosted
        self._generators: dict[tuple[str, str | None], object] = {}
        self._lock = threading.Lock()

    def locate(self, name: str) -> Local | None:
        return self._locate(self.aliases.get(name, name))

    def check(self, names: Sequence[str]) -> None:
        """UserError for the first name that is none of the above (before any work is queued)."""
        for name in names:
            target = self.aliases.get(name, name)
            if target == ANSWERS or target.startswith(COLUMN) or self.locate(name):
                continue
            if self.hosted(target):
                raise NotFound(f"The model `{name}` does not exist or you do not have access to it (fine-tuned "
                               "models are the platform's: run the eval there)", param="model", code="model_not_found")
            if not self.upstreams.find(target):
                raise UserError(f"model '{name}': not a model here nor one a configured upstream serves: use a "
                                "registry name, a fine-tuned model, 'answers' (the rows' own answers), "
                                "'column:KEY', or set TUNEFORGE_UPSTREAM_URL for hosted models", param="model")

    def check_judges(self, names: Sequence[str]) -> None:
        """Judges are models that answer a prompt: not `answers` nor a column."""
        for name in names:
            target = self.aliases.get(name, name)
            if target == ANSWERS or target.startswith(COLUMN):
                raise UserError(f"judge '{name}': a judge must be a model (served here or by an upstream)",
                                param="testing_criteria.model")
        self.check(names)

    def candidate(self, name: str, sampling: Sampling) -> Candidate:
        target = self.aliases.get(name, name)
        if target == ANSWERS:
            return Candidate(name, reference=True)
        if target.startswith(COLUMN):
            return Candidate(name, column=target[len(COLUMN):])
        local = self.locate(name)
        if local is not None:
            return Candidate(name, answer=self._local_answers(local), sampling=sampling,
                             cache_id=local.cache_id or name, batch_size=LOCAL_CHUNK)
        self.check([name])
        client = OpenAIChatClient.from_upstreams(target, self.upstreams)
        return Candidate(name, answer=client_answerer(client, concurrency=UPSTREAM_CONCURRENCY), sampling=sampling,
                         batch_size=4 * UPSTREAM_CONCURRENCY)

    def chat_client(self, name: str) -> ChatClient:
        """A judge: a model loaded here, or one an upstream serves (an OpenAI-compatible endpoint)."""
        local = self.locate(name)
        if local is not None:
            return LocalChatClient(self._generator(local), name)
        self.check([name])
        return OpenAIChatClient.from_upstreams(self.aliases.get(name, name), self.upstreams)

    def _generator(self, local: Local):
        with self._lock:
            key = (local.base, local.adapter)
            if key not in self._generators:
                from tuneforge.inference.generate import Generator

                self._generators[key] = Generator(local.base, adapter=local.adapter)
            return self._generators[key]

    def _local_answers(self, local: Local):
        def answer(prompts: list[dict], sampling: Sampling):
            if local.pruning_rules:  # as the server does before the model sees a request
                prompts = [{**p, "messages": prune(p["messages"], list(local.pruning_rules))} for p in prompts]
            return generator_answerer(self._generator(local), batch_size=len(prompts))(prompts, sampling)

        return answer


def _folder_id(folder: str, name: str) -> str:
    """Name + the weights' identity, so a retrained adapter at the same path does not reuse old answers."""
    import hashlib
    from pathlib import Path

    path = Path(folder)
    stamps = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.glob("*.safetensors")) \
        if path.is_dir() else []
    return f"{name}@{hashlib.sha256(repr(stamps).encode()).hexdigest()[:12]}" if stamps else name
