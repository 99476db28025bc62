"""Importing this module registers every command on the app."""

from tuneforge.cli import data_cmd, demo_cmd, infer_cmd, models_cmd, serve_cmd, train_cmd  # noqa: F401
