"""The tool-calling task: a helpdesk assistant with three small functions, and requests that need one, two or
none of them. `generate.py` writes it with the other tasks (deterministic, stdlib only).

Each row is `{"messages": [...], "tools": TOOLS}`. Most end in an assistant turn with `tool_calls` (arguments as
a JSON string, keys in the order of the function's parameters); some need two calls (two cities); some are
answered in plain text (greetings, how-to questions, a question about a city that needs no live data); a few
continue after the tool's result to the final answer.
"""

from __future__ import annotations

import json
import random

SEED = 20240613
N_TRAIN = 300
N_TEST = 60

SYSTEM = (
    "You are Northwind's helpdesk assistant. Call a tool when a request needs live data or an action; "
    "otherwise answer directly in one or two sentences."
)

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        }, "required": ["city"]},
    }},
    {"type": "function", "function": {
        "name": "create_ticket", "description": "Open a support ticket.",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string"}, "priority": {"type": "string", "enum": ["low", "normal", "high"]},
        }, "required": ["title", "priority"]},
    }},
    {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert money at today's rate (ISO currency codes).",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"},
        }, "required": ["amount", "from_currency", "to_currency"]},
    }},
]

# fmt: off
CITIES = [
    ("Lisbon", "Portugal"), ("Oslo", "Norway"), ("Lima", "Peru"), ("Nairobi", "Kenya"), ("Osaka", "Japan"),
    ("Denver", "the United States"), ("Porto", "Portugal"), ("Hamburg", "Germany"), ("Cusco", "Peru"),
    ("Dublin", "Ireland"), ("Krakow", "Poland"), ("Perth", "Australia"), ("Quebec City", "Canada"),
    ("Seville", "Spain"), ("Tbilisi", "Georgia"), ("Hanoi", "Vietnam"), ("Accra", "Ghana"), ("Bergen", "Norway"),
    ("Valparaiso", "Chile"), ("Marrakesh", "Morocco"), ("Tallinn", "Estonia"), ("Wellington", "New Zealand"),
    ("Bologna", "Italy"), ("Glasgow", "Scotland"), ("Austin", "the United States"), ("Busan", "South Korea"),
]
# fmt: on

WEATHER = [
    "What's the weather in {city}?",
    "What's the weather like in {city} right now?",
    "Is it raining in {city}?",
    "weather {city}",
    "Do I need a jacket in {city} today?",
    "How's the weather looking in {city} at the moment?",
    "Can you check the current conditions in {city}?",
    "I'm flying to {city} tonight, what's it like there now?",
]
WEATHER_UNIT = [
    "How warm is it in {city} in {unit}?",
    "What's the temperature in {city}? Give it in {unit}.",
    "Current temperature in {city} please, in {unit}",
    "{city} weather in {unit}?",
]
WEATHER_TWO = [
    "Compare the weather in {a} and {b}.",
    "Is it warmer in {a} or in {b} right now?",
    "What's the weather in {a} and in {b}?",
]

DEVICES = ["laptop", "printer", "monitor", "VPN", "email", "phone", "keyboard", "badge reader", "Wi-Fi", "headset"]
PROBLEMS = ["won't turn on", "keeps disconnecting", "is very slow", "shows an error on startup", "stopped working",
            "makes a loud noise", "won't connect"]
TICKET = {
    "high": [
        "My {device} {problem} and I can't work. Please open a ticket, it's urgent.",
        "URGENT: the {device} {problem}, whole team is blocked. Log a ticket asap.",
        "Open a high priority ticket: {device} {problem}.",
    ],
    "normal": [
        "My {device} {problem}. Can you open a ticket?",
        "Please log a ticket: the {device} {problem}.",
        "The {device} {problem} since this morning, can someone look at it?",
        "Could you raise a ticket for me? My {device} {problem}.",
    ],
    "low": [
        "No rush, but my {device} {problem}. Could you open a ticket when you get a chance?",
        "Low priority: the {device} {problem}. Please log it.",
        "Not urgent at all, the {device} {problem} now and then. Ticket please.",
    ],
}

CURRENCIES = [("euros", "EUR"), ("dollars", "USD"), ("pounds", "GBP"), ("yen", "JPY"), ("Swiss francs", "CHF"),
              ("Canadian dollars", "CAD"), ("rupees", "INR"), ("kroner", "NOK")]
CONVERT = [
    "How much is {amount} {from_name} in {to_name}?",
    "Convert {amount} {from_code} to {to_code}.",
    "what's {amount} {from_code} in {to_name}",
    "I have {amount} {from_name}, how many {to_name} is that today?",
]

PLAIN = [
    ("Hi!", "Hello! I can check the weather, convert currencies and open support tickets. What do you need?"),
    ("Hello there", "Hi! How can I help you today?"),
    ("Thanks, that's all.", "You're welcome, have a good day!"),
    ("thank you so much", "Happy to help!"),
    ("What can you do?", "I can check the current weather in a city, convert between currencies and open support "
                         "tickets for you."),
    ("How do I reset my password?", "Go to Settings > Account > Reset password and follow the link we email you."),
    ("Where can I find the holiday calendar?", "It's on the intranet under People > Holidays."),
    ("Who are you?", "I'm Northwind's helpdesk assistant."),
    ("How do I connect to the office printer?", "Open Settings > Printers, choose Add printer and pick "
                                                "NW-Office-1 from the list."),
    ("Good morning!", "Good morning! What can I do for you?"),
]
CITY_QUESTIONS = [
    ("Which country is {city} in?", "{city} is in {country}."),
    ("Is {city} in {country}?", "Yes, {city} is in {country}."),
]
RESULTS = [("light rain", 12), ("sunny", 24), ("cloudy", 17), ("clear skies", 9), ("snow", -2), ("windy", 14)]


def _call(rng: random.Random, name: str, args: dict) -> dict:
    return {"id": f"call_{rng.getrandbits(48):012x}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


def _amount(rng: random.Random) -> int | float:
    return rng.choice([rng.randint(5, 2000), round(rng.uniform(5, 500), 2)])


def make_row(rng: random.Random, kind: str) -> tuple[str, list[dict]]:
    """One request of a kind: the user's message and what the assistant does (messages after the user's)."""
    city, country = rng.choice(CITIES)
    if kind == "weather":
        if rng.random() < 0.35:
            unit = rng.choice(["celsius", "fahrenheit"])
            user = rng.choice(WEATHER_UNIT).format(city=city, unit=unit)
            return user, [{"role": "assistant", "tool_calls": [_call(rng, "get_weather",
                                                                     {"city": city, "unit": unit})]}]
        user = rng.choice(WEATHER).format(city=city)
        call = _call(rng, "get_weather", {"city": city})
        if rng.random() < 0.3:  # the conversation goes on to the answer
            conditions, temp = rng.choice(RESULTS)
            result = json.dumps({"city": city, "temperature_c": temp, "conditions": conditions})
            return user, [{"role": "assistant", "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": call["id"], "content": result},
                          {"role": "assistant", "content": f"It's {temp}°C in {city} right now, {conditions}."}]
        return user, [{"role": "assistant", "tool_calls": [call]}]
    if kind == "two_cities":
        (a, _), (b, _) = rng.sample(CITIES, 2)
        user = rng.choice(WEATHER_TWO).format(a=a, b=b)
        return user, [{"role": "assistant", "tool_calls": [_call(rng, "get_weather", {"city": a}),
                                                           _call(rng, "get_weather", {"city": b})]}]
    if kind == "ticket":
        priority = rng.choice(["high", "normal", "normal", "low"])
        device, problem = rng.choice(DEVICES), rng.choice(PROBLEMS)
        user = rng.choice(TICKET[priority]).format(device=device, problem=problem)
        title = f"{device[0].upper()}{device[1:]} {problem}"
        return user, [{"role": "assistant", "tool_calls": [_call(rng, "create_ticket",
                                                                 {"title": title, "priority": priority})]}]
    if kind == "currency":
        (from_name, from_code), (to_name, to_code) = rng.sample(CURRENCIES, 2)
        amount = _amount(rng)
        user = rng.choice(CONVERT).format(amount=amount, from_name=from_name, from_code=from_code, to_name=to_name,
                                          to_code=to_code)
        args = {"amount": amount, "from_currency": from_code, "to_currency": to_code}
        return user, [{"role": "assistant", "tool_calls": [_call(rng, "convert_currency", args)]}]
    if kind == "city_question":
        question, answer = rng.choice(CITY_QUESTIONS)
        return question.format(city=city, country=country), [
            {"role": "assistant", "content": answer.format(city=city, country=country)}]
    user, answer = rng.choice(PLAIN)
    if rng.random() < 0.5:  # vary the wording a little, so rows differ
        user = rng.choice(["", "Hey, ", "Quick question: ", "Sorry to bother you. "]) + user[0].lower() + user[1:]
    return user, [{"role": "assistant", "content": answer}]


# about 65% one call, 8% two calls, 27% plain text
KINDS = ["weather", "ticket", "currency", "weather", "plain", "ticket", "currency", "city_question", "weather",
         "two_cities", "plain", "currency"]


def rows() -> tuple[list[dict], list[dict]]:
    """(train, test): distinct user messages, no message in both."""
    rng = random.Random(SEED)
    seen: dict[str, None] = {}
    out = []
    i = 0
    while len(out) < N_TRAIN + N_TEST:
        kind = KINDS[i % len(KINDS)]
        i += 1
        user, reply = make_row(rng, kind)
        if user in seen:
            continue
        seen[user] = None
        out.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}, *reply],
                    "tools": TOOLS})
    rng.shuffle(out)
    return out[:N_TRAIN], out[N_TRAIN:]
