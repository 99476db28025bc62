"""Export to llama.cpp and Ollama: a base, a merged fine-tune and an adapter written as GGUF load back and give the
same greedy answers as the source on the email task's test rows; the LoRA GGUF holds PEFT's A and B as
llama.cpp reads them; the Modelfile has what `ollama create` needs.

"Same greedy answers" is checked in one forward pass per row: the source's greedy answer (10 tokens) is fed
to the loaded GGUF model after the prompt, and at every step its argmax must be the answer's next token,
which is exactly the condition for its own greedy decoding to produce that answer.

The slow tests share one module's fixtures (one worker: xdist_group): the real SmolLM2, a random LoRA
adapter on it (no training: strong enough to change every answer, which a test asserts), and one
`--format gguf-lora --ollama` export (base f16 GGUF + LoRA GGUF + Modelfile). Loading a GGUF with
transformers takes 5-8 s on 1 core, most of it parsing the 49k-token vocabulary (twice, unless given a config).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import gguf
import pytest
import torch
from helpers import cli

from tuneforge.errors import UserError
from tuneforge.export import architectures, ollama
from tuneforge.export.exporter import export
from tuneforge.export.gguf_lora import write_lora
from tuneforge.models.templates import GEMMA_CHAT_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
ROWS, MAX_NEW = 4, 10
MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
TARGETS = list(MODULES)
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


# --- helpers
def greedy(model, prompts: list[list[int]]) -> list[list[int]]:
    with torch.no_grad():
        return [model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False)[0, len(ids):].tolist()
                for ids in prompts]


def steps_agreeing(model, prompts: list[list[int]], answers: list[list[int]]) -> list[list[bool]]:
    """Per row and answer step: is the answer's token `model`'s argmax there, given the prompt and the answer so
    far? (one forward pass per row, see the module docstring)"""
    out = []
    with torch.no_grad():
        for ids, answer in zip(prompts, answers):
            logits = model(torch.tensor([ids + answer])).logits[0]
            out.append([a == b for a, b in zip(logits[len(ids) - 1:-1].argmax(-1).tolist(), answer)])
    return out


def agrees(model, prompts: list[list[int]], answers: list[list[int]]) -> list[bool]:
    """Per row: would `model` decode `answer` greedily after the prompt?"""
    return [all(steps) for steps in steps_agreeing(model, prompts, answers)]


def from_gguf(path: Path, config=None):
    """The GGUF loaded by transformers; given the `config` another GGUF of this architecture gave, it skips
    reading the metadata again (half the load time)."""
    from transformers import AutoModelForCausalLM

    if config is not None:  # as a GGUF gave it, less the marker that the weights came quantized
        config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config,
                                                dtype=torch.float32).eval()


def llama_cpp_rows(head_dim: int, n_head: int) -> list[int]:
    """Row order of a q/k weight in llama.cpp, written independently of the exporter: within each head, row 2j is
    HF row j and row 2j+1 is HF row j + d/2."""
    half = head_dim // 2
    return [h * head_dim + part * half + j for h in range(n_head) for j in range(half) for part in (0, 1)]


def read(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()
              if not k.startswith(("GGUF.", "tokenizer.ggml.")) or k in ("tokenizer.ggml.model", "tokenizer.ggml.pre")}
    return fields, {t.name: t for t in reader.tensors}


# --- fixtures
@pytest.fixture(scope="module", autouse=True)
def _cached_tensor_name_map():
    """transformers' GGUF loader builds gguf's tensor-name table once per module of the model (397 times for
    SmolLM2, seconds); the table is a pure function of its arguments."""
    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    yield
    gguf.get_tensor_name_map = original


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer) -> list[list[int]]:
    lines = (ROOT / "examples/email_extraction/test.jsonl").read_text().splitlines()[:ROWS]
    return [list(smollm2_tokenizer.apply_chat_template(json.loads(line)["messages"][:-1], tokenize=True,
                                                       add_generation_prompt=True, return_dict=False))
            for line in lines]


@pytest.fixture(scope="module")
def tuned(smollm2, prompts, tmp_path_factory):
    """A rank-8 LoRA on every linear layer of SmolLM2 with random B (PEFT starts B at zero), saved as an adapter
    folder; and the greedy answers of the base and of the adapted model."""
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.loading import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(str(smollm2)), LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS)).eval()
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.15)
    folder = tmp_path_factory.mktemp("export") / "random-lora"
    model.save_pretrained(folder)
    with model.disable_adapter():
        base = greedy(model, prompts)
    return SimpleNamespace(adapter=folder, base=base, tuned=greedy(model, prompts))


@pytest.fixture(scope="module")
def ollama_dir(tuned, tmp_path_factory) -> Path:
    """`tuneforge export ADAPTER --format gguf-lora --ollama DIR`: the base's f16 GGUF, the LoRA GGUF, a Modelfile."""
    folder = tmp_path_factory.mktemp("export") / "ollama"
    export(str(tuned.adapter), "gguf-lora", ollama_dir=folder)
    return folder


@pytest.fixture(scope="module")
def base_from_gguf(ollama_dir):
    return from_gguf(ollama_dir / "smollm2-135m-instruct-f16.gguf")


# --- real model (slow)
@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_the_random_adapter_changes_every_answer(tuned):
    assert all(t != b for t, b in zip(tuned.tuned, tuned.base)), (tuned.base, tuned.tuned)


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_the_base_as_f16_gguf_loads_back_with_the_same_greedy_answers(ollama_dir, base_from_gguf, prompts, tuned,
                                                                     smollm2):
    base_file = ollama_dir / "smollm2-135m-instruct-f16.gguf"
    fields, tensors = read(base_file)
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "smollm"
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in tensors  # tied to token_embd
    source = json.loads((smollm2 / "config.json").read_text())
    loaded = base_from_gguf.config.to_dict()
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                "max_position_embeddings", "tie_word_embeddings"):
        assert loaded[key] == pytest.approx(source[key]), key
    assert agrees(base_from_gguf, prompts, tuned.base) == [True] * ROWS


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_a_fine_tune_merged_into_f16_gguf_gives_the_adapted_models_greedy_answers(tuned, prompts, base_from_gguf,
                                                                                  tmp_path):
    merged = export(str(tuned.adapter), "gguf", tmp_path).files[0]
    assert merged.name == "random-lora-f16.gguf"
    assert agrees(from_gguf(merged, base_from_gguf.config), prompts, tuned.tuned) == [True] * ROWS


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_q8_0_keeps_the_greedy_choice_at_nine_steps_in_ten(prompts, tuned, base_from_gguf, tmp_path):
    """Q8_0 (8-bit blocks of 32, one f16 scale each) is not exact. The stated tolerance: given the source's
    answer so far, Q8_0 picks the source's next token at >= 90% of the steps, and decodes at least half of the
    rows identically (measured: 39/40 steps and 3/4 rows; on 8 rows 77/80 and 5/8, every miss a first token
    where the base model hesitates between openings)."""
    q8 = export("smollm2-135m-instruct", "gguf", tmp_path / "q8.gguf", quant="q8_0").files[0]
    fields, tensors = read(q8)
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    steps = steps_agreeing(from_gguf(q8, base_from_gguf.config), prompts, tuned.base)
    assert sum(map(sum, steps)) >= 0.9 * sum(map(len, steps)), steps
    assert sum(map(all, steps)) >= ROWS / 2, steps


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_the_lora_gguf_holds_pefts_a_and_b_as_llama_cpp_reads_them(ollama_dir, tuned, smollm2):
    from safetensors.torch import load_file

    fields, tensors = read(ollama_dir / "random-lora-lora-f16.gguf")
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == 16.0
    expected = {f"blk.{i}.{GGUF_NAMES[t]}.weight.lora_{ab}" for i in range(30) for t in TARGETS for ab in "ab"}
    assert set(tensors) == expected
    peft = load_file(tuned.adapter / "adapter_model.safetensors")
    config = json.loads((smollm2 / "config.json").read_text())
    n_head, n_kv, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    for layer in (0, 29):
        for target in TARGETS:
            key = f"base_model.model.model.layers.{layer}.{MODULES[target]}.{target}"
            a, b = peft[f"{key}.lora_A.weight"], peft[f"{key}.lora_B.weight"]
            name = f"blk.{layer}.{GGUF_NAMES[target]}.weight"
            got_a = torch.from_numpy(tensors[name + ".lora_a"].data.copy()).float()
            got_b = torch.from_numpy(tensors[name + ".lora_b"].data.copy()).float()
            assert got_a.shape == a.shape and torch.equal(got_a, a.half().float())
            if target in ("q_proj", "k_proj"):  # llama.cpp's rotary layout: rows interleaved per head
                b = b[llama_cpp_rows(head_dim, n_head if target == "q_proj" else n_kv)]
            assert got_b.shape == b.shape and torch.equal(got_b, b.half().float())


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_the_ollama_folder_has_a_modelfile_ollama_create_takes(ollama_dir):
    instructions = parse_modelfile(ollama_dir / "Modelfile")
    names = [name for name, _ in instructions]
    assert names[:2] == ["from", "adapter"]
    values = dict(instructions)
    assert (ollama_dir / values["from"]).is_file() and (ollama_dir / values["adapter"]).is_file()
    assert values["template"].startswith("{{- if .System }}<|im_start|>system")
    assert values["system"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert ("parameter", 'stop "<|im_end|>"') in instructions


@pytest.mark.slow
@pytest.mark.xdist_group("export_smollm2")
def test_llama_cpp_loads_the_exports_and_answers_the_same(ollama_dir, prompts, tuned, tmp_path):
    """Where llama-cpp-python is installed (not in CI: it builds from source for minutes)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    base = ollama_dir / "smollm2-135m-instruct-f16.gguf"
    for kwargs, answers in (({}, tuned.base), ({"lora_path": str(ollama_dir / "random-lora-lora-f16.gguf")},
                                                tuned.tuned)):
        llm = llama_cpp.Llama(model_path=str(base), n_ctx=1024, n_threads=2, verbose=False, **kwargs)
        try:
            got = [decode_llama_cpp(llm, ids, len(answer)) for ids, answer in zip(prompts, answers)]
        finally:
            llm.close()
        assert sum(g == a for g, a in zip(got, answers)) >= ROWS - 1, (got, answers)


def decode_llama_cpp(llm, ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n or token == llm.token_eos():
            return out
    return out


# --- no model (fast)
INSTRUCTION = re.compile(r'^(\w+) ("""(.*?)"""|[^\n]*)$', re.S | re.M)
OLLAMA_COMMANDS = {"from", "parameter", "template", "system", "adapter", "license", "message", "requires", "draft",
                   "renderer", "parser"}


def parse_modelfile(path: Path) -> list[tuple[str, str]]:
    """Ollama's parser rules (parser/parser.go): `COMMAND args` lines, commands from a fixed set, multi-line
    values in triple quotes; FROM is required."""
    text, out = path.read_text(), []
    for match in INSTRUCTION.finditer(text):
        command = match.group(1).lower()
        assert command in OLLAMA_COMMANDS, command
        out.append((command, match.group(3) if match.group(3) is not None else match.group(2).strip()))
    assert not INSTRUCTION.sub("", text).strip(), "a line that is not an instruction"
    assert any(c == "from" for c, _ in out), "no FROM line"
    return out


def test_modelfile_templates_follow_the_chat_format(smollm2_tokenizer, tmp_path):
    path = ollama.write_modelfile(tmp_path, "m.gguf", smollm2_tokenizer, ["<|im_end|>"])
    values = dict(parse_modelfile(path))
    assert values["from"] == "./m.gguf" and "adapter" not in values and values["template"] == ollama.CHATML
    gemma = SimpleNamespace(chat_template=GEMMA_CHAT_TEMPLATE)
    text = ollama.modelfile("g.gguf", gemma, ["<eos>", "<end_of_turn>"], "a.gguf")
    assert '<start_of_turn>model\n"""' in text and "SYSTEM" not in text  # Gemma has no default system prompt
    assert text.endswith('PARAMETER stop "<eos>"\nPARAMETER stop "<end_of_turn>"\n')
    assert "TEMPLATE" not in ollama.modelfile("x.gguf", SimpleNamespace(chat_template="{{ messages }}"), [])


def test_rslora_and_a_module_alpha_fold_into_b(tiny_model, tmp_path):
    """llama.cpp has one alpha and scales by alpha / rank; PEFT scales rsLoRA by alpha / sqrt(rank), and
    alpha_pattern gives a module its own alpha: the file's alpha is alpha * sqrt(rank), and B carries the rest."""
    from safetensors.torch import save_file

    config = json.loads((tiny_model / "config.json").read_text())
    adapter = tmp_path / "rs"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": True, "alpha_pattern": {"v_proj": 2},
        "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": str(tiny_model)}))
    torch.manual_seed(0)
    weights = {f"base_model.model.model.layers.0.self_attn.{m}.lora_{ab}.weight": torch.randn(shape)
               for m in ("q_proj", "v_proj") for ab, shape in (("A", (4, 64)), ("B", (64, 4)))}
    save_file(weights, adapter / "adapter_model.safetensors")
    fields, tensors = read(write_lora(adapter, config, tmp_path / "rs.gguf", dtype="f32"))
    assert fields["adapter.lora.alpha"] == pytest.approx(8 * math.sqrt(4))
    head_dim = 64 // config["num_attention_heads"]
    q_b = weights["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert torch.allclose(torch.from_numpy(tensors["blk.0.attn_q.weight.lora_b"].data.copy()),
                          q_b[llama_cpp_rows(head_dim, config["num_attention_heads"])])
    # v_proj: PEFT scale 2 / sqrt(4) = 1, llama.cpp's 16 / 4 = 4, so B is stored / 4
    v_b = weights["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert torch.allclose(torch.from_numpy(tensors["blk.0.attn_v.weight.lora_b"].data.copy()), v_b / 4)


def test_unsupported_models_and_options_are_refused_in_one_line(tiny_model, tmp_path):
    with pytest.raises(UserError, match=r"supported: llama, mistral, gemma3_text\).*--format hf.*convert_hf_to_gguf"):
        architectures.for_config({"model_type": "qwen2"})
    with pytest.raises(UserError, match="unknown format 'onnx'"):
        export(str(tiny_model), "onnx")
    with pytest.raises(UserError, match="unknown quantization 'q4_k'"):
        export(str(tiny_model), "gguf", quant="q4_k")
    with pytest.raises(UserError, match="--ollama writes GGUF files"):
        export(str(tiny_model), "hf", ollama_dir=tmp_path / "o")
    with pytest.raises(UserError, match="writes an adapter, and .* is a model"):
        export(str(tiny_model), "gguf-lora", tmp_path / "x.gguf")
    (tmp_path / "taken.gguf").write_text("")
    with pytest.raises(UserError, match="taken.gguf exists"):
        export(str(tiny_model), "gguf", tmp_path / "taken.gguf")
    proc = cli("export", str(tiny_model), "--format", "gguf-lora", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "give an adapter folder" in proc.stderr
