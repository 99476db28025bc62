"""Full-model merges: a mergekit config run by mergekit, on any model tuneforge can name.

mergekit does the merging: its lazy loader reads one tensor at a time from the inputs' safetensors, its
executor frees each value after its last use, and its writer flushes a shard once it reaches the shard size
(ours is 1 GiB rather than mergekit's 5 GB, so a merge holds at most one such shard of output).
Here we only (1) turn the config's model names into folders (an adapter is merged into its base first, once,
into the model cache), (2) report mergekit's progress and stop it when asked, (3) write the result into a
fresh folder atomically, with a manifest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneforge.errors import NotFound, UserError
from tuneforge.merging import config as configs
from tuneforge.merging import manifest
from tuneforge.models import registry
from tuneforge.paths import model_cache
from tuneforge.progress import Callback, Event, ignore

SHARD_BYTES = 1 << 30
Locate = Callable[[str], registry.ModelRef]  # a model name -> its base folder and maybe an adapter on it
_one_at_a_time = threading.Lock()  # mergekit's progress hook is module-wide: one merge per process at a time


@dataclass(frozen=True)
class Input:
    """A model the config names, and the folder mergekit reads for it."""

    name: str
    base: str
    adapter: str | None
    folder: str  # the base itself, or the adapter merged into it

    def describe(self) -> dict:
        return {"name": self.name, "base": self.base, "adapter": self.adapter,
                "sha256": manifest.folder_hash(self.adapter or self.base)}


def merge(cfg: dict, out: Path, *, locate: Locate = registry.resolve, on_event: Callback = ignore,
          check: Callable[[], None] = lambda: None, source: str = "config", seed: int = 0,
          shard_bytes: int = SHARD_BYTES) -> dict:
    """Run the merge into `out` (which must not exist yet); returns the manifest written beside the weights."""
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose a new output folder")
    configs.check_method(cfg, source)
    inputs = {name: _input(name, locate, on_event, source) for name in configs.model_names(cfg)}
    if not inputs:
        raise UserError(f"{source}: the config names no models (mergekit's `models:` or `slices:`)")
    resolved = configs.rewrite(cfg, lambda name: {"model": {"path": inputs[name].folder}})  # no `+` parsing
    merge_config = configs.validate(resolved, source)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    options = MergeOptions(copy_tokenizer=True, out_shard_size=shard_bytes, random_seed=seed, quiet=True,
                           lora_merge_cache=str(model_cache() / "merged-adapters"))
    on_event(Event("message", f"merging {len(inputs)} models with mergekit ({cfg.get('merge_method')})"))
    try:
        with _one_at_a_time, _progress(on_event, check):
            run_merge(merge_config, str(tmp), options=options,
                      config_source=yaml.safe_dump(resolved, sort_keys=False))
        written = manifest.write(tmp, kind="merge", inputs=[i.describe() for i in inputs.values()], config=cfg,
                                 engine="mergekit", resolved_config=resolved, seed=seed)
    except BaseException:  # stopped or failed: leave nothing half-written behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return written


def _input(name: str, locate: Locate, on_event: Callback, source: str) -> Input:
    try:
        ref = locate(name)
    except NotFound as exc:
        raise NotFound(f"{source}: {exc}", param=exc.param, code=exc.code) from None
    if ref.adapter is None:
        return Input(name, ref.base, None, ref.base)
    return Input(name, ref.base, str(ref.adapter), str(merged_adapter(ref, on_event)))


def merged_adapter(ref: registry.ModelRef, on_event: Callback = ignore) -> Path:
    """An adapter merged into its base, as a full model folder in the model cache (made once per adapter)."""
    from tuneforge.models.export import export_merged

    dtype = _dtype(ref.base)
    base_files = sorted((f.name, f.stat().st_size, f.stat().st_mtime) for f in Path(ref.base).glob("*.safetensors"))
    key = hashlib.sha256(json.dumps([manifest.folder_hash(ref.adapter), ref.base, base_files, dtype]).encode())
    folder = model_cache() / "merged-adapters" / key.hexdigest()[:20]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f".{folder.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be merging the same adapter
        if not (folder / "config.json").exists():
            on_event(Event("message", f"merging the adapter {ref.adapter} into its base first"))
            shutil.rmtree(folder, ignore_errors=True)
            export_merged(str(ref.adapter), folder, dtype=dtype, on_event=on_event)
    return folder


def _dtype(base: str) -> str:
    """The base's own dtype, so that a merged adapter's model reads like its base."""
    cfg = json.loads((Path(base) / "config.json").read_text())
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(name, "fp32")


class _Bars:
    """Stands in for the `tqdm` module inside mergekit while a merge runs: a bar's steps become progress events,
    and every step first checks whether to stop (the check raises, which unwinds mergekit's executor)."""

    def __init__(self, on_event: Callback, check: Callable[[], None]):
        self.on_event, self.check = on_event, check

    def tqdm(self, iterable: Iterable, *, desc: str | None = None, **_ignored) -> Iterator:
        items = list(iterable)
        label = (desc or "merging").lower()
        self.on_event(Event("start", label, total=len(items)))
        for i, item in enumerate(items, 1):
            self.check()
            yield item
            self.on_event(Event("progress", label, step=i, total=len(items)))


@contextmanager
def _progress(on_event: Callback, check: Callable[[], None]):
    import mergekit.graph
    import mergekit.merge

    bars = _Bars(on_event, check)
    saved = mergekit.graph.tqdm, mergekit.merge.tqdm
    mergekit.graph.tqdm = mergekit.merge.tqdm = bars
    try:
        yield
    finally:
        mergekit.graph.tqdm, mergekit.merge.tqdm = saved
