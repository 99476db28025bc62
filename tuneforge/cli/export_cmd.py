"""`tuneforge export`: a model for llama.cpp and Ollama (GGUF, GGUF LoRA, a Modelfile), or a merged HF folder.

`--format hf` is the default, as `export` wrote only that before GGUF: `tuneforge export ADAPTER --merge --out
DIR` still does what it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.app import DataDir, app, out, use
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import UserError

Opt = typer.Option


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Registry name, model folder (a merge's output too) or adapter "
                                              "folder (merged into its base, except for gguf-lora).")],
    fmt: Annotated[str, Opt("--format", help="gguf (llama.cpp / Ollama), gguf-lora (an adapter alone, applied "
                                             "to its base's GGUF) or hf (a merged Hugging Face folder).")] = "hf",
    quant: Annotated[str, Opt(help="A model GGUF: f16, q8_0 or f32 (norms stay f32). A LoRA GGUF is f16 (f32 "
                                   "with f32).")] = "f16",
    out_path: Annotated[Path | None, Opt("--out", help="gguf: the file, or an existing folder for the default "
                                                       "name; hf: a new folder.")] = None,
    ollama_dir: Annotated[Path | None, Opt("--ollama", help="Write the GGUF(s) and a Modelfile into this folder "
                                                            "(`ollama create NAME -f DIR/Modelfile`).")] = None,
    dtype: Annotated[str, Opt(help="hf: bf16, fp16 or fp32.")] = "bf16",
    merge: Annotated[bool, Opt(hidden=True, help="Accepted for older scripts: hf and gguf always merge.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Export a model: GGUF for llama.cpp and Ollama (with a Modelfile), a GGUF LoRA, or a merged HF folder."""
    use(data_dir)
    if not merge:
        raise UserError("--no-merge: to export an adapter alone, use --format gguf-lora")
    from tuneforge.export.exporter import export as run

    with ProgressBar("exporting") as bar:
        done = run(model, fmt, out_path, quant, ollama_dir, dtype, on_event=bar)
    for path in done.files:
        out.print(f"wrote {path}", highlight=False)
    if done.modelfile is not None:
        out.print(f"wrote {done.modelfile}; then: ollama create NAME -f {done.modelfile}", highlight=False)
