"""Write tuneforge/evals/suites/general.jsonl: the general-skills suite for the forgetting check.

A fine-tune that wins on its task may have lost general skills on the way. This suite asks a few hundred
short questions with one right answer each, in three kinds: instruction following (format exactly as told:
graded `exact`), arithmetic (graded `numeric`: the last number in the answer) and facts (capitals, chemical
symbols, the order of days and months, everyday counts: graded by a `regex` that looks for the answer as a
word, so "The capital of France is Paris." counts). Each row is an OpenAI chat row whose final assistant
message is the answer, plus `id`, `category` and `grader` (read by the `by_row` grader).

Deterministic (seeded; no clock, no environment): run it again and the file is byte for byte the same, which
a test checks.

    python scripts/make_general_suite.py            # rewrites the bundled file
    python scripts/make_general_suite.py OUT.jsonl
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

SEED = 20240909
OUT = Path(__file__).resolve().parent.parent / "tuneforge" / "evals" / "suites" / "general.jsonl"

WORDS = ["apple", "river", "garden", "window", "silver", "planet", "candle", "forest", "pencil", "bridge",
         "orange", "rocket", "basket", "castle", "dragon", "button", "violin", "marble", "tunnel", "summer",
         "winter", "ladder", "island", "monkey", "spider", "pillow", "camera", "guitar", "mirror", "anchor"]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
            ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Greece", "Athens"),
            ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
            ("Hungary", "Budapest"), ("Denmark", "Copenhagen"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("Thailand", "Bangkok"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
            ("Australia", "Canberra"), ("Cuba", "Havana"), ("Iceland", "Reykjavik"), ("Belgium", "Brussels"),
            ("Chile", "Santiago"), ("South Korea", "Seoul")]
SYMBOLS = [("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"),
           ("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"), ("nitrogen", "N"), ("helium", "He"),
           ("copper", "Cu"), ("lead", "Pb"), ("mercury", "Hg"), ("tin", "Sn"), ("calcium", "Ca"),
           ("zinc", "Zn"), ("neon", "Ne"), ("sulfur", "S"), ("chlorine", "Cl"), ("uranium", "U")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
COUNTS = [("days are there in a week", 7), ("hours are there in a day", 24), ("minutes are there in an hour", 60),
          ("months are there in a year", 12), ("legs does a spider have", 8), ("sides does a hexagon have", 6),
          ("sides does a triangle have", 3), ("legs does an insect have", 6), ("seconds are there in a minute", 60),
          ("days are there in a leap year", 366), ("centimetres are there in a metre", 100),
          ("grams are there in a kilogram", 1000)]
OPPOSITES = [("hot", "cold"), ("up", "down"), ("day", "night"), ("open", "closed"), ("early", "late"),
             ("full", "empty"), ("fast", "slow"), ("heavy", "light"), ("buy", "sell"), ("win", "lose"),
             ("north", "south"), ("east", "west"), ("question", "answer"), ("true", "false"), ("inside", "outside")]
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words_for(n: int) -> str:
    """An integer from 0 to 99 in English words (forty-two)."""
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])


def word_pattern(answer: str) -> dict:
    """The regex grader for a one-phrase fact: the answer appears as a whole word (any case)."""
    return {"name": "regex", "pattern": r"\b" + re.escape(answer).replace(r"\ ", r"\s+") + r"\b",
            "flags": ["IGNORECASE"]}


def instructions(rng: random.Random) -> list[tuple[str, str]]:
    items = []
    for word in rng.sample(WORDS, 20):
        items.append((f"Reply with only the word {word} in capital letters.", word.upper()))
    for word in rng.sample(WORDS, 20):
        items.append((f"Reply with only the word {word.upper()} in lowercase letters.", word))
    for word in rng.sample(WORDS, 15):
        items.append((f"Repeat the word {word} three times, separated by single spaces. Reply with nothing else.",
                      " ".join([word] * 3)))
    for word in rng.sample(WORDS, 15):
        items.append((f"Write the word {word} backwards, in lowercase. Reply with only the result.", word[::-1]))
    for word in rng.sample(WORDS, 15):
        items.append((f"What is the first letter of the word {word}? Reply with only that letter, as a capital.",
                      word[0].upper()))
    for n in rng.sample(range(1, 100), 15):
        items.append((f"Write the number {words_for(n)} in digits. Reply with only the digits.", str(n)))
    return items


def _distinct(rng: random.Random, n: int, make) -> list[tuple[str, str]]:
    """n items from make(rng), no question twice."""
    items: dict[str, str] = {}
    while len(items) < n:
        question, answer = make(rng)
        items.setdefault(question, answer)
    return list(items.items())


def _add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} + {b}? Answer with just the number.", str(a + b)


def _subtract(rng: random.Random) -> tuple[str, str]:
    a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
    return f"What is {a} - {b}? Answer with just the number.", str(a - b)


def _multiply(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 9), rng.randint(11, 49)
    return f"What is {a} times {b}? Answer with just the number.", str(a * b)


def _divide(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    return f"What is {a * b} divided by {a}? Answer with just the number.", str(b)


def arithmetic(rng: random.Random) -> list[tuple[str, str]]:
    return (_distinct(rng, 30, _add) + _distinct(rng, 25, _subtract) + _distinct(rng, 25, _multiply)
            + _distinct(rng, 20, _divide))


def facts(rng: random.Random) -> list[tuple[str, str, dict | str]]:
    items: list[tuple[str, str, dict | str]] = []
    for country, city in CAPITALS:
        items.append((f"What is the capital of {country}? Answer with just the city name.", city, word_pattern(city)))
    for element, symbol in SYMBOLS:
        items.append((f"What is the chemical symbol for {element}? Answer with just the symbol.", symbol,
                      {"name": "regex", "pattern": r"(?<![A-Za-z])" + symbol + r"(?![A-Za-z])"}))
    for i, day in enumerate(DAYS):
        after = DAYS[(i + 1) % 7]
        items.append((f"Which day of the week comes right after {day}? Answer with one word.", after,
                      word_pattern(after)))
    for i, month in enumerate(MONTHS):
        after = MONTHS[(i + 1) % 12]
        items.append((f"Which month comes right after {month}? Answer with one word.", after, word_pattern(after)))
    for what, n in COUNTS:
        items.append((f"How many {what}? Answer with just the number.", str(n), "numeric"))
    for word, opposite in OPPOSITES:
        items.append((f"What is the opposite of the word \"{word}\"? Answer with one word.", opposite,
                      word_pattern(opposite)))
    rng.shuffle(items)
    return items


def build(seed: int = SEED) -> list[dict]:
    """The suite's rows, in a fixed order."""
    rng = random.Random(seed)
    tagged = ([("instruction", q, a, "exact") for q, a in instructions(rng)]
              + [("arithmetic", q, a, "numeric") for q, a in arithmetic(rng)]
              + [("facts", q, a, g) for q, a, g in facts(rng)])
    rng.shuffle(tagged)
    return [{"id": f"general-{n:03d}", "category": category, "grader": grader,
             "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            for n, (category, question, answer, grader) in enumerate(tagged, start=1)]


def render(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = build()
    out.write_bytes(render(rows))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
