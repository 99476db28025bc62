"""The merge form of the models page, as data: what the user picked (a method, a base, up to ROWS models with
their weights and densities, t, a dtype; or a mergekit YAML of their own) turned into the request
`POST /v1/merges` takes. A full-model merge becomes a mergekit config; a LoRA adapter merge (`lora:METHOD`) the
adapters, weights and method PEFT combines. The live preview and the submit both call `build`, so the YAML shown
is the config that runs.

What a mergekit method needs comes from mergekit's own spec of it (its base policy, how many inputs, which
parameters are per model or shared, which have no default), so every method it registers is offered, and the
form says what is missing before the job is submitted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml
from pydantic import ValidationError

from tuneforge.errors import UserError
from tuneforge.merging import adapters as lora
from tuneforge.merging import config as configs
from tuneforge.server.merges_protocol import MergeCreate

ROWS = 4  # model rows on the form (a YAML of one's own takes up to mergekit's 16)
LORA = "lora:"  # a method value that is an adapter merge
DTYPES = ("float32", "bfloat16", "float16")
MAX_YAML = 64 << 10  # characters of a YAML of one's own
PER_MODEL = ("weight", "density")  # the per-model parameters the form has fields for


@dataclass
class MergeForm:
    """The form's fields as typed (strings), so that a form shown again keeps every one."""

    name: str = ""
    method: str = "slerp"
    base_model: str = ""
    models: list[str] = field(default_factory=lambda: [""] * ROWS)
    weight: list[str] = field(default_factory=lambda: ["1"] * ROWS)
    density: list[str] = field(default_factory=lambda: [""] * ROWS)
    t: str = "0.5"
    dtype: str = "float32"
    config_yaml: str = ""

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> MergeForm:
        def text(key: str, default: str = "") -> str:
            value = form.get(key, default)
            return value.strip() if isinstance(value, str) else default

        return cls(name=text("name"), method=text("method", "slerp"), base_model=text("base_model"),
                   models=[text(f"model_{i}") for i in range(ROWS)], weight=[text(f"weight_{i}") for i in range(ROWS)],
                   density=[text(f"density_{i}") for i in range(ROWS)], t=text("t"), dtype=text("dtype", "float32"),
                   config_yaml=str(form.get("config_yaml") or "").replace("\r\n", "\n").strip())


@dataclass
class Built:
    """The request (None while anything is wrong), the YAML to show, the problems by field, and what the chosen
    method needs, in words."""

    request: MergeCreate | None
    preview: str
    errors: dict[str, str]
    notes: list[str]


def methods() -> list[tuple[str, list[tuple[str, str]]]]:
    """The method choices, grouped: (group label, [(value, label)])."""
    full = [(spec.name, f"{spec.pretty_name or spec.name} ({spec.name})") for spec in _specs().values()]
    return [("Full models (mergekit)", full),
            ("LoRA adapters of one base (PEFT)", [(LORA + m, f"{m} (adapters)") for m in lora.METHODS])]


@cache
def _specs() -> dict[str, Any]:
    from mergekit.merge_methods import registry

    return {m.spec.name: m.spec for m in sorted(registry.registered_methods(), key=lambda m: m.spec.name)}


def build(form: MergeForm, *, need_name: bool = True) -> Built:
    """The merge the form describes; `need_name` False for a preview (the name is asked for on submit)."""
    errors: dict[str, str] = {}
    if need_name and not form.name:
        errors["name"] = "Name the merged model: it is served as merge:NAME."
    if form.config_yaml:
        body, notes = _own_config(form, errors)
    elif form.method.startswith(LORA):
        body, notes = _adapter_merge(form, errors)
    else:
        body, notes = _full_merge(form, errors)
    shown = {k: v for k, v in body.items() if v is not None}
    preview = yaml.safe_dump(shown.get("config", shown), sort_keys=False, allow_unicode=True)
    request = None
    if not errors:
        try:
            request = MergeCreate(name=form.name or "preview", **body)
        except ValidationError as exc:
            err = exc.errors()[0]
            errors[str(err["loc"][0]) if err["loc"] else "_"] = err["msg"]
    return Built(request, preview, errors, notes)


def _own_config(form: MergeForm, errors: dict[str, str]) -> tuple[dict, list[str]]:
    """The user's YAML, parsed and checked by mergekit. Bounded: at most MAX_YAML characters, and no anchors or
    aliases (`*name`), whose nested references could expand a small text into a huge config."""
    if len(form.config_yaml) > MAX_YAML:
        errors["config_yaml"] = f"Your YAML is {len(form.config_yaml):,} characters; at most {MAX_YAML:,}."
        return {"config": {}}, []
    try:
        if _aliased(form.config_yaml):
            raise UserError("your YAML: write each value out: anchors and aliases (*name) are not taken here")
        cfg = configs.parse(form.config_yaml, "your YAML")
        configs.validate(cfg, "your YAML")
    except UserError as exc:
        errors["config_yaml"] = str(exc)
        return {"config": {}}, []
    return {"config": cfg}, ["Your own YAML is used as it is: the fields above are ignored."]


def _aliased(text: str) -> bool:
    try:
        return any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text))
    except yaml.YAMLError:
        return False  # configs.parse says what is wrong, and where


def _full_merge(form: MergeForm, errors: dict[str, str]) -> tuple[dict, list[str]]:
    from mergekit.merge_methods.base import MISSING, BasePolicy, ParameterScope

    spec = _specs().get(form.method)
    if spec is None:
        errors["method"] = f"Unknown method '{form.method}': choose one from the list."
        return {"config": {}}, []
    params = {p.name: p for p in spec.parameters}
    base = form.base_model if spec.contract.base != BasePolicy.IGNORED else ""
    if spec.contract.base == BasePolicy.REQUIRED and not base:
        errors["base_model"] = f"{spec.pretty_name or spec.name} needs a base model."
    cfg: dict[str, Any] = {"merge_method": spec.name, **({"base_model": base} if base else {})}
    rows = []
    for i, model in enumerate(form.models):
        if not model:
            continue
        values = {}
        for key in PER_MODEL:
            p = params.get(key)
            if p is None or p.scope == ParameterScope.SHARED or (p.scope == ParameterScope.NON_BASE and model == base):
                continue
            text = getattr(form, key)[i]
            if text:
                values[key] = _float(text, f"{key}_{i}", errors)
            elif p.default is MISSING:
                errors[f"{key}_{i}"] = f"{spec.name} needs a {key} for each model."
        rows.append({"model": model, **({"parameters": values} if values else {})})
    cfg["models"] = rows
    t = params.get("t")
    if t is not None and t.scope == ParameterScope.SHARED:
        if form.t:
            cfg["parameters"] = {"t": _float(form.t, "t", errors)}
        elif t.default is MISSING:
            errors["t"] = f"{spec.name} needs t: 0 keeps the base, 1 the other model."
    if form.dtype not in DTYPES:
        errors["dtype"] = f"Choose one of {', '.join(DTYPES)}."
    cfg["dtype"] = form.dtype
    _check_inputs(spec, base, [r["model"] for r in rows], errors)
    return {"config": cfg}, _needs(spec)


def _check_inputs(spec: Any, base: str, models: list[str], errors: dict[str, str]) -> None:
    """mergekit's own check of the method's inputs (the base counts as one), before a job is queued."""
    if not models:
        errors["models"] = "Choose the models to merge."
        return
    inputs = list(dict.fromkeys([*models, *([base] if base else [])]))
    try:
        spec.contract.validate_ids(inputs, base or None)
    except ValueError as exc:
        errors["models"] = f"{spec.pretty_name or spec.name}: {exc} (the base model counts as one input)."


def _needs(spec: Any) -> list[str]:
    from mergekit.merge_methods.base import MISSING, BasePolicy, ParameterScope

    c = spec.contract
    base = {BasePolicy.REQUIRED: "needs a base model", BasePolicy.OPTIONAL: "takes a base model if you give one",
            BasePolicy.IGNORED: "uses no base model"}.get(c.base, f"base: {c.base.value}")
    count = (f"exactly {c.min_inputs}" if c.min_inputs == c.max_inputs else f"at least {c.min_inputs}"
             if c.max_inputs is None else f"{c.min_inputs} to {c.max_inputs}")
    notes = [f"{spec.pretty_name or spec.name} {base} and merges {count} models (the base counted)."]
    scopes = {ParameterScope.SHARED: "shared", ParameterScope.INPUT: "per model",
              ParameterScope.NON_BASE: "per model but the base"}
    described = [f"{p.name} ({scopes.get(p.scope, p.scope)}, "
                 f"{'required' if p.default is MISSING else f'default {p.default}'})" for p in spec.parameters]
    if described:
        notes.append("Parameters: " + "; ".join(described) + ". The form sets t, weight and density; write your own "
                     "YAML for the others.")
    return notes


def _adapter_merge(form: MergeForm, errors: dict[str, str]) -> tuple[dict, list[str]]:
    method = form.method.removeprefix(LORA)
    rows = [i for i, m in enumerate(form.models) if m]
    adapters = [form.models[i] for i in rows]
    weights = [_float(form.weight[i] or "1", f"weight_{i}", errors) for i in rows]
    densities = {form.density[i] for i in rows if form.density[i]}
    if len(densities) > 1:
        errors[f"density_{rows[0]}"] = "A LoRA merge takes one density: give the same in every row, or one."
    density = _float(densities.pop(), f"density_{rows[0]}", errors) if len(densities) == 1 else None
    body = {"adapters": adapters, "weights": weights, "method": method, "density": density}
    try:
        lora.check(adapters, weights, method, density if method in lora.NEEDS_DENSITY else None)
    except UserError as exc:
        errors[{"adapters": "models", "density": f"density_{rows[0] if rows else 0}"}.get(exc.param or "", "_")] = \
            str(exc)
    notes = [f"Combines 2 to {lora.MAX_ADAPTERS} LoRA fine-tunes of one base into one adapter (PEFT's {method}); "
             "the base model and dtype fields are not used."]
    if method in lora.NEEDS_DENSITY:
        notes.append(f"{method} keeps a share of each adapter's delta: its density, in (0, 1].")
    return body, notes


def _float(text: str, key: str, errors: dict[str, str]) -> float | None:
    try:
        return float(text)
    except ValueError:
        errors[key] = f"'{text}' is not a number."
        return None
