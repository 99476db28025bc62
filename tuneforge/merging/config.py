"""A mergekit YAML config: read it, find and replace the models it names, validate it with mergekit.

mergekit's own schema (`MergeConfiguration`) decides what is valid; this module only walks the places where a
config names a model (`base_model`, `models[].model`, `slices[].sources[].model`, the same inside `modules`,
and a tokenizer source), so that our names (`ft:...`, `merge:...`, registry names, adapter folders) can be
turned into folders mergekit reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml

from tuneforge.errors import UserError

MAX_MODELS = 16  # distinct inputs one merge may read
MAX_SLICES = 256
TOKENIZER_KEYWORDS = ("base", "union")  # tokenizer sources that are not models


def parse(text: str, source: str = "config") -> dict:
    """The YAML as a dict; a one-line error with the line for YAML mistakes."""
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark, opened = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        context = f"; {exc.context} at line {opened.line + 1}" if opened is not None and exc.context else ""
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}{context})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{source}: a merge config is a YAML mapping with `merge_method` and `models` or `slices` "
                        "(mergekit's format)")
    return cfg


def _slots(cfg: dict) -> Iterator[tuple[dict, str]]:
    """(mapping, key) for every place a model is named."""
    if isinstance(cfg.get("base_model"), str):
        yield cfg, "base_model"
    for m in cfg.get("models") or []:
        if isinstance(m, dict) and isinstance(m.get("model"), str):
            yield m, "model"
    for sl in cfg.get("slices") or []:
        if isinstance(sl, dict) and isinstance(sl.get("base_model"), str):
            yield sl, "base_model"
        for src in (sl.get("sources") or []) if isinstance(sl, dict) else []:
            if isinstance(src, dict) and isinstance(src.get("model"), str):
                yield src, "model"
    for module in (cfg.get("modules") or {}).values():
        if isinstance(module, dict):
            yield from _slots(module)
    if isinstance(cfg.get("tokenizer_source"), str) and cfg["tokenizer_source"] not in TOKENIZER_KEYWORDS:
        yield cfg, "tokenizer_source"
    tok = cfg.get("tokenizer")
    if isinstance(tok, dict) and isinstance(tok.get("source"), str) and tok["source"] not in TOKENIZER_KEYWORDS:
        yield tok, "source"


def model_names(cfg: dict) -> list[str]:
    """The distinct models a config names, in order of first mention."""
    names = list(dict.fromkeys(m[k] for m, k in _slots(cfg)))
    if len(names) > MAX_MODELS:
        raise UserError(f"this config names {len(names)} models; a merge takes at most {MAX_MODELS}")
    return names


def rewrite(cfg: dict, new_name: Callable[[str], str]) -> dict:
    """A copy of the config with every model name replaced by `new_name(name)`."""
    import copy

    out = copy.deepcopy(cfg)
    for mapping, key in list(_slots(out)):
        mapping[key] = new_name(mapping[key])
    return out


def check_references(cfg: dict, source: str = "config") -> None:
    """Every model mergekit would read is one of the config's plain names (`model_names`): a model written as a
    mapping, with `+lora` or `@revision`, or in a place not known here (a token's source) is refused, so that
    the names are all a caller has to check. A chat template is a built-in name or the template itself."""
    from mergekit.common import ModelReference

    slices = len(cfg.get("slices") or []) + sum(len(m.get("slices") or []) for m in (cfg.get("modules") or {}).values()
                                                 if isinstance(m, dict))
    if slices > MAX_SLICES:
        raise UserError(f"{source}: {slices} slices; a merge takes at most {MAX_SLICES}", param="config")
    known = set(model_names(cfg))
    for ref in _references(validate(cfg, source), ModelReference):
        if ref.lora is not None or ref.model.revision is not None or ref.model.path not in known:
            raise UserError(f"{source}: model '{ref}': name models by their plain name in base_model, models, "
                            "slices or tokenizer_source (no +lora, @revision or nested forms)", param="config")
    template = cfg.get("chat_template")
    if isinstance(template, str) and "{" not in template and template not in _builtin_templates():
        raise UserError(f"{source}: chat_template '{template}': give a template, `auto`, or one of "
                        f"{', '.join(sorted(_builtin_templates()))}", param="config")


def _references(value: Any, kind: type) -> Iterator[Any]:
    """Every instance of `kind` inside a parsed config (pydantic models, mappings, sequences)."""
    from collections.abc import Mapping

    from pydantic import BaseModel

    if isinstance(value, kind):
        yield value
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            yield from _references(item, kind)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _references(item, kind)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _references(item, kind)


def _builtin_templates() -> set[str]:
    from importlib.resources import files

    from mergekit._data import chat_templates

    return {"auto"} | {p.name.removesuffix(".jinja") for p in files(chat_templates).iterdir()
                       if p.name.endswith(".jinja")}


def validate(cfg: dict, source: str = "config") -> Any:
    """mergekit's MergeConfiguration for the config; a one-line error naming the field mergekit rejects."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    try:
        parsed = MergeConfiguration.model_validate(cfg)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        raise UserError(f"{source}: {field}: {err['msg']} (see mergekit's config format)") from None
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{source}: {exc}") from None
    check_method(cfg, source)
    return parsed


def check_method(cfg: dict, source: str = "config") -> None:
    """The merge method exists (mergekit would say so only once the merge starts)."""
    from mergekit.merge_methods import registry

    known = sorted(m.spec.name for m in registry.registered_methods())
    methods = [cfg.get("merge_method")] + [m.get("merge_method") for m in (cfg.get("modules") or {}).values()
                                           if isinstance(m, dict)]
    for method in filter(None, methods):
        if method not in known:
            raise UserError(f"{source}: unknown merge_method '{method}': use one of {', '.join(known)}")
