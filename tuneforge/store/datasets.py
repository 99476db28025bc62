"""Datasets: conversations chosen from request logs or an uploaded file, deduplicated, sampled and split;
each entry keeps where it came from (log, file line, relabel). A relabel makes a new dataset (the old one
is never changed) filled by a `relabel` job.

A dataset's `kind` is "chat" (each entry a conversation) or "preference" (each entry a pair, for DPO:
`messages` is the input plus the preferred answer, so anything that shows or exports a chat entry still
works, and `rejected` the non-preferred answer). Preference datasets come from an eval run's verdicts (made at
once) or from self-play (filled by a `self_play` job, status `generating`); their export is OpenAI's
preference JSONL.

Pruning rules belong to the dataset: exports apply them, and a model fine-tuned on the dataset applies the
same rules to its requests when served.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge.capture.record import example
from tuneforge.data import dedupe, split
from tuneforge.data.prune import prune
from tuneforge.errors import Conflict, NotFound, UserError
from tuneforge.store import files, logs
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import Dataset, DatasetEntry

DEDUPE = ("none", "exact", "near")
CHAT, PREFERENCE = "chat", "preference"
FILLING = {"relabeling": "relabel", "generating": "self_play"}  # status while a job fills it -> the job's kind
MAX_PRUNING_RULES = 32  # rules one dataset may hold: every served request of its models runs each of them
MAX_RULE_CHARS = 50_000  # one rule's text (a long system prompt fits)


@dataclass
class Recipe:
    """How entries are chosen from the candidates."""

    sample: int | None = None  # at most this many, at random (after dedupe)
    dedupe: str = "near"  # "none" | "exact" | "near" (near includes exact)
    near_threshold: float = 0.8  # estimated Jaccard similarity of word 3-grams
    test_fraction: float = 0.2
    label: str | None = None  # stratify the split by `tag.KEY` (a log tag) or `reply.FIELD` (a JSON reply's field)
    seed: int = 0
    pruning_rules: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.dedupe not in DEDUPE:
            raise UserError(f"dedupe '{self.dedupe}': use one of {', '.join(DEDUPE)}", param="dedupe")
        if not 0 <= self.test_fraction < 1:
            raise UserError("test_fraction must be at least 0 and below 1", param="test_fraction")
        if not 0 < self.near_threshold <= 1:
            raise UserError("near_threshold must be above 0 and at most 1", param="near_threshold")
        if self.label and not self.label.startswith(("tag.", "reply.")):
            raise UserError(f"label '{self.label}': write tag.KEY (a log tag) or reply.FIELD (a field of a JSON "
                            "reply)", param="label")
        if self.sample is not None and self.sample < 1:
            raise UserError("sample must be a positive number of entries", param="sample")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "pruning_rules"}


@dataclass
class Candidate:
    messages: list[dict[str, Any]]
    tools: list[Any] | None
    lineage: dict[str, Any]
    tags: dict[str, Any]


def _text(c: Candidate, rules: list[str], system: bool = True) -> str:
    """What dedupe compares: the conversation as the model will see it (pruned), answer included; for near
    duplicates without system/developer messages, which a long shared prompt would make alike."""
    messages = prune(c.messages, rules)
    if not system:
        messages = [m for m in messages if m.get("role") not in ("system", "developer")]
    return json.dumps(messages, ensure_ascii=False, sort_keys=True)


def _label(c: Candidate, label: str | None) -> str | None:
    if not label:
        return None
    kind, name = label.split(".", 1)
    if kind == "tag":
        value = c.tags.get(name)
    else:
        try:
            value = json.loads(c.messages[-1].get("content") or "").get(name)
        except (ValueError, AttributeError):
            value = None
    return None if value is None else str(value)[:200]


def choose(candidates: list[Candidate], recipe: Recipe) -> tuple[list[tuple[Candidate, str, str | None]], dict]:
    """Dedupe, sample, split: [(candidate, split, label)] and counts of what was removed."""
    counts = {"candidates": len(candidates), "exact_duplicates": 0, "near_duplicates": 0}
    if recipe.dedupe != "none":
        drop = set(dedupe.exact_duplicates([_text(c, recipe.pruning_rules) for c in candidates]))
        counts["exact_duplicates"] = len(drop)
        if recipe.dedupe == "near":
            kept = [i for i in range(len(candidates)) if i not in drop]
            texts = [_text(candidates[i], recipe.pruning_rules, system=False) for i in kept]
            near = dedupe.near_duplicates(texts, recipe.near_threshold, seed=recipe.seed + 1)
            counts["near_duplicates"] = len(near)
            drop |= {kept[j] for j in near}
        candidates = [c for i, c in enumerate(candidates) if i not in drop]
    candidates = [candidates[i] for i in split.sample(len(candidates), recipe.sample, recipe.seed)]
    labels = [_label(c, recipe.label) for c in candidates]
    sides = split.split(len(candidates), recipe.test_fraction, recipe.seed, labels if recipe.label else None)
    counts["train"], counts["test"] = sides.count("train"), sides.count("test")
    return list(zip(candidates, sides, labels)), counts


def _from_logs(s: Session, project_id: str, flt: logs.LogFilter) -> list[Candidate]:
    out = []
    flt = logs.LogFilter(**{**flt.__dict__, "status": "ok"})
    for row in logs.matching(s, project_id, flt):
        ex = example(json.loads(row.request), json.loads(row.response) if row.response else None)
        if ex is not None:
            out.append(Candidate(ex["messages"], ex.get("tools"), {"log": row.id}, row.tags or {}))
    return out


def _from_file(s: Session, project_id: str, file_id: str, param: str = "file_id") -> list[Candidate]:
    row = files.get(s, file_id, project_id=project_id)
    if row.purpose != "fine-tune":
        raise UserError(f"file {file_id} has purpose '{row.purpose}': datasets take files uploaded with purpose "
                        "'fine-tune' (checked line by line on upload)", param=param)
    out = []
    with open(row.path) as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                ex = json.loads(line)  # uploads with purpose fine-tune were validated line by line
                out.append(Candidate(ex["messages"], ex.get("tools"), {"file": file_id, "line": line_no}, {}))
    return out


def create(s: Session, project_id: str, *, name: str, recipe: Recipe, log_filter: logs.LogFilter | None = None,
           file_id: str | None = None) -> Dataset:
    """A dataset from the logs matching a filter, or from an uploaded fine-tuning file."""
    recipe.check()
    if (log_filter is None) == (file_id is None):
        raise UserError("give either a log filter or a file id as the dataset's source", param="source")
    if file_id is not None:
        candidates, source = _from_file(s, project_id, file_id), {"file": file_id}
    else:
        candidates, source = _from_logs(s, project_id, log_filter), {"logs": log_filter.as_dict()}
    if not candidates:
        raise UserError("no usable conversations match: check the filter with `tuneforge logs list` (only "
                        "successful calls with a reply count)", param="source")
    chosen, counts = choose(candidates, recipe)
    ds = Dataset(id=new_id("ds-"), project_id=project_id, name=name, status="ready", source=source,
                 params=recipe.params(), pruning_rules=list(recipe.pruning_rules), counts=counts, created_at=now())
    s.add(ds)
    s.flush()
    s.add_all(
        DatasetEntry(id=new_id("dse-"), dataset_id=ds.id, position=i, split=side, messages=c.messages,
                     tools=c.tools, label=label, lineage=c.lineage, answer_model=None)
        for i, (c, side, label) in enumerate(chosen)
    )
    return ds


def get(s: Session, dataset_id: str, project_id: str) -> Dataset:
    ds = s.get(Dataset, dataset_id)
    if ds is None or ds.project_id != project_id:
        raise NotFound(f"No dataset {dataset_id} in this project: `tuneforge datasets list` shows the ids",
                       param="dataset_id", code="dataset_not_found")
    return ds


def list_(s: Session, project_id: str) -> list[Dataset]:
    return list(s.scalars(select(Dataset).where(Dataset.project_id == project_id)
                          .order_by(Dataset.created_at.desc(), Dataset.id)))


def entries(s: Session, dataset_id: str, split_: str | None = None, *, offset: int = 0,
            limit: int | None = None) -> list[DatasetEntry]:
    q = select(DatasetEntry).where(DatasetEntry.dataset_id == dataset_id)
    if split_:
        q = q.where(DatasetEntry.split == split_)
    return list(s.scalars(q.order_by(DatasetEntry.position).offset(offset).limit(limit)))


def page(s: Session, project_id: str, *, after: str | None, limit: int) -> tuple[list[Dataset], bool]:
    """One page of the project's datasets, newest first (keyset: `after` is the previous page's last id), and
    whether more follow."""
    q = select(Dataset).where(Dataset.project_id == project_id)
    anchor = s.get(Dataset, after) if after else None
    if anchor is not None and anchor.project_id == project_id:
        q = q.where((Dataset.created_at < anchor.created_at)
                    | ((Dataset.created_at == anchor.created_at) & (Dataset.id < anchor.id)))
    rows = list(s.scalars(q.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def entry_page(s: Session, dataset_id: str, split_: str | None = None, *, after: int | None = None,
               limit: int) -> tuple[list[DatasetEntry], bool]:
    """One page of entries in position order (keyset: `after` is the previous page's last position), and whether
    more follow: a page of a million-entry dataset costs what the first page does."""
    q = select(DatasetEntry).where(DatasetEntry.dataset_id == dataset_id)
    if split_:
        q = q.where(DatasetEntry.split == split_)
    if after is not None:
        q = q.where(DatasetEntry.position > after)
    rows = list(s.scalars(q.order_by(DatasetEntry.position).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def check_pruning_rules(rules: list[str]) -> list[str]:
    """The rules to keep (blank ones dropped, order kept); UserError past MAX_PRUNING_RULES or MAX_RULE_CHARS."""
    kept = [r for r in rules if r.strip()]
    if len(kept) > MAX_PRUNING_RULES:
        raise UserError(f"{len(kept)} pruning rules: a dataset takes at most {MAX_PRUNING_RULES} (join texts that "
                        "always appear together into one rule)", param="pruning_rules")
    for i, rule in enumerate(kept, 1):
        if len(rule) > MAX_RULE_CHARS:
            raise UserError(f"rule {i} is {len(rule):,} characters: a rule is at most {MAX_RULE_CHARS:,}",
                            param="pruning_rules")
    return kept


def set_pruning_rules(s: Session, ds: Dataset, rules: list[str]) -> Dataset:
    """Replace a dataset's pruning rules: its exports apply the new ones from now on. Models already fine-tuned
    on it keep the rules they were trained with (their job copied them), so nothing served changes."""
    ds.pruning_rules = check_pruning_rules(rules)
    return ds


def entry_count(s: Session, dataset_id: str) -> int:
    return s.scalar(select(func.count()).select_from(DatasetEntry).where(DatasetEntry.dataset_id == dataset_id))


def export_lines(s: Session, ds: Dataset, split_: str | None = None, *, chat: bool = False) -> list[str]:
    """JSONL lines, pruning rules applied: OpenAI's fine-tuning rows, or for a preference dataset OpenAI's
    preference rows (`chat=True`: its pairs as conversations ending in the preferred answer, e.g. as eval
    rows)."""
    if ds.status != "ready":
        raise Conflict(f"dataset {ds.id} is {ds.status}: export it when the job filling it has finished",
                       param="dataset_id")
    pairs = ds.kind == PREFERENCE and not chat
    return [json.dumps(_pair_line(e, ds.pruning_rules or []) if pairs else _chat_line(e, ds.pruning_rules or []),
                       ensure_ascii=False) for e in entries(s, ds.id, split_)]


def _chat_line(e: DatasetEntry, rules: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": prune(e.messages, rules)}
    if e.tools:
        row["tools"] = e.tools
    return row


def _pair_line(e: DatasetEntry, rules: list[str]) -> dict[str, Any]:
    """OpenAI's preference row: the input (pruned, as a chat export's), the preferred and the other answer."""
    inp: dict[str, Any] = {"messages": prune(e.messages[:-1], rules)}
    if e.tools:
        inp["tools"] = e.tools
    return {"input": inp, "preferred_output": [e.messages[-1]], "non_preferred_output": [e.rejected]}


# --- preference datasets
def pair_entry(ds_id: str, position: int, row: dict[str, Any], lineage: dict[str, Any], *, split_: str = "train",
               answer_model: str | None = None) -> DatasetEntry:
    """The entry holding one OpenAI preference row (`{"input", "preferred_output", "non_preferred_output"}`)."""
    inp = row["input"]
    return DatasetEntry(
        id=new_id("dse-"), dataset_id=ds_id, position=position, split=split_,
        messages=[*inp["messages"], row["preferred_output"][0]], rejected=row["non_preferred_output"][0],
        tools=inp.get("tools") or None, label=None, lineage=lineage, answer_model=answer_model,
    )


def create_preference(s: Session, project_id: str, *, name: str, source: dict[str, Any],
                      pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]], params: dict[str, Any] | None = None,
                      counts: dict[str, Any] | None = None) -> Dataset:
    """A ready preference dataset of (preference row, lineage) pairs, in order, all in the train split."""
    pairs = list(pairs)
    if not pairs:
        raise UserError("no pairs to make a dataset of", param="source")
    ds = Dataset(id=new_id("ds-"), project_id=project_id, name=name, kind=PREFERENCE, status="ready", source=source,
                 params=params or {}, pruning_rules=[], counts={**(counts or {}), "train": len(pairs), "test": 0},
                 created_at=now())
    s.add(ds)
    s.flush()
    s.add_all(pair_entry(ds.id, i, row, lineage) for i, (row, lineage) in enumerate(pairs))
    return ds


def start_preference(s: Session, project_id: str, *, name: str, source: dict[str, Any], params: dict[str, Any],
                     pruning_rules: list[str], prompts: int) -> Dataset:
    """The empty preference dataset a self-play job fills (status `generating`)."""
    ds = Dataset(id=new_id("ds-"), project_id=project_id, name=name, kind=PREFERENCE, status="generating",
                 source=source, params=params, pruning_rules=check_pruning_rules(pruning_rules),
                 counts={"prompts": prompts, "sampled": 0, "pairs": 0, "train": 0, "test": 0}, created_at=now())
    s.add(ds)
    s.flush()
    return ds


def add_pairs(s: Session, ds_id: str, pairs: Iterable[tuple[int, dict[str, Any], dict[str, Any]]], *,
              sampled: int, answer_model: str | None = None) -> int:
    """Store (position, preference row, lineage) pairs made from the prompts before `sampled`, and record that
    those prompts are done (a job resumed later starts after them). Positions already stored (an earlier attempt
    made them) are skipped. Returns the pairs the dataset holds now."""
    ds = s.get(Dataset, ds_id)
    have = set(s.scalars(select(DatasetEntry.position).where(DatasetEntry.dataset_id == ds_id)))
    s.add_all(pair_entry(ds_id, pos, row, lineage, answer_model=answer_model)
              for pos, row, lineage in pairs if pos not in have)
    s.flush()
    n = entry_count(s, ds_id)
    ds.counts = {**ds.counts, "sampled": max(sampled, ds.counts.get("sampled", 0)), "pairs": n}
    return n


def start_relabel(s: Session, project_id: str, parent_id: str, *, model: str, name: str | None = None) -> Dataset:
    """The new dataset a relabel job fills: the parent's entries, re-answered by `model`."""
    parent = get(s, parent_id, project_id)
    if parent.status != "ready":
        raise Conflict(f"dataset {parent_id} is {parent.status}: relabel it once it is ready", param="dataset_id")
    if parent.kind == PREFERENCE:
        raise UserError(f"dataset {parent_id} holds preference pairs: a relabel re-answers conversations (relabel "
                        "the chat dataset the pairs came from)", param="dataset_id")
    ds = Dataset(id=new_id("ds-"), project_id=project_id, name=name or f"{parent.name} (relabeled by {model})",
                 status="relabeling", source={"relabel": {"dataset": parent_id, "model": model}},
                 params=dict(parent.params), pruning_rules=list(parent.pruning_rules or []),
                 counts={"train": 0, "test": 0}, parent_id=parent_id, created_at=now())
    s.add(ds)
    s.flush()
    return ds


def add_relabeled(s: Session, ds_id: str, parent_entry: DatasetEntry, answer: dict[str, Any], model: str) -> None:
    if s.scalar(select(DatasetEntry.id).where(DatasetEntry.dataset_id == ds_id,
                                              DatasetEntry.position == parent_entry.position)):
        return  # already answered by an earlier attempt
    s.add(DatasetEntry(
        id=new_id("dse-"), dataset_id=ds_id, position=parent_entry.position, split=parent_entry.split,
        messages=[*parent_entry.messages[:-1], answer], tools=parent_entry.tools, label=parent_entry.label,
        lineage={**parent_entry.lineage, "relabel": {"from": parent_entry.id, "model": model}}, answer_model=model,
    ))


def finish_filling(s: Session, ds_id: str, status: str) -> None:
    """The job filling a dataset (relabel, self-play) ended: the dataset is `status`, its counts final."""
    ds = s.get(Dataset, ds_id)
    if ds.status in FILLING:  # a cancelled dataset stays cancelled
        ds.status = status
    sides = dict(s.execute(select(DatasetEntry.split, func.count()).where(DatasetEntry.dataset_id == ds_id)
                           .group_by(DatasetEntry.split)).all())
    ds.counts = {**ds.counts, "train": sides.get("train", 0), "test": sides.get("test", 0)}


finish_relabel = finish_filling  # (its name from before self-play)


def prompt_rows(s: Session, project_id: str, *, file_id: str | None = None, dataset_id: str | None = None,
                split_: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat rows to ask again (self-play), each `{"row": {"messages", "tools"?}, "lineage": {...}}`, from an
    uploaded fine-tune file or a ready dataset's split, and the pruning rules that apply to them (the dataset's).
    """
    if (file_id is None) == (dataset_id is None):
        raise UserError("give either training_file (a file id) or dataset (a dataset id)", param="training_file")
    if file_id is not None:
        candidates, rules = _from_file(s, project_id, file_id, param="training_file"), []
    else:
        try:
            ds = get(s, dataset_id, project_id)
        except NotFound as exc:
            exc.param = "dataset"  # the self-play request's field
            raise
        if ds.status != "ready":
            raise Conflict(f"dataset {dataset_id} is {ds.status}: use it once it is ready", param="dataset")
        candidates = [Candidate(e.messages, e.tools, {"dataset": ds.id, "entry": e.id}, {})
                      for e in entries(s, ds.id, split_)]
        rules = list(ds.pruning_rules or [])
    rows = []
    for c in candidates:
        row: dict[str, Any] = {"messages": c.messages}
        if c.tools:
            row["tools"] = c.tools
        rows.append({"row": row, "lineage": c.lineage})
    return rows, rules
