"""Talking to a running platform over its HTTP API, for the CLI commands that manage logs and datasets.

The platform and key come from --base-url / --api-key or $TUNEFORGE_BASE_URL / $TUNEFORGE_API_KEY, the
same variables the SDK wrapper reads. Errors come back as the server's one-line message.
"""

from __future__ import annotations

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
            raise ConfigError(f"cannot reach the platform at {self.root} ({type(exc).__name__}): start it with "
                              "`tuneforge serve`, or point --base-url / TUNEFORGE_BASE_URL at it") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:300]
            raise TuneforgeError(f"{message} (HTTP {r.status_code})")
        return r

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()
