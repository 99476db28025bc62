"""A project's own model prices, over the shared pricing table (`tuneforge.capture.pricing`): a team that pays a
negotiated rate, or runs a model the table lacks, sets it once and its captured calls are priced with it."""

from __future__ import annotations

import math

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.capture import pricing
from tuneforge.errors import UserError
from tuneforge.store.db import now
from tuneforge.store.tables import ProjectPrice

MAX_PER_PROJECT = 200


def list_(s: Session, project_id: str) -> list[ProjectPrice]:
    return list(s.scalars(select(ProjectPrice).where(ProjectPrice.project_id == project_id)
                          .order_by(ProjectPrice.model)))


def set_(s: Session, project_id: str, model: str, input_usd: float, output_usd: float) -> ProjectPrice:
    """Set (or replace) the project's price for `model`, in USD per million input and output tokens."""
    name = (model or "").strip().lower()
    if not name or len(name) > 300:
        raise UserError("model: name the model the price is for (at most 300 characters)", param="model")
    for param, value in (("input", input_usd), ("output", output_usd)):
        if not math.isfinite(value) or value < 0 or value > 10_000:
            raise UserError(f"{param}: a price in USD per million tokens, from 0 to 10000", param=param)
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
    s.execute(delete(ProjectPrice).where(ProjectPrice.project_id == project_id, ProjectPrice.model == model))


def table(s: Session, project_id: str) -> pricing.Pricing:
    """The pricing table as this project sees it: the shared one with the project's own prices over it."""
    shared = pricing.load()
    own = {p.model: pricing.Price(p.input, p.output) for p in list_(s, project_id)}
    return pricing.Pricing({**shared.prices, **own}) if own else shared
