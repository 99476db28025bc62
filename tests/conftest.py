"""Shared fixtures: one model cache for the whole run, a fresh data dir per test, a tiny random model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest_plugins = ["console_kit"]  # the web console's browser fixtures

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TUNEFORGE_MODEL_CACHE", str(ROOT / ".cache" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "data"
    monkeypatch.setenv("TUNEFORGE_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from tuneforge.models import registry

    return registry.materialize("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2):
    from tuneforge.models.loading import load_tokenizer

    return load_tokenizer(str(smollm2))


@pytest.fixture(scope="session")
def tiny_model(smollm2, tmp_path_factory) -> Path:
    """A randomly initialised 4-layer llama with SmolLM2's tokenizer and chat template: trains in milliseconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.models.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = load_tokenizer(str(smollm2))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def postgres_url():
    """A fresh, empty Postgres database for one test (dropped after). Needs TUNEFORGE_TEST_POSTGRES_URL, which
    `scripts/postgres` prints; CI sets TUNEFORGE_REQUIRE_POSTGRES so that a missing server fails, not skips."""
    import uuid

    from sqlalchemy import create_engine, text

    from tuneforge.store.db import database_url

    admin = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("TUNEFORGE_REQUIRE_POSTGRES"):
            pytest.fail("TUNEFORGE_TEST_POSTGRES_URL is not set: .ci/run starts Postgres with scripts/postgres")
        pytest.skip("no Postgres: export TUNEFORGE_TEST_POSTGRES_URL=$(scripts/postgres)")
    name = f"tf_test_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url(admin), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield admin.rsplit("/", 1)[0] + "/" + name
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, data_dir):
    """A migrated store, once on SQLite in the test's data dir and once on a fresh Postgres database."""
    from tuneforge.store.db import Database

    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


DURATIONS = Path(__file__).with_name("durations.json")  # {test id: seconds}: the tests that took 30 s or more


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The longest tests first, by their measured seconds (tests/durations.json); the rest keep their order.

    Two workers take tests in order, so a long test that starts late keeps one busy long after the other is done.
    Measured in clean-clone CI runs on 2 cores: the demo test (8.5 min) started at minute 7 and the tests took
    19.9 min, one worker idle for the last 7; longest first, they took 16.4 min. To refresh the file, run the
    suite with TUNEFORGE_RECORD_DURATIONS=FILE (one JSON line per test) and keep the tests of 30 s or more."""
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid, 0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With TUNEFORGE_RECORD_DURATIONS=FILE, each test's seconds (setup to teardown) go to FILE as a JSON line."""
    t0 = time.monotonic()
    yield
    record = os.environ.get("TUNEFORGE_RECORD_DURATIONS")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps({"id": item.nodeid, "seconds": round(time.monotonic() - t0, 1)}) + "\n")


def pytest_collection_finish(session):
    """Materializing Gemma from its GGUF takes minutes of mostly single-threaded tokenizer conversion: when a
    collected test needs it and it is not in the cache yet, start it in the background now, so it overlaps
    the tests before. The test itself waits on registry's file lock if the conversion is still running."""
    import subprocess
    import sys

    from tuneforge.models import registry

    if registry.is_materialized("gemma-3-270m") or not any("gemma" in item.nodeid for item in session.items):
        return
    session.config._gemma_prefetch = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "models", "path", "gemma-3-270m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def pytest_sessionfinish(session):
    proc = getattr(session.config, "_gemma_prefetch", None)
    if proc is not None and proc.poll() is None:
        proc.wait(timeout=600)
