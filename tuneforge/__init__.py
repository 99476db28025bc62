"""tuneforge: turn an expensive general model into a cheap specialist."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from tuneforge import OpenAI, AsyncOpenAI`: the capturing clients, imported on first use only."""
    if name in ("OpenAI", "AsyncOpenAI"):
        from tuneforge.capture import client

        return getattr(client, name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
