"""Talking to a running platform over its HTTP API, for the CLI commands that manage logs and datasets.

The platform and key come from --base-url / --api-key or $TUNEFORGE_BASE_URL / $TUNEFORGE_API_KEY, the
same variables the SDK wrapper reads. Errors come back as the server's one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from tuneforge.errors import ConfigError, TuneforgeError

BaseUrl = Annotated[str, typer.Option("--base-url", envvar="TUNEFORGE_BASE_URL",
                                      help="The platform's URL (its root or /v1).")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="TUNEFORGE_API_KEY", show_default=False,
                                            help="A project key from `tuneforge keys create`.")]
DEFAULT_URL = "http://127.0.0.1:8000"


class Platform:
    def __init__(self, base_url: str, api_key: str | None):
        if not api_key:
            raise ConfigError("no API key: pass --api-key or set TUNEFORGE_API_KEY (make one with "
                              "`tuneforge keys create --project NAME`)")
        root = base_url.rstrip("/")
        self.root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.http = httpx.Client(base_url=self.root, headers={"authorization": f"Bearer {api_key}"}, timeout=300)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if r.status_code >= 400:
            raise _error(r)
        return r

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    def download(self, path: str, out: Path, **kwargs: Any) -> int:
        """GET a JSONL body into a file as it streams; the number of lines written."""
        lines = 0
        try:
            with self.http.stream("GET", path, **kwargs) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _error(r)
                with open(out, "wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                        lines += chunk.count(b"\n")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return lines

    def follow(self, path: str, *, final: tuple[str, ...], poll_s: float = 1.0) -> dict:
        """Print a job's events (`{path}/events`, newest first there) as they come; the job (GET `path`) once
        its status is one of `final`."""
        import time

        from tuneforge.cli.app import console

        seen: set[str] = set()
        while True:
            job = self.json("GET", path)
            for e in reversed(self.json("GET", f"{path}/events", params={"limit": 100})["data"]):
                if e["id"] not in seen:
                    seen.add(e["id"])
                    console.print(f"[dim]{e['message']}[/dim]", highlight=False)
            if job["status"] in final:
                return job
            time.sleep(poll_s)

    def _unreachable(self, exc: Exception) -> ConfigError:
        return ConfigError(f"cannot reach the platform at {self.root} ({type(exc).__name__}): start it with "
                           "`tuneforge serve`, or point --base-url / TUNEFORGE_BASE_URL at it")


def _error(r: httpx.Response) -> TuneforgeError:
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = r.text[:300]
    return TuneforgeError(f"{message} (HTTP {r.status_code})")
