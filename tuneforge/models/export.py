"""Write a standalone Hugging Face model: an adapter merged into its base, in the dtype asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tuneforge.errors import UserError
from tuneforge.models import registry
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.progress import Callback, Event, ignore

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_merged(source: str, out: Path, dtype: str = "bf16", on_event: Callback = ignore) -> Path:
    """Merge `source` (an adapter folder, or a model) into a standalone model folder at `out`."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}': choose one of {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose a new --out folder")
    ref = registry.resolve(source, lambda m: on_event(Event("message", m)))
    model = load_model(ref.base, dtype=torch.float32)
    if ref.adapter:
        from peft import PeftModel

        on_event(Event("message", f"merging {ref.adapter} into {ref.base}"))
        model = PeftModel.from_pretrained(model, ref.adapter).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(ref.base).save_pretrained(tmp)
    manifest = {"kind": "model", "merged_from": str(ref.adapter or ref.base), "base_model_path": ref.base,
                "dtype": dtype}
    if ref.adapter and (ref.adapter / "manifest.json").exists():
        manifest["adapter_manifest"] = json.loads((ref.adapter / "manifest.json").read_text())
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
