"""`tuneforge export`'s work: any model name -> the files asked for (GGUF, GGUF LoRA, HF folder, Modelfile).

MODEL is what models.registry.resolve takes: a registry name, an HF folder (a merge's output too), or an
adapter folder, whose base is loaded and, for `gguf`, the adapter merged in. `gguf-lora` writes the adapter
alone; with `ollama` it also writes the base's GGUF, which the Modelfile's FROM names and ADAPTER applies to.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.export import architectures, gguf_lora, ollama
from tuneforge.export.gguf import QUANTS, write_model
from tuneforge.models import registry
from tuneforge.progress import Callback, Event, ignore

FORMATS = ("gguf", "gguf-lora", "hf")


@dataclass
class Exported:
    files: list[Path] = field(default_factory=list)
    modelfile: Path | None = None


def export(source: str, fmt: str = "gguf", out: Path | None = None, quant: str = "f16", ollama_dir: Path | None = None,
           dtype: str = "bf16", on_event: Callback = ignore) -> Exported:
    """Export `source` as `fmt` to `out` (a file, or an existing folder for the default file name; a new folder
    for `hf`), or into `ollama_dir` with a Modelfile."""
    _check_options(fmt, quant, out, ollama_dir)
    ref = registry.resolve(source, lambda m: on_event(Event("message", m)))
    if fmt == "hf":
        from tuneforge.models.export import export_merged

        return Exported([export_merged(source, out or Path(f"{_name(source, ref)}-hf"), dtype, on_event)])
    if fmt == "gguf-lora" and ref.adapter is None:
        raise UserError(f"--format gguf-lora writes an adapter, and {source} is a model: give an adapter folder, "
                        "or use --format gguf")
    config = _config(ref.base)
    architectures.for_config(config)  # refuse before loading anything
    folder = ollama_dir or (out if out is not None and out.is_dir() else None)
    name, merge = _name(source, ref), fmt == "gguf"
    lora_dtype = "f32" if quant == "f32" else "f16"  # llama.cpp applies a LoRA in f16 or f32, not Q8_0
    lora_file = _target(folder, out, f"{name}-lora-{lora_dtype}.gguf") if fmt == "gguf-lora" else None
    model_name = name if merge else _name(ref.base, registry.ModelRef(ref.base))
    model_file = (_target(folder, out if merge else None, f"{model_name}-{quant}.gguf")
                  if merge or ollama_dir is not None else None)
    done = Exported()
    if lora_file is not None:
        on_event(Event("message", f"writing the adapter {ref.adapter} as {lora_file}"))
        done.files.append(gguf_lora.write_lora(ref.adapter, config, lora_file, lora_dtype, name))
    if model_file is None:
        return done
    model, tokenizer = _load(ref, merge, on_event)
    on_event(Event("message", f"writing {model_file}"))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        done.files.insert(0, write_model(model, tokenizer, Path(tmp), model_file, quant, model_name, on_event))
    if ollama_dir is not None:
        done.modelfile = ollama.write_modelfile(ollama_dir, model_file.name, tokenizer, _stop_tokens(model, tokenizer),
                                                lora_file.name if lora_file else None)
    return done


def _check_options(fmt: str, quant: str, out: Path | None, ollama_dir: Path | None) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}': choose one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise UserError(f"unknown quantization '{quant}': choose one of {', '.join(QUANTS)}")
    if ollama_dir is not None and out is not None:
        raise UserError("give --out or --ollama DIR, not both (--ollama writes the GGUFs into DIR)")
    if ollama_dir is not None and fmt == "hf":
        raise UserError("--ollama writes GGUF files: use --format gguf (merged) or gguf-lora (base + adapter)")
    if ollama_dir is not None and (ollama_dir / "Modelfile").exists():
        raise UserError(f"{ollama_dir / 'Modelfile'} exists: choose a new --ollama folder")


def _target(folder: Path | None, out: Path | None, default: str) -> Path:
    path = folder / default if folder is not None else out if out is not None else Path(default)
    if path.exists():
        raise UserError(f"{path} exists: choose another --out, or delete it first")
    path.parent.mkdir(parents=True, exist_ok=True)  # an --ollama folder, or --out's
    return path


def _name(source: str, ref: registry.ModelRef) -> str:
    """A file-name-safe name: the registry name, else the adapter's or model's folder name."""
    if registry.is_base(source):
        return source
    raw = ref.adapter.name if ref.adapter else Path(ref.base).name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"


def _config(base: str) -> dict[str, Any]:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base).to_dict()


def _load(ref: registry.ModelRef, merge: bool, on_event: Callback) -> tuple[Any, Any]:
    """The model in fp32 (the adapter merged in when asked) and its tokenizer: the adapter folder's when it has
    one, else the base's."""
    from tuneforge.models.loading import load_model, load_tokenizer

    on_event(Event("message", f"loading {ref.base}"))
    model = load_model(ref.base)
    if merge and ref.adapter is not None:
        from peft import PeftModel

        on_event(Event("message", f"merging {ref.adapter} into it"))
        model = PeftModel.from_pretrained(model, ref.adapter).merge_and_unload()
    own = merge and ref.adapter is not None and (ref.adapter / "tokenizer_config.json").exists()
    return model.eval(), load_tokenizer(str(ref.adapter if own else ref.base))


def _stop_tokens(model: Any, tokenizer: Any) -> list[str]:
    from tuneforge.models.loading import stop_token_ids

    return [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(model, tokenizer)]
