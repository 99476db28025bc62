"""Importing this module registers every command on the app."""

from tuneforge.cli import (  # noqa: F401
    bakeoff_cmd,
    data_cmd,
    datasets_cmd,
    demo_cmd,
    evals_cmd,
    export_cmd,
    infer_cmd,
    keys_cmd,
    logs_cmd,
    merge_cmd,
    models_cmd,
    report_cmd,
    serve_cmd,
    train_cmd,
)
