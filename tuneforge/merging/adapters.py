"""Adapter merges: LoRA adapters of one base combined into one new adapter, the base untouched (PEFT's
`add_weighted_adapter`). The result is an adapter folder like a fine-tune's, served the same way.

Methods, as PEFT names them: `linear` (weighted sum of A and B; the adapters must share rank and targets),
`cat` (A and B stacked: the exact weighted sum of the deltas, rank the sum of the ranks), `svd` (the weighted
sum of the deltas, re-factored to `svd_rank`), and the task-arithmetic family on the deltas: `ties`,
`dare_ties`, `dare_linear`, `magnitude_prune` (with `density`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.merging import manifest
from tuneforge.models import registry
from tuneforge.progress import Callback, Event, ignore

METHODS = ("linear", "cat", "svd", "ties", "dare_ties", "dare_linear", "magnitude_prune")
NEEDS_DENSITY = ("ties", "dare_ties", "dare_linear", "magnitude_prune")
MAX_ADAPTERS = 8


def merge_adapters(adapters: list[str], out: Path, *, weights: list[float] | None = None, method: str = "linear",
                   density: float | None = None, svd_rank: int | None = None, seed: int = 0,
                   locate=registry.resolve, on_event: Callback = ignore) -> dict:
    """Combine the adapters into one adapter folder at `out`; returns its manifest."""
    import torch
    from peft import PeftModel

    from tuneforge.models.loading import load_model, load_tokenizer

    out = Path(out)
    weights = check(adapters, weights, method, density)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose a new output folder")
    refs = [locate(a) for a in adapters]
    base = _one_base(adapters, refs)
    on_event(Event("message", f"combining {len(refs)} adapters of {base} ({method})"))
    torch.manual_seed(seed)  # dare_* drop at random
    model = PeftModel.from_pretrained(load_model(base), str(refs[0].adapter), adapter_name="in0")
    for i, ref in enumerate(refs[1:], 1):
        model.load_adapter(str(ref.adapter), adapter_name=f"in{i}")
    names = [f"in{i}" for i in range(len(refs))]
    _check_compatible(model, names, method, adapters)
    kwargs = {"density": density} if method in NEEDS_DENSITY else {}
    if svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    model.add_weighted_adapter(names, weights, "default", combination_type=method, **kwargs)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), selected_adapters=["default"])
        load_tokenizer(base).save_pretrained(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    base_name = _base_name(refs[0].adapter)
    written = manifest.write(
        tmp, kind="adapter_merge", inputs=[{"name": n, "adapter": str(r.adapter), "sha256": manifest.folder_hash(
            r.adapter)} for n, r in zip(adapters, refs)], config={"method": method, "weights": weights,
                                                                   "density": density, "svd_rank": svd_rank},
        engine="peft", base_model=base_name, base_model_path=base, seed=seed)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    on_event(Event("message", f"wrote the merged adapter to {out}"))
    return written


def check(adapters: list[str], weights: list[float] | None, method: str, density: float | None) -> list[float]:
    """The request's shape (not the adapters themselves); the weights, one per adapter."""
    if method not in METHODS:
        raise UserError(f"unknown adapter merge method '{method}': use one of {', '.join(METHODS)}", param="method")
    if not 2 <= len(adapters) <= MAX_ADAPTERS:
        raise UserError(f"an adapter merge takes 2 to {MAX_ADAPTERS} adapters; got {len(adapters)}",
                        param="adapters")
    weights = list(weights) if weights else [1.0 / len(adapters)] * len(adapters)
    if len(weights) != len(adapters):
        raise UserError(f"{len(weights)} weights for {len(adapters)} adapters: give one weight per adapter",
                        param="weights")
    if method in NEEDS_DENSITY and not (density is not None and 0 < density <= 1):
        raise UserError(f"method '{method}' needs a density in (0, 1] (the share of each delta kept)",
                        param="density")
    return weights


def _one_base(names: list[str], refs: list[registry.ModelRef]) -> str:
    for name, ref in zip(names, refs):
        if ref.adapter is None:
            raise UserError(f"'{name}' is a full model, not a LoRA adapter: merge full models with "
                            "`tuneforge merge CONFIG.yaml`", param="adapters")
    bases = {ref.base for ref in refs}
    if len(bases) > 1:
        raise UserError(f"the adapters are of different bases ({', '.join(sorted(bases))}): an adapter merge "
                        "combines adapters of one base", param="adapters")
    return refs[0].base


def _check_compatible(model, names: list[str], method: str, shown: list[str]) -> None:
    """PEFT's own checks raise bare ValueErrors; say which adapters differ and what to use instead."""
    configs = [model.peft_config[n] for n in names]
    targets = [set(c.target_modules) for c in configs]
    if method == "linear" and (len({c.r for c in configs}) > 1 or any(t != targets[0] for t in targets)):
        raise UserError(f"`linear` needs adapters of one rank on the same modules ({', '.join(shown)} differ): use "
                        "`cat` or `svd`", param="method")


def _base_name(adapter: Path) -> str:
    """The base as the first adapter's manifest names it (a registry name or a folder)."""
    found = manifest.read(adapter)
    if found and found.get("base_model"):
        return found["base_model"]
    return json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
