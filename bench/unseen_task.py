"""Defaults on a task the defaults were not tuned on: banking-assistant messages -> intent and amount JSON.

The trainer's defaults (epochs, learning rate, batch size) were chosen on the bundled email task. This
script makes a different task (generated here, seeded, 300 training rows, 50 test rows: plain system + user
+ assistant rows), runs `tuneforge demo --train --test` with default settings, and reports the base and the
fine-tuned model's held-out exact match. Baseline: the base model; ratio: fine-tuned / base.

    .venv/bin/python bench/unseen_task.py [--model smollm2-135m-instruct] [--out /tmp/tuneforge-unseen]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

SYSTEM = (
    "You are the intent parser of a bank's chat assistant. Read the customer's message and reply with only a "
    'JSON object: {"intent": ..., "amount": ..., "currency": ...}. intent is one of: check_balance, '
    "transfer_money, report_lost_card, dispute_charge, pay_bill, open_account, increase_limit, speak_to_agent. "
    "amount is the number mentioned for the operation (null if none); currency is USD, EUR or GBP (null if none)."
)
INTENTS = {
    "check_balance": ["how much money do i have left", "what's my balance on checking", "can you tell me my balance",
                      "balance pls", "how much is in my savings account right now"],
    "transfer_money": ["send {amt} to my sister", "transfer {amt} to account ending 4471", "move {amt} into savings",
                       "i need to wire {amt} to my landlord", "pay back {amt} to Tom from my checking"],
    "report_lost_card": ["i lost my debit card", "my card was stolen at the station", "can't find my credit card "
                         "anywhere, block it", "someone took my wallet with the card", "card missing since friday"],
    "dispute_charge": ["there's a charge of {amt} i didn't make", "i was billed {amt} twice by a hotel",
                       "dispute the {amt} payment to ONLINESHOP", "unknown transaction for {amt} yesterday",
                       "refund the {amt} the gym took after i cancelled"],
    "pay_bill": ["pay my electricity bill of {amt}", "settle the {amt} phone bill", "please pay {amt} to the water "
                 "company", "my internet bill is {amt}, pay it today", "pay the {amt} credit card statement"],
    "open_account": ["i want to open a savings account", "how do i open a joint account", "open a new checking "
                     "account for my son", "can i get a business account", "start an account for my savings goal"],
    "increase_limit": ["raise my card limit to {amt}", "can my daily limit be {amt}", "increase my credit limit "
                       "by {amt}", "i need a higher limit, {amt} would do", "bump my withdrawal limit to {amt}"],
    "speak_to_agent": ["let me talk to a human", "i want a real person", "connect me with an agent please",
                       "is there someone i can call", "stop the bot, human please"],
}
CURRENCIES = {"USD": ["${n}", "{n} dollars", "{n} USD"], "EUR": ["€{n}", "{n} euros", "{n} EUR"],
              "GBP": ["£{n}", "{n} pounds", "{n} GBP"]}
OPENERS = ["", "hi, ", "hello there. ", "good morning! ", "hey ", "urgent: ", "quick question - "]
CLOSERS = ["", " thanks", " thank you!", " asap", " cheers", ". regards, Sam"]


def make_row(rng: random.Random, intent: str) -> dict:
    text = rng.choice(INTENTS[intent])
    amount = currency = None
    if "{amt}" in text:
        amount = rng.choice([rng.randint(5, 999), rng.randint(1000, 20000)])
        currency = rng.choice(list(CURRENCIES))
        text = text.replace("{amt}", rng.choice(CURRENCIES[currency]).format(n=amount))
    message = rng.choice(OPENERS) + text + rng.choice(CLOSERS)
    answer = json.dumps({"intent": intent, "amount": amount, "currency": currency})
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message},
                         {"role": "assistant", "content": answer}]}


def make_task(out: Path, n_train: int = 300, n_test: int = 50, seed: int = 2026) -> tuple[Path, Path]:
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_train + n_test:
        row = make_row(rng, rng.choice(list(INTENTS)))
        if row["messages"][1]["content"] not in seen:
            seen.add(row["messages"][1]["content"])
            rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    train, test = out / "train.jsonl", out / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:n_train]))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[n_train:]))
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-unseen"))
    args = parser.parse_args()
    train, test = make_task(args.out / "task")
    cmd = [sys.executable, "-m", "tuneforge", "demo", "--model", args.model, "--train", str(train),
           "--test", str(test), "--data-dir", str(args.out / "data")]
    subprocess.run(cmd, check=True)
    result = json.loads(max((args.out / "data" / "runs").glob("demo-*/demo.json")).read_text())
    before, after = result["before"]["exact_match"], result["after"]["exact_match"]
    print(json.dumps({
        "name": "unseen_task_default_settings", "unit": "held-out exact match", "ours": after, "baseline": before,
        "ratio": round(after / before, 2) if before else None, "baseline_name": f"{args.model} before fine-tuning",
        "train_examples": result["train_examples"], "steps": result["steps"], "train_seconds": result["train_seconds"],
    }))


if __name__ == "__main__":
    main()
