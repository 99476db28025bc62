"""A loaded Hugging Face model (adapters already merged) as one GGUF file that llama.cpp and Ollama load.

Written with the `gguf` package's GGUFWriter: metadata by architecture (`architectures.py`), the tokenizer
(`vocab.py`), then every tensor under llama.cpp's name. Weights are f32, f16 or Q8_0 (blocks of 32 with one
f16 scale, `gguf.quants`); norms and other 1-D tensors stay f32, as llama.cpp's converter keeps them, and a
matrix whose rows do not split into blocks of 32 falls back to f16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

from tuneforge.export.architectures import for_config
from tuneforge.export.vocab import add_vocab
from tuneforge.progress import Callback, Event, ignore

QUANTS: dict[str, gguf.LlamaFileType] = {
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "f32": gguf.LlamaFileType.ALL_F32,
}


def write_model(model: Any, tokenizer: Any, tokenizer_dir: Path, out: Path, quant: str = "f16", name: str = "",
                on_event: Callback = ignore) -> Path:
    """Write `model` to the GGUF file `out`. `tokenizer_dir` holds the tokenizer's saved files and the model's
    config.json (what gguf.SpecialVocab reads)."""
    config = model.config.to_dict()
    arch = for_config(config)
    writer = gguf.GGUFWriter(None, arch.name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or config.get("_name_or_path") or arch.name)
    arch.write_hparams(writer, config)
    writer.add_file_type(QUANTS[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_vocab = model.get_input_embeddings().weight.shape[0]
    add_vocab(writer, tokenizer, tokenizer_dir, n_vocab)
    _add_end_of_turn(writer, model, tokenizer)

    tensors = {k: v for k, v in model.state_dict().items() if not (k == "lm_head.weight" and _tied(model))}
    on_event(Event("start", f"{len(tensors)} tensors, {quant}", total=len(tensors)))
    for step, (hf_name, tensor) in enumerate(tensors.items(), 1):
        data = arch.transform(hf_name, tensor.detach().float(), config).numpy()
        array, raw_dtype = encode(data, quant)
        writer.add_tensor(arch.tensor_name(hf_name, config), array, raw_dtype=raw_dtype)
        on_event(Event("progress", step=step, total=len(tensors)))
    return write_file(writer, out)


def encode(data: np.ndarray, quant: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    """One tensor's bytes as the file stores them, and their GGML type when numpy's dtype does not say it."""
    if data.ndim < 2 or quant == "f32":
        return data.astype(np.float32), None
    if quant == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def _tied(model: Any) -> bool:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return bool(getattr(config, "tie_word_embeddings", False))


def _add_end_of_turn(writer: gguf.GGUFWriter, model: Any, tokenizer: Any) -> None:
    """A stop token beside EOS (Gemma's <end_of_turn>): llama.cpp stops on its EOT token as on EOS."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    extra = [i for i in ids if i != tokenizer.eos_token_id]
    if extra:
        writer.add_eot_token_id(extra[0])


def write_file(writer: gguf.GGUFWriter, out: Path) -> Path:
    """Write next to `out` and rename at the end: a failed or interrupted export leaves no half file there."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.rename(out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out
