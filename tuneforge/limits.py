"""Every bound the platform puts on one request, one job and one project: declared once, here.

Many projects share one server, so nothing a key holder sends may cost the others their service: each limit
below answers one way a single project could crash, starve or bill the rest. The server, the worker and the
job kinds read them through `current()`; an operator sets any of them with an environment variable,
`TUNEFORGE_` + the field's name in capitals (`TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT=32`), which `tuneforge serve`
passes on to its workers. An empty value or `none` turns an optional limit off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from tuneforge.errors import ConfigError

ENV_PREFIX = "TUNEFORGE_"


@dataclass(frozen=True)
class Limits:
    # --- one request
    max_body_mb: int = 8  # a JSON request body, counted as it arrives (chunked bodies too)
    max_upload_mb: int = 512  # one uploaded file, streamed to disk
    max_sequences: int = 64  # prompts x n in one completion request: sequences generated (or scored) at once
    prepare_timeout_s: float = 10.0  # tokenizing a request and compiling its response_format schema
    # --- serving
    engine_queue: int = 256  # requests waiting for one engine; more are answered 429 with Retry-After
    max_engines: int = 4  # models loaded for serving at once (bases, full fine-tunes, merges), least recently used out
    project_requests_in_flight: int = 16  # one project's generation requests running or waiting at once
    project_sequences_in_flight: int = 64  # the sequences (prompts x n) those requests generate or score
    retry_after_s: int = 2  # what a 429 tells the client to wait
    # --- jobs
    project_running_jobs: int = 2  # one project's jobs running at once (a bake-off's children run inside it)
    project_queued_jobs: int = 20  # one project's jobs waiting in the queue
    project_disk_gb: float = 50.0  # what one project's files, job folders and models may take on disk
    job_hours: float = 24.0  # one job's wall time, over all its attempts
    # --- the logging proxy
    proxy_requests_per_minute: int = 600  # one project's calls through the proxy
    proxy_usd_per_day: float | None = 100.0  # one project's spend on the operator's provider keys, per UTC day
    proxy_require_caller_key: bool = False  # callers must send their own provider key (X-Upstream-Authorization)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, f.type, raw)
        return cls(**values)


def _parse(name: str, type_: str, raw: str):
    var = ENV_PREFIX + name.upper()
    text = raw.strip().lower()
    if "None" in type_ and text in ("", "none"):
        return None
    try:
        if type_.startswith("bool"):
            if text not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return text in ("1", "true", "yes")
        value = int(text) if type_.startswith("int") else float(text)
    except ValueError:
        raise ConfigError(f"${var}={raw!r} is not a {type_.split(' ')[0]}: set a number (or unset it)") from None
    if value < 0:
        raise ConfigError(f"${var}={raw!r} is negative: set a number of 0 or more")
    return value


_current: Limits | None = None


def current() -> Limits:
    """The limits this process runs under (read from the environment once)."""
    global _current
    if _current is None:
        _current = Limits.from_env()
    return _current


def use(limits: Limits | None) -> None:
    """Set (or with None, forget) this process's limits: tests, and `tuneforge serve` after reading flags."""
    global _current
    _current = limits
