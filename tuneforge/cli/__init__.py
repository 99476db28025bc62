"""The `tuneforge` command line: thin typer commands over the core."""
