"""Where the proxy sends models it does not host: one upstream for everything ($TUNEFORGE_UPSTREAM_URL,
key from $TUNEFORGE_UPSTREAM_API_KEY), and/or a JSON file ($TUNEFORGE_UPSTREAMS) mapping model names to
upstreams:

    {"upstreams": [
        {"models": ["gpt-4o*", "gpt-4.1*"], "url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
        {"models": ["claude-*"], "url": "https://api.anthropic.com/v1/", "api_key_env": "ANTHROPIC_API_KEY"}
    ]}

The first entry whose pattern (shell-style) matches wins; the single URL catches the rest, or with
$TUNEFORGE_UPSTREAM_MODELS (comma-separated patterns, `gpt-4o-mini,gpt-4.1*`) only the models it names, after
the file's entries. The patterns are allowlists: a model no entry names is not forwarded at all (the server
answers 404 model_not_found), whoever's key would pay for it. Keys are named by environment variable, read
when a request is forwarded and never written anywhere; a caller can send its own in
`X-Upstream-Authorization` instead.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError


@dataclass(frozen=True)
class Upstream:
    url: str  # the API root, ending in /v1 for OpenAI-style providers
    api_key_env: str | None = None

    def api_key(self) -> str | None:
        """The operator's key for this upstream, if one is set."""
        return (os.environ.get(self.api_key_env) or None) if self.api_key_env else None

    def authorization(self) -> str | None:
        key = self.api_key()
        return f"Bearer {key}" if key else None

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True)
class Upstreams:
    routes: tuple[tuple[tuple[str, ...], Upstream], ...] = ()
    default: Upstream | None = None

    def find(self, model: str) -> Upstream | None:
        for patterns, upstream in self.routes:
            if any(fnmatch.fnmatchcase(model, p) for p in patterns):
                return upstream
        return self.default

    def __bool__(self) -> bool:
        return bool(self.routes) or self.default is not None


def from_env(environ: dict[str, str] | None = None) -> Upstreams:
    env = os.environ if environ is None else environ
    default = None
    routes = _read(Path(env["TUNEFORGE_UPSTREAMS"]).expanduser()) if env.get("TUNEFORGE_UPSTREAMS") else ()
    if env.get("TUNEFORGE_UPSTREAM_URL"):
        default = Upstream(env["TUNEFORGE_UPSTREAM_URL"], "TUNEFORGE_UPSTREAM_API_KEY")
        allowed = tuple(p.strip() for p in env.get("TUNEFORGE_UPSTREAM_MODELS", "").split(",") if p.strip())
        if allowed:  # the single URL serves only these: a route after the file's, and no catch-all
            routes, default = (*routes, (allowed, default)), None
    return Upstreams(routes, default)


def _read(path: Path) -> tuple[tuple[tuple[str, ...], Upstream], ...]:
    where = f"{path} (TUNEFORGE_UPSTREAMS)"
    try:
        entries = json.loads(path.read_text())["upstreams"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: cannot read ({type(exc).__name__}: {exc}); expected "
                          '{"upstreams": [{"models": ["gpt-4o*"], "url": "...", "api_key_env": "..."}]}') from None
    routes = []
    for i, entry in enumerate(entries):
        if "api_key" in entry:
            raise ConfigError(f"{where}: upstreams[{i}]: write the key's environment variable as api_key_env, "
                              "not the key itself")
        models, url = entry.get("models"), entry.get("url")
        if not isinstance(url, str) or not isinstance(models, list) or not models:
            raise ConfigError(f"{where}: upstreams[{i}] needs `url` (a string) and `models` (a list of names)")
        routes.append((tuple(map(str, models)), Upstream(url, entry.get("api_key_env"))))
    return tuple(routes)
