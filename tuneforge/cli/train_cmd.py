"""`tuneforge train` (`tuneforge export` is in export_cmd.py).

`train`'s options are TrainConfig's fields, built here from the pydantic model (flag, type, default, help):
an option added to TrainConfig is a flag of `tuneforge train` with nothing to write here.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Annotated, Any, Literal

import typer
from pydantic.fields import FieldInfo

from tuneforge.cli.app import DataDir, app, out, use
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import UserError
from tuneforge.training.config import TrainConfig

Opt = typer.Option


def train(**options: Any) -> None:
    """Fine-tune a model on chat data (LoRA by default); writes an adapter and manifest.json to --out."""
    use(options.pop("data_dir"))
    from tuneforge.training.trainer import train as run_training

    cfg = _config(options)
    with ProgressBar("training") as bar:
        result = run_training(cfg, on_event=bar)
    m = result.metrics
    summary = f"done: {result.steps} steps, {result.trained_tokens:,} tokens, final loss {m.get('train_loss')}"
    if "valid_loss" in m:
        summary += f", validation loss {m['valid_loss']}"
    out.print(summary)
    out.print(f"{'adapter' if cfg.weights == 'lora' else 'model'} and manifest in {result.out}")


def _config(options: dict[str, Any]) -> TrainConfig:
    """The TrainConfig the given flags make; a bad value is one line naming its flag."""
    from pydantic import ValidationError

    given = {}
    for name, value in options.items():
        if value is None:
            continue  # not given: TrainConfig's default
        words = _words_beside_int(TrainConfig.model_fields[name].annotation)
        given[name] = _int_or_word(value, words, _flag(name)) if words else value
    try:
        return TrainConfig(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"{_flag(str(err['loc'][0]))}: {err['msg']}") from None


def _parameters() -> list[inspect.Parameter]:
    """One option per TrainConfig field, then --data-dir."""
    params = [_parameter(name, field) for name, field in TrainConfig.model_fields.items()]
    return [*params, inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, annotation=DataDir, default=None)]


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """A field as a typer option: required fields are required flags, bools are --x/--no-x, lists repeat;
    other options default to None (TrainConfig's default then applies; help shows it)."""
    kind, tp = inspect.Parameter.KEYWORD_ONLY, _option_type(field.annotation)
    help_text = field.description
    if typing.get_origin(tp) is list:
        choices = typing.get_args(typing.get_args(field.annotation)[0])
        help_text += f" One of {', '.join(choices)}; repeatable." if choices else " Repeatable."
    if field.is_required():
        return inspect.Parameter(name, kind, annotation=Annotated[tp, Opt(_flag(name), help=help_text)])
    if tp is bool:
        return inspect.Parameter(name, kind, annotation=Annotated[bool, Opt(help=help_text)], default=field.default)
    shown = None if field.default in (None, []) or field.default_factory else str(field.default)
    option = Opt(_flag(name), help=help_text, show_default=shown or False)
    return inspect.Parameter(name, kind, annotation=Annotated[tp | None, option], default=None)


def _option_type(annotation: Any) -> Any:
    """The type typer parses a field as: `X | None` as X; `int | Literal[...]` and list items as text
    (pydantic or _int_or_word check them)."""
    if typing.get_origin(annotation) is list:
        return list[str]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _words_beside_int(annotation):
        return str
    return members[0] if len(members) == 1 else str


def _words_beside_int(annotation: Any) -> tuple[str, ...]:
    """For `int | Literal["auto"]`: ("auto",); for anything else: ()."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    if int not in args:
        return ()
    return tuple(w for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a))


def _int_or_word(value: str, words: tuple[str, ...], flag: str) -> int | str:
    if value in words:
        return value
    try:
        return int(value)
    except ValueError:
        choices = " or ".join(f"'{w}'" for w in words)
        raise UserError(f"{flag} must be {choices} or a whole number, got '{value}'") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


train.__signature__ = inspect.Signature(_parameters())
app.command()(train)

