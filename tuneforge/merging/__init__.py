"""Merging models: mergekit configs run with mergekit as the engine (`full.py`), LoRA adapters of one base
combined with PEFT (`adapters.py`), and what both write beside the weights (`manifest.py`).

The core knows model names only through a `locate` callback: the CLI passes the registry's resolver (bundled
names, model folders, adapter folders), the platform's merge job one that also knows a project's `ft:` and
`merge:` models.
"""
