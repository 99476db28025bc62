"""The one pricing table: USD per million input and output tokens for common hosted models.

`pricing.json` ships with the package; a user's file of the same shape ($TUNEFORGE_PRICING, else
DATA_DIR/pricing.json) adds models or overrides prices. Dated snapshots (`gpt-4o-2024-08-06`,
`claude-sonnet-4-5-20250929`, `gpt-4-0613`, `...-latest`) and provider prefixes (`openai/gpt-4o`) price as
the listed name; other variants (`o1-mini`, `gpt-4-32k`) are unpriced rather than guessed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tuneforge import paths
from tuneforge.errors import ConfigError

DEFAULT = Path(__file__).with_name("pricing.json")
_SNAPSHOT = re.compile(r"[-@](\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|v\d+(:\d+)?)")


@dataclass(frozen=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


class Pricing:
    def __init__(self, prices: dict[str, Price]):
        self.prices = prices
        self._by_length = sorted(prices, key=len, reverse=True)

    def price(self, model: str | None) -> Price | None:
        if not model:
            return None
        name = model.rsplit("/", 1)[-1].lower()
        if name in self.prices:
            return self.prices[name]
        for known in self._by_length:
            if name.startswith(known) and _SNAPSHOT.fullmatch(name[len(known):]):
                return self.prices[known]
        return None

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call, or None when the model is not in the table."""
        price = self.price(model)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)


def _read(path: Path) -> dict[str, Price]:
    try:
        models = json.loads(path.read_text())["models"]
        return {name.lower(): Price(float(p["input"]), float(p["output"])) for name, p in models.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a pricing table ({type(exc).__name__}: {exc}); expected "
                          '{"models": {"NAME": {"input": USD_PER_1M, "output": USD_PER_1M}}}') from None


def user_file() -> Path | None:
    raw = os.environ.get("TUNEFORGE_PRICING")
    if raw:
        return Path(raw).expanduser()
    path = paths.data_dir() / "pricing.json"
    return path if path.exists() else None


@lru_cache(maxsize=8)
def _load(user: Path | None, mtime: float) -> Pricing:
    prices = _read(DEFAULT)
    if user is not None:
        prices.update(_read(user))
    return Pricing(prices)


def load() -> Pricing:
    """The shipped table with the user's file over it (re-read when the file changes)."""
    user = user_file()
    mtime = user.stat().st_mtime if user is not None and user.exists() else 0.0
    return _load(user, mtime)
