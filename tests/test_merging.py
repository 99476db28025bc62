"""Merging: `tuneforge merge` gives what `mergekit-yaml` gives on the same config (tensor for tensor), writes a
manifest that traces its inputs, and says what is wrong with a bad config in one line; adapter merges
(`merge_adapters`) combine LoRA deltas as PEFT defines them and refuse what cannot be combined.

Everything runs on tiny random llamas of one shape (tiny_model's config, different seeds), so the merges take
well under a second; the cost is the CLIs' imports (~5 s a process), run two at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tuneforge.errors import NotFound, UserError
from tuneforge.merging import config as configs
from tuneforge.merging import full
from tuneforge.merging.adapters import merge_adapters

BIN = Path(sys.executable).parent
SLERP_T = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
           {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory) -> list[Path]:
    """Three tiny random llamas of tiny_model's shape (seeds 1, 2, 3), each a full HF folder with tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    folders = []
    for seed in (1, 2, 3):
        folder = tmp_path_factory.mktemp(f"tiny-{seed}")
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def lora(base: Path, folder: Path, seed: int, r: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A LoRA adapter with random non-zero B, saved as tuneforge saves one (manifest.json naming its base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    model.save_pretrained(folder)
    (folder / "manifest.json").write_text(json.dumps({"base_model": str(base)}))
    return folder


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, across all its shards, by name."""
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def weight_hash(folder: Path) -> str:
    """sha256 over the weight files (name, then the file's own sha256), computed here independently."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).hexdigest().encode())
    return h.hexdigest()


def merge_configs(m: list[Path]) -> dict[str, dict]:
    a, b, c = (str(p) for p in m)
    return {
        "linear": {"merge_method": "linear", "dtype": "float32",
                   "models": [{"model": a, "parameters": {"weight": 0.7}},
                              {"model": b, "parameters": {"weight": 0.3}}]},
        "slerp": {"merge_method": "slerp", "base_model": a, "dtype": "float32", "parameters": {"t": SLERP_T},
                  "slices": [{"sources": [{"model": a, "layer_range": [0, 4]}, {"model": b, "layer_range": [0, 4]}]}]},
        "ties": {"merge_method": "ties", "base_model": a, "dtype": "float32", "parameters": {"normalize": True},
                 "models": [{"model": b, "parameters": {"density": 0.5, "weight": 0.7}},
                            {"model": c, "parameters": {"density": 0.7, "weight": 0.3}}]},
    }


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_cli_merge_equals_mergekit(models, tmp_path):
    """linear, slerp (per-layer t with filters) and ties: the same tensors as mergekit-yaml, and a manifest."""
    cfgs = merge_configs(models)
    jobs = []
    for name, cfg in cfgs.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        jobs.append([str(BIN / "tuneforge"), "merge", str(path), "--out", str(tmp_path / f"{name}-ours")])
        jobs.append([str(BIN / "mergekit-yaml"), str(path), str(tmp_path / f"{name}-mergekit")])
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, jobs))
    inputs = [tensors(m) for m in models]
    for name, cfg in cfgs.items():
        ours, theirs = tensors(tmp_path / f"{name}-ours"), tensors(tmp_path / f"{name}-mergekit")
        assert sorted(ours) == sorted(theirs), name
        assert max_diff(ours, theirs) <= 1e-6, name
        named = configs.model_names(cfg)
        for m, weights in zip(models, inputs):
            if str(m) in named:
                assert max_diff(ours, weights) > 1e-3, f"{name}: the merge left {m} as it was"
        manifest = json.loads((tmp_path / f"{name}-ours" / "manifest.json").read_text())
        assert manifest["engine"] == {"name": "mergekit", "version": version("mergekit")}
        assert [i["name"] for i in manifest["inputs"]] == named
        assert [i["sha256"] for i in manifest["inputs"]] == [weight_hash(Path(n)) for n in named]
        assert manifest["config"] == cfg
    slerp = tensors(tmp_path / "slerp-ours")
    q, up = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(slerp[q], inputs[0][q], atol=1e-5), "layer 0 attention has t=0: the base's own"
    assert torch.allclose(slerp[up], inputs[1][up], atol=1e-5), "layer 0 mlp has t=1: the other model's"


def test_yaml_syntax_error_names_file_and_line():
    with pytest.raises(UserError, match=r"^merge\.yaml:4: not valid YAML \(mapping values") as info:
        configs.parse("merge_method: linear\nmodels:\n  - model: a\n    weight: 1: 2\ndtype: float32\n", "merge.yaml")
    assert "\n" not in str(info.value)


def test_unknown_method_lists_the_valid_ones(models, tmp_path):
    cfg = {"merge_method": "averaging", "models": [{"model": str(models[0])}, {"model": str(models[1])}]}
    with pytest.raises(UserError, match=r"^m\.yaml: unknown merge_method 'averaging': use one of ") as info:
        full.merge(cfg, tmp_path / "out", source="m.yaml")
    for method in ("linear", "slerp", "ties", "dare_ties"):
        assert method in str(info.value)


def test_unknown_model_names_the_config(models, tmp_path):
    cfg = {"merge_method": "linear", "models": [{"model": str(models[0]), "parameters": {"weight": 0.5}},
                                                {"model": "no-such-model", "parameters": {"weight": 0.5}}]}
    with pytest.raises(NotFound, match=r"^m\.yaml: unknown model 'no-such-model'"):
        full.merge(cfg, tmp_path / "out", source="m.yaml")
    assert not (tmp_path / "out").exists()


def test_non_empty_out_is_refused(models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    cfg = merge_configs(models)["linear"]
    with pytest.raises(UserError, match="is not empty"):
        full.merge(cfg, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_adapter_in_config_is_merged_into_its_base_first(models, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("TUNEFORGE_MODEL_CACHE", str(tmp_path / "cache"))  # the merged adapter lands there
    adapter = lora(models[0], tmp_path / "adapter", seed=7)
    explicit = tmp_path / "explicit"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models[0]), adapter).merge_and_unload() \
        .save_pretrained(explicit)
    AutoTokenizer.from_pretrained(models[0]).save_pretrained(explicit)

    def linear(first: Path) -> dict:
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": str(first), "parameters": {"weight": 0.5}},
                           {"model": str(models[1]), "parameters": {"weight": 0.5}}]}

    written = full.merge(linear(adapter), tmp_path / "via-adapter")
    full.merge(linear(explicit), tmp_path / "via-explicit")
    assert max_diff(tensors(tmp_path / "via-adapter"), tensors(tmp_path / "via-explicit")) <= 1e-6
    first = written["inputs"][0]
    assert first["adapter"] == str(adapter.resolve()) and first["base"] == str(models[0].resolve())
    assert first["sha256"] == weight_hash(adapter)


@pytest.fixture(scope="module")
def adapters(models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"a": lora(models[0], root / "a", seed=11, r=4), "b": lora(models[0], root / "b", seed=12, r=8),
            "other-base": lora(models[1], root / "other", seed=13, r=4)}


def merged_weight(base: Path, adapter: Path, key: str = "model.layers.1.self_attn.q_proj.weight") -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
    return model.state_dict()[key]


def test_cat_of_two_adapters_adds_their_deltas(models, adapters, tmp_path):
    out = tmp_path / "cat"
    merge_adapters([str(adapters["a"]), str(adapters["b"])], out, weights=[1, 1], method="cat")
    base = tensors(models[0])["model.layers.1.self_attn.q_proj.weight"]
    deltas = [merged_weight(models[0], adapters[k]) - base for k in ("a", "b")]
    assert deltas[0].abs().max() > 1e-2 and deltas[1].abs().max() > 1e-2
    combined = merged_weight(models[0], out) - base
    assert torch.allclose(combined, deltas[0] + deltas[1], atol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == str(models[0]) and manifest["engine"]["name"] == "peft"
    assert [i["sha256"] for i in manifest["inputs"]] == [weight_hash(adapters[k]) for k in ("a", "b")]


def test_linear_of_different_ranks_is_one_line(adapters, tmp_path):
    with pytest.raises(UserError, match="`linear` needs adapters of one rank") as info:
        merge_adapters([str(adapters["a"]), str(adapters["b"])], tmp_path / "out", method="linear")
    assert "\n" not in str(info.value) and "`cat`" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_adapters_of_different_bases_are_refused(adapters, tmp_path):
    with pytest.raises(UserError, match="different bases"):
        merge_adapters([str(adapters["a"]), str(adapters["other-base"])], tmp_path / "out")


def test_a_stopped_merge_reports_progress_then_leaves_nothing_behind(models, tmp_path):
    class Stop(Exception):
        pass

    events, steps = [], []

    def check():
        steps.append(1)
        if len(steps) > 20:  # stop mid-graph, as a cancelled job's check does
            raise Stop()

    with pytest.raises(Stop):
        full.merge(merge_configs(models)["ties"], tmp_path / "out", on_event=events.append, check=check)
    assert any(e.kind == "progress" for e in events) and any(e.kind == "start" for e in events)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial"))
    import mergekit.graph

    assert mergekit.graph.tqdm.__name__ == "tqdm"  # mergekit's own progress bars are back
    done = full.merge(merge_configs(models)["ties"], tmp_path / "out")  # and the next merge runs whole
    assert (tmp_path / "out" / "manifest.json").exists() and done["engine"]["name"] == "mergekit"
