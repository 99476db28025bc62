"""Merge search: the strategies find the best values of a scripted score, and the command merges and scores
real (tiny) candidates end to end, keeping only the best."""

from __future__ import annotations

import json

import pytest
from helpers import chat_row, cli, write_jsonl

from tuneforge.errors import UserError
from tuneforge.merging import search


def score(_n: int, values: dict) -> dict:
    """Two tasks, each best at one end of the space: task a wants t=0.75, task b wants u=0.25."""
    return {"a": 1 - (values["t"] - 0.75) ** 2, "b": 1 - (values["u"] - 0.25) ** 2}


def test_space_placeholders_and_filling():
    assert search.parse_space(["t=0:1:5", "w=0.2,0.8"]) == {"t": [0, 0.25, 0.5, 0.75, 1], "w": [0.2, 0.8]}
    for bad in ("t", "t=", "t=a,b", "t=0:1"):
        with pytest.raises(UserError, match="--param"):
            search.parse_space([bad])
    cfg = {"merge_method": "slerp", "parameters": {"t": [{"filter": "self_attn", "value": "$t"}, {"value": "$u"}]}}
    assert search.placeholders(cfg) == {"t", "u"}
    assert search.fill(cfg, {"t": 0.3, "u": 0.9})["parameters"]["t"] == [{"filter": "self_attn", "value": 0.3},
                                                                        {"value": 0.9}]
    with pytest.raises(UserError, match="placeholders"):
        search.check_space(cfg, {"t": [0.5]}, "grid", 4)
    with pytest.raises(UserError, match="strategy"):
        search.check_space(cfg, {"t": [0.5], "u": [0.5]}, "anneal", 4)


def test_grid_tries_every_combination_and_coordinate_finds_the_best_with_fewer():
    space = search.parse_space(["t=0:1:5", "u=0:1:5"])
    grid = search.run(space, score, strategy="grid", trials=100)
    assert len(grid) == 25 and len({json.dumps(t.values) for t in grid}) == 25
    best = max(grid, key=lambda t: t.score)
    assert best.values == {"t": 0.75, "u": 0.25}
    sampled = search.run(space, score, strategy="grid", trials=7, seed=1)
    assert len(sampled) == 7 and len({json.dumps(t.values) for t in sampled}) == 7
    coord = search.run(space, score, strategy="coordinate", trials=100)
    assert max(coord, key=lambda t: t.score).values == {"t": 0.75, "u": 0.25}
    assert len(coord) < 25 and len({json.dumps(t.values) for t in coord}) == len(coord)  # nothing tried twice
    capped = search.run(space, score, strategy="coordinate", trials=3)
    assert len(capped) == 3
    rep = search.report(coord, space, strategy="coordinate", config={})
    assert rep["best"]["values"] == {"t": 0.75, "u": 0.25}
    assert [c["best"] for c in rep["curve"]] == sorted(c["best"] for c in rep["curve"])  # best so far only rises
    assert "<svg" in search.render(rep) and "polyline" in search.render(rep)


def test_merge_search_command_keeps_the_best_candidate_and_reports_the_curve(tiny_model, tmp_path):
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    other = tmp_path / "other"
    torch.manual_seed(7)
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model)).save_pretrained(other)
    config = tmp_path / "search.yaml"
    config.write_text(f"""merge_method: slerp
base_model: {tiny_model}
slices:
  - sources:
      - model: {tiny_model}
        layer_range: [0, 4]
      - model: {other}
        layer_range: [0, 4]
parameters:
  t:
    - filter: self_attn
      value: $t_attn
    - value: $t_rest
dtype: float32
""")
    tasks = [write_jsonl(tmp_path / f"{name}.jsonl", [chat_row(f"{name} {i}", f"{i}") for i in range(3)])
             for name in ("alpha", "beta")]
    out = tmp_path / "best"
    run = cli("merge-search", str(config), "--param", "t_attn=0,1", "--param", "t_rest=0.5", "--data",
              str(tasks[0]), "--data", str(tasks[1]), "--rows", "2", "--max-tokens", "3", "--out", str(out))
    assert "best of 2" in run.stdout
    rep = json.loads((out / "search.json").read_text())
    assert [t["values"] for t in rep["trials"]] == [{"t_attn": 0.0, "t_rest": 0.5}, {"t_attn": 1.0, "t_rest": 0.5}]
    assert all(set(t["scores"]) == {"alpha", "beta"} for t in rep["trials"])
    assert (out / "model.safetensors").exists() and (out / "manifest.json").exists()
    assert json.loads((out / "manifest.json").read_text())["config"]["parameters"]["t"][0]["value"] == \
        rep["best"]["values"]["t_attn"]
    assert "<svg" in (out / "search.html").read_text()
    assert not list(tmp_path.glob(".best.trials*"))  # the losing candidates are gone
