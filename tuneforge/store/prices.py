"""A project's own model prices, over the shared pricing table (`tuneforge.capture.pricing`): a team that pays a
negotiated rate, or runs a model the table lacks, sets it once and its captured calls are priced with it from then
on (calls already logged keep the cost they were logged with)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.capture import pricing
from tuneforge.errors import UserError
from tuneforge.store.db import now
from tuneforge.store.tables import ProjectPrice

MAX_PER_PROJECT = 200
MAX_USD = 10_000.0  # per million tokens: far above any real price, low enough to catch a misplaced decimal point


@dataclass(frozen=True)
class ModelPrice:
    """A model as the project's pricing sees it: the shared table's price and the project's own that applies to
    it (either may be missing); `own_set` when the project's price is set under this very name (not inherited by a
    dated snapshot from its model's name)."""

    model: str
    shared: pricing.Price | None
    own: pricing.Price | None
    own_set: bool

    @property
    def effective(self) -> pricing.Price | None:
        """What a call on this model is priced at now."""
        return self.own or self.shared


def model_key(model: str | None) -> str:
    """The name a price is stored and looked up under: lower case, without a provider prefix (`openai/gpt-4o` is
    `gpt-4o`), as `Pricing.price` looks names up."""
    return (model or "").strip().rsplit("/", 1)[-1].strip().lower()


def list_(s: Session, project_id: str) -> list[ProjectPrice]:
    """The project's own prices, by model name (at most MAX_PER_PROJECT)."""
    return list(s.scalars(select(ProjectPrice).where(ProjectPrice.project_id == project_id)
                          .order_by(ProjectPrice.model)))


def set_(s: Session, project_id: str, model: str, input_usd: float, output_usd: float) -> ProjectPrice:
    """Set (or replace) the project's price for `model`, in USD per million input and output tokens."""
    name = model_key(model)
    if not name or len(name) > 300:
        raise UserError("model: name the model the price is for (at most 300 characters)", param="model")
    for param, value in (("input", input_usd), ("output", output_usd)):
        if not math.isfinite(value) or value < 0 or value > MAX_USD:
            raise UserError(f"{param}: a price in USD per million tokens, from 0 to {MAX_USD:,.0f}", param=param)
    row = s.get(ProjectPrice, {"project_id": project_id, "model": name})
    if row is None:
        if len(list_(s, project_id)) >= MAX_PER_PROJECT:
            raise UserError(f"model: a project may set at most {MAX_PER_PROJECT} prices; delete one first",
                            param="model")
        row = ProjectPrice(project_id=project_id, model=name)
        s.add(row)
    row.input, row.output, row.updated_at = float(input_usd), float(output_usd), now()
    s.flush()
    return row


def remove(s: Session, project_id: str, model: str) -> None:
    s.execute(delete(ProjectPrice).where(ProjectPrice.project_id == project_id,
                                         ProjectPrice.model == model_key(model)))


def table(s: Session, project_id: str) -> pricing.Pricing:
    """The pricing table as this project sees it: the shared one with the project's own prices over it."""
    shared = pricing.load()
    own = {p.model: pricing.Price(p.input, p.output) for p in list_(s, project_id)}
    return pricing.Pricing({**shared.prices, **own}) if own else shared


def overview(s: Session, project_id: str, models: list[str]) -> list[ModelPrice]:
    """Each of `models` (e.g. those in the project's logs) and each model the project has a price for, by name,
    with the shared table's price and the project's own."""
    shared = pricing.load()
    rows = list_(s, project_id)
    own = pricing.Pricing({p.model: pricing.Price(p.input, p.output) for p in rows})
    names = sorted(set(models) | {p.model for p in rows})
    return [ModelPrice(name, shared.price(name), own.price(name), model_key(name) in own.prices) for name in names]
