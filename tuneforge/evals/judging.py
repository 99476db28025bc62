"""What the model-judged graders (`judge`, `criterion`) share: versioned prompt files, reading a verdict out of
whatever text a judge returns, and running many judge calls on a few threads while staying cancellable.

Prompt files are Markdown a user can read and copy: a free header (documentation, not sent), then a
`--- system ---` section and a `--- user ---` section. `{{name}}` placeholders are filled in one pass (a
placeholder inside an answer is never expanded). The bundled prompts live in `evals/prompts/NAME.md` and are
versioned by their name (`pairwise-v1`); a user's own file is versioned by its file name and the first 12 hex
digits of its sha256, so editing it makes a new version and never reuses old judgments. Messages name a user's
file by its name only: they reach tenants, and the path is the server's.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from tuneforge.errors import UserError

_SECTION = re.compile(r"^--- (system|user) ---[ \t]*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
CRITERIA_HEADING = "Additional criteria from the user (they take precedence):"


@dataclass(frozen=True)
class PromptTemplate:
    """A judge prompt: its version (recorded with every judgment), system and user text, where it came from."""

    version: str
    system: str
    user: str
    source: str

    @classmethod
    def bundled(cls, name: str) -> PromptTemplate:
        files = resources.files("tuneforge.evals") / "prompts"
        path = files / f"{name}.md"
        if not path.is_file():
            known = sorted(p.name[:-3] for p in files.iterdir() if p.name.endswith(".md"))
            raise UserError(f"no bundled judge prompt '{name}': choose one of {', '.join(known)}, or pass a file")
        return cls.parse(path.read_text(encoding="utf-8"), version=name, source=f"bundled:{name}")

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        path = Path(path)
        try:
            data = path.read_bytes()
            text = data.decode("utf-8")
        except OSError as exc:  # its str() holds the full path: name the file only
            raise UserError(f"{path.name}: cannot read the judge prompt ({exc.strerror or type(exc).__name__}); "
                            "check the file") from None
        except UnicodeDecodeError:
            raise UserError(f"{path.name}: the judge prompt is not UTF-8 text; save it as UTF-8") from None
        version = f"{path.stem}-{hashlib.sha256(data).hexdigest()[:12]}"
        return cls.parse(text, version=version, source=path.name)

    @classmethod
    def parse(cls, text: str, *, version: str, source: str) -> PromptTemplate:
        parts = _SECTION.split(text)  # [header, name, body, name, body, ...]
        sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}
        if set(sections) != {"system", "user"}:
            raise UserError(f"{source}: a judge prompt needs a '--- system ---' line and a '--- user ---' line, "
                            "each followed by its text (see the bundled prompts in tuneforge/evals/prompts/)")
        return cls(version, sections["system"], sections["user"], source)

    def require(self, *names: str) -> PromptTemplate:
        """Fail unless the user section uses each placeholder (a prompt without the answers judges nothing)."""
        missing = [n for n in names if "{{" + n + "}}" not in self.user]
        if missing:
            raise UserError(f"{self.source}: the user section must contain "
                            + ", ".join("{{" + n + "}}" for n in missing))
        return self

    def render(self, criteria: str | None = None, **fields: str) -> list[dict]:
        """The chat messages: placeholders filled; the user's criteria where {{criteria}} stands, else appended
        to the system text."""
        block = f"{CRITERIA_HEADING}\n{criteria.strip()}" if criteria and criteria.strip() else ""
        values = {**fields, "criteria": block}
        system, user = (_fill(t, values) for t in (self.system, self.user))
        if block and "{{criteria}}" not in self.system + self.user:
            system = f"{system}\n\n{block}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def load_prompt(prompt_file: str | Path | None, default: str) -> PromptTemplate:
    """The user's prompt file if given, else the bundled prompt `default`."""
    return PromptTemplate.from_file(prompt_file) if prompt_file else PromptTemplate.bundled(default)


def find_json_object(text: str, keys: Sequence[str] = ()) -> dict | None:
    """The first JSON object anywhere in text (code fences, prose around it and all) that has one of `keys`
    (any object if none has, or no keys are given), or None."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            if not keys or any(k in value for k in keys):
                return value
            found.append(value)
    return found[0] if found else None


def conversation_text(prompt: dict) -> str:
    """A prompt (messages, tools) as plain text for a judge to read."""
    lines = []
    if prompt.get("tools"):
        names = [str((t.get("function") or {}).get("name")) for t in prompt["tools"] if isinstance(t, dict)]
        lines.append(f"[tools available: {', '.join(names)}]")
    for message in prompt.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = content or ""
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            text += f"\n[tool call] {fn.get('name')}({fn.get('arguments')})"
        lines.append(f"{message.get('role', '?').upper()}: {text}")
    return "\n\n".join(lines)


T = TypeVar("T")
R = TypeVar("R")


def run_calls(items: Sequence[T], fn: Callable[[T], R], *, concurrency: int = 4,
              check: Callable[[], Any] = lambda: None, on_done: Callable[[int, R], Any] | None = None) -> list[R]:
    """fn(item) for every item on `concurrency` threads, results in order.

    check() runs before each call starts (it raises to stop); when it or a call raises, no new call starts,
    those in flight finish (each records its own result), and the exception propagates. on_done(index,
    result) runs on the calling thread as results arrive.
    """
    results: list[Any] = [None] * len(items)
    index_of: dict[Future, int] = {}

    def collect(done: set[Future]) -> None:
        for future in done:
            i = index_of.pop(future)
            results[i] = future.result()
            if on_done is not None:
                on_done(i, results[i])

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending: set[Future] = set()
        try:
            for i, item in enumerate(items):
                while len(pending) >= max(1, concurrency):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
                check()
                future = pool.submit(fn, item)
                index_of[future] = i
                pending.add(future)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
        finally:
            wait(pending)
    return results


REFUSED = {400, 413, 422}  # a request the judge will never take: recorded as an invalid verdict, not retried


def ask(client, messages: list[dict], spec, schema: dict, parse: Callable[[str], tuple[str, str]], record: dict,
        log) -> dict:
    """One judge call, recorded in the judgment log as it returns: the raw reply, the parsed verdict and its
    explanation (a refused request is an `invalid` verdict; any other failure propagates, to be retried by a
    later run). `spec` gives max_tokens, temperature and structured."""
    from tuneforge.evals.chat import ChatError

    try:
        raw = client.complete(messages, max_tokens=spec.max_tokens, temperature=spec.temperature,
                              response_format=schema if spec.structured else None)
    except ChatError as exc:
        if exc.status not in REFUSED:
            raise
        record = record | {"raw": "", "verdict": "invalid", "explanation": "", "error": str(exc)}
    else:
        verdict, explanation = parse(raw)
        record = record | {"raw": raw, "verdict": verdict, "explanation": explanation}
    record["time"] = time.time()
    log.add(record)
    return record
