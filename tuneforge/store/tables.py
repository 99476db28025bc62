"""The tables. Their migrations are in `migrations/versions/`; a test checks the two agree.

Times are integer Unix seconds, as in OpenAI's objects; heartbeats are float seconds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the key; the key itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    created_at: Mapped[int] = mapped_column(Integer)
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # may manage every key
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set: the key is refused


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # "fine_tune"; later eval, merge, relabel, export
    status: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the request as accepted (model, files, hyperparameters...)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # fine_tuned_model, trained_tokens...
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    out_dir: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # a bake-off's child


class JobEvent(Base):
    __tablename__ = "job_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(16))  # "message" | "metrics"
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(300), unique=True)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(Integer)


class FineTunedModel(Base):
    __tablename__ = "fine_tuned_models"
    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # ft:{base}:{project}:{suffix}:{job}
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    base: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # static texts stripped from requests before they reach the model, as from its training data
    pruning_rules: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class RequestLog(Base):
    """One captured call to a hosted model (SDK wrapper or proxy). request/response are JSON text, so that
    text search is a plain LIKE on both databases."""

    __tablename__ = "request_logs"
    __table_args__ = (
        PrimaryKeyConstraint("project_id", "id"),  # ids are per project: one cannot claim another's
        Index("ix_request_logs_project_started", "project_id", "started_at"),
        Index("ix_request_logs_project_model_started", "project_id", "model", "started_at"),  # a model's, by time
    )
    id: Mapped[str] = mapped_column(String(64))  # chosen by the capturer: delivery is idempotent
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    source: Mapped[str] = mapped_column(String(16))  # "sdk" | "proxy"
    model: Mapped[str] = mapped_column(String(300), index=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status; None: no response at all
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    request: Mapped[str] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: model not in the pricing table
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(Integer)


class LogTag(Base):
    """Tags again, one row each, so that filtering and grouping by tag use an index on both databases."""

    __tablename__ = "log_tags"
    __table_args__ = (
        PrimaryKeyConstraint("project_id", "log_id", "key"),
        ForeignKeyConstraint(["project_id", "log_id"], ["request_logs.project_id", "request_logs.id"],
                             ondelete="CASCADE"),
        Index("ix_log_tags_key_value", "key", "value"),
    )
    project_id: Mapped[str] = mapped_column(String(64))
    log_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(500))


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # "chat" (entries are conversations) | "preference" (entries are pairs: `messages` + `rejected`)
    kind: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")
    status: Mapped[str] = mapped_column(String(32))  # "ready" | "relabeling" | "generating" | "failed" | "cancelled"
    # {"logs": filter} | {"file": id} | {"relabel": {...}} | {"eval_run": id, "by": ...} | {"self_play": {...}}
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # sample, dedupe, split, seed, label
    pruning_rules: Mapped[list[Any]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the relabel job that fills it
    created_at: Mapped[int] = mapped_column(Integer)


class DatasetEntry(Base):
    __tablename__ = "dataset_entries"
    __table_args__ = (UniqueConstraint("dataset_id", "position"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))  # "train" | "test"
    messages: Mapped[list[Any]] = mapped_column(JSON)  # the conversation, ending in the answer to learn
    # a preference entry's non-preferred assistant message (`messages` ends in the preferred one); None for chat
    rejected: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tools: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"log": id} | {"file": id, "line": n} | + "relabel"
    answer_model: Mapped[str | None] = mapped_column(String(300), nullable=True)  # who wrote the answer


class Eval(Base):
    """An eval definition (OpenAI's `eval` object): what the rows look like and how outputs are graded. Its
    runs are `eval` jobs; each run's outputs, judgments and report live in the job's folder."""

    __tablename__ = "evals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    data_source_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    testing_criteria: Mapped[list[Any]] = mapped_column(JSON)  # grader specs, each {"type": NAME, "name": ..., ...}
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class MergedModel(Base):
    """A model a merge job made (`merge:{name}`): a full model folder, or an adapter on a base."""

    __tablename__ = "merged_models"
    __table_args__ = (Index("ix_merged_models_project_name", "project_id", "name"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(300))  # the model's name, `merge:{what the user chose}`
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    kind: Mapped[str] = mapped_column(String(16))  # "model" | "adapter"
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class ConsoleSession(Base):
    """A signed-in web console: the cookie holds a random token, and only its sha256 is stored. It acts for the
    key it signed in with, so revoking that key ends it."""

    __tablename__ = "console_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))  # the token every form and console request must echo
    created_at: Mapped[float] = mapped_column(Float)  # (float seconds: a key's newest sessions are kept)
    expires_at: Mapped[int] = mapped_column(Integer)


class ProjectPrice(Base):
    """A project's own price for a model (USD per million tokens), over the shared pricing table: it prices the
    project's captured calls from then on."""

    __tablename__ = "project_prices"
    __table_args__ = (PrimaryKeyConstraint("project_id", "model"),)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    model: Mapped[str] = mapped_column(String(300))
    input: Mapped[float] = mapped_column(Float)
    output: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[int] = mapped_column(Integer)
