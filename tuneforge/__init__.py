"""tuneforge: turn an expensive general model into a cheap specialist."""

__version__ = "0.1.0"
