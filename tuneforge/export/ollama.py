"""An Ollama Modelfile for exported GGUFs, so that `ollama create NAME -f DIR/Modelfile` takes the folder as is.

Ollama renders prompts with a Go text/template, not the model's Jinja chat template, so TEMPLATE is the chat
format written again in Go for the families we export: ChatML (SmolLM2) and Gemma's turns. Ollama passes
the system prompt as `.System` (and also as the first of `.Messages`, which the templates skip). A default
system prompt that the Hugging Face template adds when a conversation has none (SmolLM2's) becomes SYSTEM,
which Ollama adds in the same case. Each stop token of the model is a PARAMETER stop. FROM and ADAPTER name
files beside the Modelfile (Ollama reads paths relative to it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}{{- if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}{{- end }}<|im_start|>assistant\n"
)
# Gemma folds the system prompt into the first user turn (as models/templates.py does) and calls the
# assistant "model"
GEMMA = (
    "{{- $first := true }}"
    "{{- range .Messages }}{{- if ne .Role \"system\" }}<start_of_turn>"
    "{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
    "{{ if and $first $.System }}{{ $.System }}\n\n{{ end }}{{ $first = false }}{{ .Content }}<end_of_turn>\n"
    "{{ end }}{{- end }}<start_of_turn>model\n"
)


def chat_family(chat_template: str | None) -> str | None:
    """Which of our templates a Hugging Face chat template is, by its turn markers."""
    if not chat_template:
        return None
    if "<|im_start|>" in chat_template:
        return "chatml"
    if "<start_of_turn>" in chat_template:
        return "gemma"
    return None


def default_system(tokenizer: Any) -> str | None:
    """The system prompt the chat template adds to a conversation that has none (ChatML only)."""
    if chat_family(tokenizer.chat_template) != "chatml":
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                         add_generation_prompt=True)
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S)
    return found.group(1) if found else None


def modelfile(model_file: str, tokenizer: Any, stops: list[str], adapter_file: str | None = None) -> str:
    """The Modelfile's text. A chat template of another family gets no TEMPLATE: Ollama then reads the GGUF's
    own chat template, which it knows for common families only."""
    lines = [f"FROM ./{model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    template = {"chatml": CHATML, "gemma": GEMMA}.get(chat_family(tokenizer.chat_template) or "")
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    system = default_system(tokenizer)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {_quoted(s)}" for s in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, model_file: str, tokenizer: Any, stops: list[str],
                    adapter_file: str | None = None) -> Path:
    path = folder / "Modelfile"
    path.write_text(modelfile(model_file, tokenizer, stops, adapter_file))
    return path


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
