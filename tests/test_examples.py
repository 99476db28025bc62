"""The example data sets: generated deterministically, well formed, answers valid, splits disjoint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GENERATOR = EXAMPLES / "generate.py"
TASKS = ("email_extraction", "ticket_routing")
SPLITS = {"train": 400, "test": 100}
ISSUES = {"damaged", "late_delivery", "wrong_item", "refund_request", "billing", "other"}
LABELS = {"PAY-OPS", "SHIP-LOG", "ACCT-SEC", "TECH-L2", "RETURNS", "SALES-ENT", "LEGAL-PRIV"}
EMAIL_KEYS = ["customer_name", "order_id", "product", "issue"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], check=True, capture_output=True)
    return out


def _rows(root: Path, task: str, split: str) -> list[dict]:
    with open(root / task / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _messages(row: dict) -> dict[str, str]:
    assert list(row) == ["messages"]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in row["messages"])
    return {m["role"]: m["content"] for m in row["messages"]}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", SPLITS)
def test_regenerating_gives_the_committed_files_byte_for_byte(generated, task, split):
    committed = EXAMPLES / task / f"{split}.jsonl"
    assert committed.exists(), "run `python examples/generate.py` to write the example files"
    assert (generated / task / f"{split}.jsonl").read_bytes() == committed.read_bytes()


def test_generating_twice_gives_identical_files(generated, tmp_path):
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True, capture_output=True)
    for task in TASKS:
        for split in SPLITS:
            assert (tmp_path / task / f"{split}.jsonl").read_bytes() == (
                generated / task / f"{split}.jsonl"
            ).read_bytes()


@pytest.mark.parametrize("task", TASKS)
def test_counts_shape_and_one_system_prompt(generated, task):
    systems = set()
    for split, count in SPLITS.items():
        rows = _rows(generated, task, split)
        assert len(rows) == (256 if (task, split) == ("email_extraction", "train") else count)
        systems.update(_messages(row)["system"] for row in rows)
    assert len(systems) == 1


@pytest.mark.parametrize("task", TASKS)
def test_splits_are_disjoint_and_have_no_duplicates(generated, task):
    train = [_messages(r)["user"] for r in _rows(generated, task, "train")]
    test = [_messages(r)["user"] for r in _rows(generated, task, "test")]
    assert len(set(train)) == len(train)
    assert len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_email_answers_are_compact_json_recoverable_from_the_email(generated):
    for split in SPLITS:
        issues = set()
        for row in _rows(generated, "email_extraction", split):
            m = _messages(row)
            answer = json.loads(m["assistant"])
            assert list(answer) == EMAIL_KEYS
            assert m["assistant"] == json.dumps(answer, ensure_ascii=False)
            assert all(isinstance(v, str) for v in answer.values())
            assert answer["issue"] in ISSUES
            issues.add(answer["issue"])
            assert re.fullmatch(r"[A-Z]-\d{5}", answer["order_id"])
            letter, digits = answer["order_id"].split("-")
            email = m["user"]
            assert digits in email
            assert re.search(rf"\b{letter}[- ]?{digits}\b", email, re.IGNORECASE), email
            assert answer["product"] in email
            assert answer["customer_name"] in email
        assert issues == ISSUES


def test_email_rows_are_short(generated):
    # about 4 characters a token for English BPE: keep whole rows within roughly 120-300 tokens
    for split in SPLITS:
        for row in _rows(generated, "email_extraction", split):
            chars = sum(len(m["content"]) for m in row["messages"])
            assert 480 <= chars <= 1300


def test_routing_answers_are_labels_and_all_labels_are_used(generated):
    system = _messages(_rows(generated, "ticket_routing", "train")[0])["system"]
    for label in LABELS:
        assert f"{label}: " in system
    for split in SPLITS:
        answers = [_messages(r)["assistant"] for r in _rows(generated, "ticket_routing", split)]
        assert set(answers) == LABELS


def test_routing_tickets_vary_in_length(generated):
    words = [len(_messages(r)["user"].split()) for r in _rows(generated, "ticket_routing", "train")]
    assert min(words) < 25
    assert max(words) > 250
    assert max(words) <= 450
    assert all(_messages(r)["user"].startswith("Subject: ") for r in _rows(generated, "ticket_routing", "train"))
