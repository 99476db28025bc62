"""Write the example data sets: messy support emails to extract, support tickets to route.

Deterministic (fixed seeds, stdlib only, no network): rerunning writes byte-identical files.

    python examples/generate.py            # writes next to this script
    python examples/generate.py --out DIR  # writes DIR/<task>/train.jsonl and DIR/<task>/test.jsonl

Each line is one OpenAI chat fine-tuning row: {"messages": [system, user, assistant]} (the tool-calling task
adds "tools", and assistant turns with "tool_calls": tool_calling_data.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
from pathlib import Path

import tool_calling_data  # the tool-calling task, in its own module (next to this script)

N_TRAIN = 400
N_TEST = 100
# The email task keeps 256 of its 400 training rows: enough to learn it, and the README's demo then trains
# in about 7 minutes on 2 CPU cores. Its test rows are the same either way.
EMAIL_TRAIN = 256
EMAIL_SEED = 20240611
TICKET_SEED = 20240612

# --------------------------------------------------------------------------------------------------
# Shared vocabulary
# --------------------------------------------------------------------------------------------------

CATALOGUE = [
    "AeroBrew Pour-Over Kettle",
    "AeroBrew Burr Grinder",
    "Nimbus 2 Wireless Earbuds",
    "Nimbus Max Headphones",
    "Lumen Desk Lamp",
    "Lumen Smart Bulb (4-pack)",
    "TerraTrail 40L Backpack",
    "TerraTrail Trekking Poles",
    "Halcyon Memory Foam Pillow",
    "Halcyon Weighted Blanket",
    "Vortex 700 Blender",
    "Vortex Mini Food Processor",
    "PixelPal Kids Tablet",
    "PixelPal Stylus",
    "Orbit Robot Vacuum",
    "Orbit Cordless Stick Vacuum",
    "Cascade Water Filter Pitcher",
    "Cascade Shower Filter",
    "Summit Standing Desk",
    "Summit Ergonomic Chair",
    "Ember Cast Iron Skillet",
    "Ember Dutch Oven 5.5qt",
    "Zephyr Tower Fan",
    "Zephyr Air Purifier",
    "Quill Fountain Pen",
    "Quill Leather Notebook",
    "Strata Yoga Mat",
    "Strata Adjustable Dumbbells",
    "Meridian Smartwatch S3",
    "Meridian Fitness Band",
    "Glacier Insulated Bottle 750ml",
    "Glacier Lunch Box",
    "Atlas USB-C Hub",
    "Atlas 65W Charger",
    "Bramble Garden Hose 50ft",
    "Bramble Pruning Shears",
    "Nova 4K Webcam",
    "Nova Ring Light",
    "Sable Wool Throw",
    "Sable Linen Duvet Cover (Queen)",
]

# fmt: off
FIRST_NAMES = [
    "Priya", "James", "Maria", "Chen", "Olivia", "Mohammed", "Sofia", "Liam", "Aisha", "Lucas", "Emma", "Hiroshi",
    "Fatima", "Noah", "Isabella", "Mateo", "Chloe", "Daniel", "Ananya", "Ethan", "Grace", "Kwame", "Zoë", "Oliver",
    "Ingrid", "Diego", "Hannah", "Tomás", "Leila", "Samuel", "Mei", "Patrick", "Amara", "Ryan", "Elena", "Jonas",
    "Nadia", "Victor", "Rosa", "Kenji", "Sarah", "Ravi", "Claire", "Omar", "Julia", "Bogdan", "Yuki", "Marcus",
    "Freya", "Andrés", "Tanya", "Felix", "Nia", "Gabriel", "Laura", "Arjun", "Beatriz", "Connor", "Dana", "Emeka",
]
# fmt: on


# fmt: off
LAST_NAMES = [
    "Raman", "O'Connor", "Garcia", "Wei", "Thompson", "Al-Sayed", "Rossi", "Murphy", "Bello", "Martin", "Schmidt",
    "Tanaka", "Haddad", "Williams", "Fernández", "López", "Dubois", "Kim", "Iyer", "Walker", "Lee", "Mensah",
    "Novak", "Brown", "Johansson", "Herrera", "Fischer", "Silva", "Karimi", "Okafor", "Zhang", "Kelly", "Nwosu",
    "Patel", "Ivanova", "Becker", "Petrov", "Moreno", "Sato", "Cohen", "Nair", "Laurent", "Hassan", "Müller",
    "Kowalski", "Popescu", "Nakamura", "Reid", "Larsen", "Castillo", "Sharma", "Weber", "Adeyemi", "Santos",
    "Jensen", "Ortiz", "Gupta", "Byrne", "Horvat", "Eze",
]
# fmt: on


STORE = "Northwind"
AGENT_NAMES = ["Dana", "Marco", "Sam", "Alex", "Jordan", "Robin", "Kai", "Morgan"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
ORDER_LETTERS = "ABCDEFHKMNPRT"


def _date(rng: random.Random) -> str:
    """A real 2025 date with its weekday, e.g. "Fri, Mar 14, 2025" (names from our lists, not the locale's)."""
    day = datetime.date(2025, 1, 1) + datetime.timedelta(days=rng.randrange(365))
    return f"{DAYS[day.weekday()]}, {MONTHS[day.month - 1]} {day.day}, {day.year}"


def _short_date(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # double a letter
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeiourstn") + word[i + 1 :]  # hit a neighbouring key, roughly


def roughen(template: str, rng: random.Random, rate: float) -> str:
    """Typos in a template's plain lowercase words; placeholders, names and numbers are left alone."""
    words = template.split(" ")
    for k, word in enumerate(words):
        if len(word) >= 5 and word.isalpha() and word.islower() and rng.random() < rate:
            words[k] = _typo(word, rng)
    return " ".join(words)


# --------------------------------------------------------------------------------------------------
# Task 1: email extraction
# --------------------------------------------------------------------------------------------------

ISSUES = ["damaged", "late_delivery", "wrong_item", "refund_request", "billing", "other"]

EMAIL_SYSTEM = (
    "You extract order details from customer-support emails. Reply with only a JSON object with exactly "
    "these keys, in this order: customer_name (the customer's full name), order_id (canonical form, one "
    "letter, a hyphen and five digits, e.g. A-48213), product (the product name exactly as in our catalogue), "
    "issue (one of: damaged, late_delivery, wrong_item, refund_request, billing, other). No other text."
)

GREETINGS = [
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hey,",
    "hey there",
    "Dear Support Team,",
    "Dear Sir or Madam,",
    "To whom it may concern,",
    "Good morning,",
    "Good afternoon,",
    f"Hello {STORE} team,",
    f"Hi {STORE},",
    "",
]

SUBJECTS = {
    "damaged": ["Damaged item", "Broken on arrival!!", "Problem with my delivery", "{product} damaged"],
    "late_delivery": ["Where is my order?", "Order not received", "Late delivery", "still waiting..."],
    "wrong_item": ["Wrong item received", "Not what I ordered", "Order mix-up", "wrong product sent"],
    "refund_request": ["Refund request", "Return and refund", "Want my money back", "Cancel + refund please"],
    "billing": ["Billing issue", "Charged incorrectly", "Question about a charge", "Payment problem"],
    "other": ["Quick question", "Question about {product}", "Enquiry", "Help please"],
}

# How the customer mentions the order: {oid} is filled with one of the order id surface forms.
ORDER_SENTENCES = [
    "I ordered the {product} ({oid}) a couple of weeks ago.",
    "This is about {oid}, the {product}.",
    "I recently bought a {product}, {oid}.",
    "My {oid} was for one {product}.",
    "Regarding {oid} - {product}.",
    "I placed {oid} for the {product} on {date}.",
    "Last week I got the {product} from you guys ({oid}).",
    "I purchased the {product} on your website, {oid}.",
    "I'm writing about {oid} which contained the {product}.",
    "{oid} - I ordered a {product} as a gift.",
]

ISSUE_SENTENCES = {
    "damaged": [
        "When I opened the box the {product} was broken.",
        "It arrived with a big crack down the side.",
        "The box was crushed and the item inside is damaged.",
        "There are pieces rattling around inside, it was clearly smashed in transit.",
        "It came scratched all over and one corner is chipped.",
        "The glass part was shattered when it got here.",
        "it showed up dented and it won't even turn on properly now.",
        "Unfortunately the packaging was soaked and the item is ruined.",
    ],
    "late_delivery": [
        "It still hasn't arrived.",
        "Tracking hasn't updated in {n} days and I have no idea where it is.",
        "It was supposed to be here by {short_date} and it's now {n} days late.",
        "The tracking page just says 'label created' since {short_date}.",
        "I've been waiting for over {weeks} weeks and still nothing.",
        "the estimated delivery date passed last week and no package.",
        "Your site said 3-5 business days but it's been {n} days now.",
        "The courier says it's 'in transit' but it hasn't moved since {short_date}.",
    ],
    "wrong_item": [
        "But what I received was a {other_product} instead.",
        "The box had a {other_product} in it, not what I ordered.",
        "I got the wrong colour - I ordered black and this one is beige.",
        "You sent me the wrong size.",
        "The package contained something completely different, a {other_product}.",
        "this is not the item I ordered at all, the label on the box doesn't match.",
        "I received someone else's order, it's a {other_product}.",
    ],
    "refund_request": [
        "I've changed my mind and would like a refund.",
        "I no longer need it and would like my money back please.",
        "It's not right for me, so I'd like to return it for a full refund.",
        "Please cancel it and refund me.",
        "It works fine but it's not what I expected, can I get a refund?",
        "I found it cheaper elsewhere so I would like to send it back and get refunded.",
        "I'd like to return it unopened and get a refund to my card.",
    ],
    "billing": [
        "I was charged twice for it on my credit card.",
        "My card statement shows ${amount} but the order total was ${amount2}.",
        "The discount code wasn't applied at checkout even though it said it was valid.",
        "I was charged for express shipping but I selected standard.",
        "The invoice has the wrong billing address and I need it corrected for my expenses.",
        "there's a second charge of ${amount} on my account that I don't recognise.",
        "I paid with a gift card but my credit card was charged as well.",
    ],
    "other": [
        "Does the {product} come with a warranty, and how long is it?",
        "Could you send me the user manual? I lost the paper one.",
        "Do you sell spare parts or accessories for the {product}?",
        "How do I set it up? The quick start guide is not very clear.",
        "Is it possible to add gift wrapping to this order?",
        "I just wanted to say it's great, and ask whether you'll have it in other colours.",
        "Can I change the delivery address before it ships?",
        "Is the {product} safe to put in the dishwasher?",
    ],
}

REQUESTS = {
    "damaged": [
        "Can you send a replacement?",
        "Please advise how I can get a new one.",
        "What are my options?",
        "I'd like a replacement unit please.",
        "Attached are photos of the damage.",
        "",
    ],
    "late_delivery": [
        "Can you tell me where it is?",
        "Please look into this.",
        "I need it by the weekend.",
        "Can you chase the courier?",
        "",
    ],
    "wrong_item": [
        "How do I get the right one?",
        "Please send the correct item.",
        "Do I need to send this one back first?",
        "",
    ],
    "refund_request": ["How do I send it back?", "Please let me know the next steps.", "Thanks for understanding.", ""],
    "billing": ["Please fix this.", "Can you look into it?", "I'd appreciate a corrected statement.", ""],
    "other": ["Thanks in advance.", "Appreciate any help.", ""],
}

INTROS = [
    "My name is {name}.",
    "This is {name}.",
    "My name is {name} and I'm writing about an order.",
    "I'm {name}, I've ordered from you before.",
    "my name is {name}, hope you can help.",
]

FILLERS = [
    "I've been a customer for years and this is the first time I've had a problem.",
    "I already tried the chat on your website but it kept disconnecting.",
    "Sorry for the long email.",
    "I called yesterday but the wait was over an hour.",
    "My partner said I should write in rather than call.",
    "I'm travelling next week so email is best.",
    "This is my second email about this.",
    "Not the end of the world but I'd like it sorted.",
]

CLOSINGS = [
    "Thanks,",
    "Thank you,",
    "Best regards,",
    "Regards,",
    "Cheers,",
    "Kind regards,",
    "Sincerely,",
    "Best,",
    "Many thanks,",
    "thx",
    "-",
]

SIGN_NOISE = ["Sent from my iPhone", "Get Outlook for Android", "Sent from my Galaxy", "Sent from Mail for Windows"]


def order_id_forms(canon: str, rng: random.Random) -> tuple[str, bool]:
    """One surface form of the order id, and whether it drops the letter (then the full id must appear elsewhere)."""
    letter, digits = canon.split("-")
    forms = [
        (f"order #{letter}-{digits}", False),
        (f"order {letter}{digits}", False),
        (f"ord no. {letter}{digits}", False),
        (f"order number {canon}", False),
        (f"order #{letter}{digits}", False),
        (f"Order ID: {canon}", False),
        (f"order {letter.lower()}-{digits}", False),
        (f"order {letter} {digits}", False),
        (f"order ref {canon}", False),
        (f"order {digits}", True),
        (f"order no {digits}", True),
    ]
    return rng.choice(forms)


def make_email(rng: random.Random, issue: str) -> tuple[str, dict]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    name = f"{first} {last}"
    product = rng.choice(CATALOGUE)
    other_product = rng.choice([p for p in CATALOGUE if p != product])
    canon = f"{rng.choice(ORDER_LETTERS)}-{rng.randint(10000, 99999)}"
    oid, needs_full = order_id_forms(canon, rng)
    amount = rng.randint(19, 400)
    values = {
        "name": name,
        "product": product,
        "other_product": other_product,
        "oid": oid,
        "date": _short_date(rng),
        "short_date": _short_date(rng),
        "n": rng.randint(6, 21),
        "weeks": rng.randint(2, 5),
        "amount": f"{amount + rng.randint(5, 60)}.{rng.randint(0, 99):02d}",
        "amount2": f"{amount}.{rng.randint(0, 99):02d}",
    }
    typo_rate = rng.choice([0.0, 0.0, 0.03, 0.08, 0.15])
    casual = rng.random() < 0.2  # all-lowercase, little punctuation

    def part(template: str) -> str:
        if casual:
            template = template.lower()
        return roughen(template, rng, typo_rate).format(**values)

    lines: list[str] = []
    with_forward = rng.random() < 0.2
    with_subject = (needs_full and not with_forward) or rng.random() < 0.35
    if with_subject:
        subject = rng.choice(SUBJECTS[issue]).format(**values)
        if needs_full or rng.random() < 0.5:
            subject += f" - order {canon}" if rng.random() < 0.5 else f" ({canon})"
        lines += [f"Subject: {subject}", ""]

    greeting = rng.choice(GREETINGS)
    name_in_intro = rng.random() < 0.3
    body: list[str] = []
    if name_in_intro:
        body.append(part(rng.choice(INTROS)))
    order_sentence = part(rng.choice(ORDER_SENTENCES))
    issue_sentence = part(rng.choice(ISSUE_SENTENCES[issue]))
    request = rng.choice(REQUESTS[issue])
    body += [order_sentence, issue_sentence]
    if request:
        body.append(part(request))
    if rng.random() < 0.3:
        body.insert(rng.randrange(len(body) + 1), part(rng.choice(FILLERS)))
    if greeting:
        lines += [greeting, ""]
    lines.append(" ".join(s for s in body if s))
    lines.append("")

    closing = rng.choice(CLOSINGS)
    if name_in_intro and rng.random() < 0.5:
        lines.append(f"{closing} {first}" if closing == "-" else f"{closing}\n{first}")
    else:
        lines.append(f"-- \n{name}" if closing == "-" else f"{closing}\n{name}")
        if rng.random() < 0.25:
            lines.append(
                f"{rng.choice(['Tel', 'Phone', 'Mob'])}: +1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
            )
    if rng.random() < 0.2:
        lines += ["", rng.choice(SIGN_NOISE)]

    if with_forward:
        lines += [
            "",
            "---------- Forwarded message ---------",
            f"From: {STORE} Orders <orders@northwind.example>",
            f"Date: {_date(rng)}",
            f"Subject: Your {STORE} order {canon} has shipped",
            "",
            f"Hi {first}, good news! Your {product} is on its way.",
        ]
    elif rng.random() < 0.2:
        agent = rng.choice(AGENT_NAMES)
        lines += [
            "",
            f"> On {_date(rng)}, {STORE} Support <help@northwind.example> wrote:",
            "> Thanks for reaching out! Could you reply with your order number and a short description?",
            f"> Best, {agent} from the {STORE} team",
        ]
    elif rng.random() < 0.1:
        lines += ["", "CONFIDENTIALITY NOTICE: This e-mail and any attachments are intended only for the addressee."]

    email = "\n".join(lines).strip()
    answer = {"customer_name": name, "order_id": canon, "product": product, "issue": issue}
    return email, answer


# --------------------------------------------------------------------------------------------------
# Task 2: ticket routing
# --------------------------------------------------------------------------------------------------

QUEUES = {
    "PAY-OPS": "payments (card charges, duplicate or unknown charges, failed payments, invoices, receipts, tax).",
    "SHIP-LOG": "shipping and delivery (tracking, couriers, delays, lost or misdelivered parcels, delivery address).",
    "ACCT-SEC": "account access and security (login, password reset, two-factor codes, suspicious activity, hacks).",
    "TECH-L2": "technical faults in our app, website, API or devices (bugs, error messages, crashes, integrations).",
    "RETURNS": "returns and exchanges (return labels, return windows, exchanges, refunds for returned items).",
    "SALES-ENT": "business buyers (bulk orders, quotes, volume pricing, enterprise plans, contracts, purchase orders).",
    "LEGAL-PRIV": "privacy and legal (GDPR/CCPA data access or deletion requests, consent, legal notices).",
}

TICKET_SYSTEM = (
    "You route customer-support tickets. Read the ticket and reply with only the code of the one queue that "
    "should handle it, exactly as written below.\n" + "\n".join(f"{code}: {desc}" for code, desc in QUEUES.items())
)

# TICKET_SUBJECTS[label][i] is a subject a customer might write above TICKET_OPENERS[label][i].
TICKET_SUBJECTS = {
    "PAY-OPS": [
        "Charged twice",
        "Payment failed but money taken",
        "Invoice {invoice} incorrect",
        "Unknown charge",
        "Need a VAT receipt",
        "Gift card balance not applied",
        "Pending charge not released",
        "Payment error",
        "Wrong currency on invoice",
        "Charged after cancelling auto-renew",
    ],
    "SHIP-LOG": [
        "Order {order} late",
        "Marked delivered, not received",
        "Delivered to wrong address",
        "Change delivery address",
        "Parcel stuck in customs",
        "Courier never shows up",
        "Parcel returned to sender?",
        "Tracking shows wrong city",
        "Delivery date keeps changing",
        "Missing box",
    ],
    "ACCT-SEC": [
        "Can't log in",
        "Suspicious login on my account",
        "Password reset email not arriving",
        "Lost my 2FA phone",
        "Someone changed my email address",
        "Orders I didn't place",
        "Account locked",
        "Account hacked?",
        "Login codes not working",
        "Security concern",
    ],
    "TECH-L2": [
        "App crashes on startup",
        "Error {error_code} when syncing",
        "API returning 500s",
        "Checkout page freezes",
        "{product} won't connect to Wi-Fi",
        "Webhooks not firing",
        "Firmware update failed",
        "Blank dashboard",
        "CSV export empty",
        "Integration broken after update",
    ],
    "RETURNS": [
        "Return request",
        "Exchange for a different size",
        "Return label not working",
        "Returned item, no refund yet",
        "Return window question",
        "RMA needed",
        "Returning a gift",
        "Want to exchange",
        "Return portal says not eligible",
        "Return only partly credited",
    ],
    "SALES-ENT": [
        "Bulk order enquiry",
        "Quote for {seats} units",
        "Enterprise plan pricing",
        "Volume discount?",
        "Purchase order from {company}",
        "Reseller account",
        "Contract renewal",
        "Corporate gifting order",
        "Request for proposal",
        "Payment terms for a large order",
    ],
    "LEGAL-PRIV": [
        "GDPR data request",
        "Delete my personal data",
        "Data subject access request",
        "CCPA request",
        "Consent withdrawal",
        "Legal notice",
        "Where did you get my email?",
        "Data breach question",
        "Third-party data sharing",
        "Request for records",
    ],
}
VAGUE_SUBJECTS = [
    "Help",
    "Urgent!!",
    "Question",
    "Problem",
    "Please help",
    "Issue with my account",
    "Follow up",
    "(no subject)",
    "Re: your email",
    "Complaint",
]

TICKET_OPENERS = {
    "PAY-OPS": [
        "I was charged twice for order {order}, both for ${amount}.",
        "My card was declined at checkout but the bank shows the ${amount} was taken anyway.",
        "Invoice {invoice} shows ${amount} but the order total was lower.",
        "There's a charge from you on my statement for ${amount} that I don't recognise.",
        "I need a proper VAT receipt for order {order} for my company's accounts.",
        "My gift card balance wasn't applied and my credit card got charged the full ${amount}.",
        "A pending charge of ${amount} has been sitting on my card for {n} days after I cancelled.",
        "Your payment page keeps saying 'payment failed' but my bank says the charge went through.",
        "We were billed in euros instead of dollars on invoice {invoice}.",
        "The subscription renewed and charged me ${amount} even though I turned auto-renew off.",
    ],
    "SHIP-LOG": [
        "My order {order} was supposed to arrive {n} days ago and the tracking hasn't moved.",
        "Tracking number {tracking} says delivered but nothing came to my door.",
        "The {carrier} driver left my parcel at the wrong address.",
        "I need to change the delivery address on order {order} before it ships.",
        "My package has been stuck in customs in {country} for over a week.",
        "{carrier} keeps rescheduling the delivery and nobody ever turns up.",
        "The parcel for order {order} came back to your warehouse as undeliverable.",
        "Tracking {tracking} shows it went to {city} instead of where I live.",
        "The delivery estimate for order {order} keeps moving later every day.",
        "Only one of the two boxes in order {order} has arrived.",
    ],
    "ACCT-SEC": [
        "I can't log into my account, it says my password is wrong even after a reset.",
        "I got an email about a login from {city} that wasn't me.",
        "The password reset email never arrives, I've tried {n} times.",
        "I lost my phone and with it my two-factor codes, so I'm locked out.",
        "Someone changed the email address on my account without my permission.",
        "There are orders on my account that I never placed.",
        "My account is locked after too many attempts and the unlock link has expired.",
        "I think my account was hacked, my saved address was changed to one I don't know.",
        "The six-digit login codes you text me are always rejected as invalid.",
        "I'm getting 'session expired' every time I try to sign in, and I'm worried someone else is using my login.",
    ],
    "TECH-L2": [
        "The app crashes immediately on startup since the last update (version {app_version}) on {platform}.",
        "Syncing fails with error {error_code} every time.",
        "Your orders API has been returning HTTP 500 for about {n} hours.",
        "The checkout page freezes on the payment step in {browser}.",
        "My {product} won't connect to Wi-Fi after the firmware update.",
        "Webhooks for order events stopped firing on {date}.",
        "The firmware update for my {product} fails at 80% and the device restarts.",
        "The dashboard shows a blank page in {browser}; the console says {error_code}.",
        "CSV export from the web app produces an empty file.",
        "Our Shopify integration stopped importing orders after your update yesterday.",
    ],
    "RETURNS": [
        "I'd like to return the {product} from order {order}, it doesn't suit me.",
        "Can I exchange the {product} for a different size?",
        "The return label you emailed gives an error at the {carrier} drop-off.",
        "I sent my return back {n} days ago and still haven't had the refund for it.",
        "Is the {product} still within the return window? I bought it on {date}.",
        "I need an RMA number to send back a faulty {product}.",
        "How do I return a gift without the giver finding out?",
        "I want to swap the {product} for the other colour.",
        "The return portal says order {order} is not eligible for return, but it arrived last week.",
        "I returned two items but only got credited for one.",
    ],
    "SALES-ENT": [
        "We're looking to buy {seats} units of the {product} for our offices.",
        "Could you send a quote for {seats} {product}s delivered to {city}?",
        "We'd like to discuss an enterprise plan for about {seats} staff.",
        "Do you offer volume pricing for orders above {seats} units?",
        "Please find attached purchase order PO-{po} from {company}.",
        "We're a retailer and interested in becoming a reseller for your products.",
        "Our annual contract with you is up for renewal next month and we'd like to review terms.",
        "We want to order {seats} gift boxes for our clients at the end of the year.",
        "{company} is running a procurement process and would like you to respond to our RFP.",
        "Can we get net-30 payment terms on a large order for {company}?",
    ],
    "LEGAL-PRIV": [
        "Under GDPR I'm requesting a copy of all personal data you hold about me.",
        "Please delete my account and all personal data associated with it.",
        "This is a formal data subject access request under Article 15.",
        "As a California resident I'm exercising my rights under the CCPA to know what data you've collected.",
        "I withdraw my consent for marketing and ask that you erase my data.",
        "We represent a client in a dispute and are sending a formal legal notice.",
        "I received a marketing email even though I never gave consent, where did you get my address?",
        "Please confirm whether my data was affected by the breach reported in the news.",
        "Which third parties do you share my personal data with?",
        "I'm writing on behalf of a law enforcement agency to request records relating to an account.",
    ],
}

TICKET_DETAILS = {
    "PAY-OPS": [
        "The two charges are on the same day, a few minutes apart.",
        "My bank says they can't reverse it and that I have to go through you.",
        "I've attached a screenshot of the statement.",
        "The card ends in {last4}.",
        "Our finance team can't reconcile the invoice with the order.",
        "The tax on the invoice looks like it was calculated twice.",
        "I paid by PayPal originally, in case that matters.",
        "The amount is about ${amount} more than it should be.",
        "We need the company name and VAT number on the invoice.",
        "I've checked with my bank and the charge is definitely from you.",
        "This put my account into overdraft, so it's urgent.",
        "The receipt email says one amount and the card statement says another.",
    ],
    "SHIP-LOG": [
        "The tracking page hasn't updated since {date}.",
        "I've checked with my neighbours and nobody has it.",
        "{carrier} told me to contact the sender.",
        "The photo on the delivery confirmation is not my house.",
        "I'm moving on {date} so the address needs to change.",
        "I paid for express shipping.",
        "The customs office asked for an invoice I don't have.",
        "My building has a concierge, so it can't have been left outside.",
        "The parcel was meant to be a birthday present.",
        "Tracking shows it bounced between two depots in {city}.",
        "There's no note through my door and no missed-delivery card.",
        "The estimated date on your website is different from the one on the {carrier} site.",
    ],
    "ACCT-SEC": [
        "I've changed my email password just in case.",
        "The login alert came in at 3am.",
        "I no longer have access to the phone number on the account.",
        "My saved card is still on the account, which worries me.",
        "I tried a different browser and it's the same.",
        "I don't use the same password anywhere else.",
        "I can still see my order history through the app, but not on the website.",
        "The reset link says it has expired as soon as I click it.",
        "I want to make sure nobody else can get in.",
        "Please check the recent login history for my account.",
        "My email on the account is {email}.",
        "I've enabled two-factor before, so I'm not sure how this happened.",
    ],
    "TECH-L2": [
        "I've already reinstalled the app and restarted the phone.",
        "It happens on both {platform} and the web.",
        "Here's the request ID from the response header: {request_id}.",
        "Our logs show a timeout after 30 seconds.",
        "Clearing the cache and cookies didn't help.",
        "It worked fine until {date}.",
        "Other devices on the same network connect without problems.",
        "The error message just says 'Something went wrong'.",
        "We're on the latest version, {app_version}.",
        "I can reproduce it every single time.",
        "Our developers checked and the payload we send hasn't changed.",
        "I've attached the crash log.",
    ],
    "RETURNS": [
        "It's unused and still in the original packaging.",
        "The item is about {n} days old.",
        "I dropped it off at {carrier} and have the receipt.",
        "The size chart on your site was misleading.",
        "I'd prefer an exchange rather than store credit.",
        "I don't have a printer for the label.",
        "The tags are still attached.",
        "The return tracking shows it was delivered to your warehouse on {date}.",
        "It's a bit too big, the next size down would be perfect.",
        "I'm happy to pay for return postage if needed.",
        "The item has a fault that started after a couple of weeks of use.",
        "I bought it as a gift and the recipient already has one.",
    ],
    "SALES-ENT": [
        "We'd need delivery by the end of the quarter.",
        "Our procurement team requires a formal quote on letterhead.",
        "We have around {seats} employees across three sites.",
        "Please include shipping and any setup costs.",
        "We'd be interested in a dedicated account manager.",
        "Branding with our logo would be a plus.",
        "We've bought from you before on individual accounts.",
        "We can sign a one-year commitment if the pricing works.",
        "Our budget for this is roughly ${big_amount}.",
        "We'd need the products invoiced to our head office in {city}.",
        "Could someone from your team join a call next week?",
        "We are comparing two other suppliers at the moment.",
    ],
    "LEGAL-PRIV": [
        "Please respond within the statutory 30 days.",
        "My account email is {email}.",
        "I've attached a copy of my ID to verify who I am.",
        "I'd like confirmation in writing once it's done.",
        "This includes any data held by your marketing partners.",
        "I no longer want to be a customer.",
        "Please also tell me how long you keep order records.",
        "We request that you preserve all relevant records.",
        "I'm not happy that this happened without my consent.",
        "If you can't delete something, please explain the legal reason.",
        "Our reference number for this matter is {ref}.",
        "Please direct your response to our legal department.",
    ],
}

TICKET_ASKS = {
    "PAY-OPS": [
        "Please reverse the extra charge.",
        "Can you send a corrected invoice?",
        "Can you tell me what this charge is for?",
        "Please fix the billing.",
    ],
    "SHIP-LOG": [
        "Can you find out where my parcel is?",
        "Please open a claim with the courier.",
        "Can you update the address?",
        "Please resend it if it's lost.",
    ],
    "ACCT-SEC": [
        "Please help me get back into my account.",
        "Can you lock the account until this is sorted?",
        "Please reset my two-factor settings.",
        "Please check whether my account is compromised.",
    ],
    "TECH-L2": [
        "Can someone from engineering look at this?",
        "Is there a known issue?",
        "Please escalate, this is blocking our work.",
        "Is there a workaround?",
    ],
    "RETURNS": [
        "Please send me a return label.",
        "What are the next steps for the return?",
        "When will I get the refund for the return?",
        "Can you arrange the exchange?",
    ],
    "SALES-ENT": [
        "Please send pricing and lead times.",
        "Who should we speak to about this?",
        "Could you send a formal quote?",
        "Can we set up a call?",
    ],
    "LEGAL-PRIV": [
        "Please confirm receipt of this request.",
        "Please confirm once my data has been deleted.",
        "Please send the data in a machine-readable format.",
        "Please forward this to your DPO.",
    ],
}

BACKSTORY = [
    "I've been a customer for about {years} years and usually everything is fine.",
    "I already spoke to someone on chat but the conversation ended before it was resolved.",
    "Sorry if this is the wrong place to send this.",
    "I'm writing on behalf of my elderly mother who isn't very comfortable with email.",
    "This is my third message about this and I haven't had a reply yet.",
    "I'm travelling for work until {when} so email is the best way to reach me.",
    "To give you some background, we're a small team and I handle most of the admin myself.",
    "I tried to find the answer in your help centre but couldn't find anything that matched my situation.",
    "I'd really appreciate a quick response because this is holding things up on my end.",
    "Let me explain what happened step by step so it's clear.",
    "On {when} I noticed the problem for the first time and assumed it would sort itself out.",
    "A colleague had a similar issue last year and it took weeks to resolve, so I'm writing early.",
    "I want to stress that I'm not trying to cause trouble, I just want this fixed.",
    "I've read your terms and I believe I've done everything on my side correctly.",
    "I called your phone line but it said the office was closed.",
    "It's been a frustrating week in general, so I hope this at least can be straightforward.",
    "I'm happy to provide any other information you need.",
    "English isn't my first language, so apologies for any mistakes.",
    "Please don't close this ticket until it's actually resolved.",
    "I have the confirmation email and can forward it if that helps.",
]

# Longer, label-neutral narrative sentences that pad out the long tickets.
STORIES = [
    (
        "I first noticed something was off on {when}, but I was busy with work and family that week, so I didn't get "
        "round to contacting you until now, which I realise probably hasn't helped."
    ),
    (
        "I've been going back and forth between your help centre articles, the FAQ and the chat bot for most of the "
        "afternoon, and none of them seem to cover exactly what is happening in my case."
    ),
    (
        "To be honest I'm a little disappointed, because I recommended you to several friends and colleagues after a "
        "really good experience last year, and this time things have not gone nearly as smoothly."
    ),
    (
        "My partner thinks I'm overreacting, but after {n} days of waiting for someone to get back to me I feel like "
        "I need to put everything in writing so there's a clear record of what happened."
    ),
    (
        "I run a small business from home, so my time is fairly limited during the day, and I'd be grateful if the "
        "next reply could include everything I need to do rather than one question at a time."
    ),
    (
        "When I spoke to your colleague on the phone last time they were very polite and said someone would email me "
        "within two working days, but I haven't heard anything since then."
    ),
    (
        "I'd like to keep shopping with you, and I'm sure this is just a one-off, but I do think the process could be "
        "made a lot clearer for customers who aren't very technical."
    ),
    (
        "In case it matters, I'm based in {city} and usually order two or three times a month, mostly for the office "
        "but sometimes for myself as well."
    ),
]

TIMELINE = [
    "For context, here is the timeline as best I can reconstruct it. ",
    "Just so you have the full picture: ",
    "Here's what I've tried so far. ",
    "A bit more detail on what happened. ",
]

SIGNOFFS = ["Thanks", "Thank you", "Regards", "Best", "Cheers", "Kind regards", "Many thanks", ""]

COMPANIES = [
    "Brightline Dental",
    "Kestrel Logistics",
    "Oakridge Primary School",
    "Fernhill Studios",
    "Bluewater Analytics",
    "Harbor & Pine LLP",
    "Copperleaf Hotels",
    "Vantage Robotics",
    "Meadow Health",
    "Ironbark Construction",
    "Lattice Labs",
    "Northgate Council",
]
CARRIERS = ["UPS", "DHL", "FedEx", "USPS", "Royal Mail", "DPD", "Canada Post", "Evri", "GLS"]
# fmt: off
CITIES = [
    "Leeds", "Rotterdam", "Austin", "Lyon", "Manchester", "Toronto", "Dublin", "Hamburg", "Phoenix", "Porto",
    "Melbourne", "Denver", "Glasgow", "Milan",
]
# fmt: on

COUNTRIES = ["Germany", "Canada", "the UK", "Australia", "France", "Ireland", "the Netherlands", "Spain"]
PLATFORMS = ["iOS 17", "Android 14", "iPadOS", "Android 13", "Windows 11", "macOS Sonoma"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]


def make_ticket(rng: random.Random, label: str) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    company = rng.choice(COMPANIES)
    values = {
        "order": f"{rng.choice(ORDER_LETTERS)}-{rng.randint(10000, 99999)}",
        "invoice": f"INV-2025-{rng.randint(1000, 9999)}",
        "amount": f"{rng.randint(12, 480)}.{rng.randint(0, 99):02d}",
        "big_amount": f"{rng.randint(8, 240) * 1000:,}",
        "date": _short_date(rng),
        "when": _short_date(rng),
        "product": rng.choice(CATALOGUE),
        "carrier": rng.choice(CARRIERS),
        "city": rng.choice(CITIES),
        "country": rng.choice(COUNTRIES),
        "company": company,
        "seats": rng.choice([25, 40, 50, 75, 120, 200, 350, 500, 1200]),
        "po": rng.randint(10000, 99999),
        "error_code": rng.choice(["E1042", "SYNC_403", "ERR_TIMEOUT", "0x80070005", "E-77", "NET_ERR_12"]),
        "platform": rng.choice(PLATFORMS),
        "browser": rng.choice(BROWSERS),
        "app_version": f"{rng.randint(3, 5)}.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        "n": rng.randint(3, 15),
        "years": rng.randint(2, 9),
        "tracking": f"1Z{rng.randint(10**9, 10**10 - 1)}",
        "email": f"{first.lower()}.{rng.randint(1, 99)}@example.com",
        "last4": f"{rng.randint(0, 9999):04d}",
        "request_id": f"req_{rng.getrandbits(48):012x}",
        "ref": f"LGL/{rng.randint(100, 999)}/{rng.randint(2024, 2025)}",
    }
    typo_rate = rng.choice([0.0, 0.0, 0.02, 0.05])

    def say(template: str) -> str:
        return roughen(template, rng, typo_rate).format(**values)

    def pick(pool: list[str], k: int) -> list[str]:
        return [say(t) for t in rng.sample(pool, min(k, len(pool)))]

    k = rng.randrange(len(TICKET_OPENERS[label]))
    subject = (TICKET_SUBJECTS[label][k] if rng.random() < 0.8 else rng.choice(VAGUE_SUBJECTS)).format(**values)
    opener = say(TICKET_OPENERS[label][k])
    ask = say(rng.choice(TICKET_ASKS[label]))
    details = pick(TICKET_DETAILS[label], 9)
    backstory = pick(BACKSTORY, 9)
    stories = pick(STORIES, 3)

    size = rng.random()
    if size < 0.2:  # one line
        paragraphs = [opener]
    elif size < 0.6:  # a short note
        paragraphs = [" ".join([opener, *details[: rng.randint(0, 2)], ask])]
    elif size < 0.85:  # two or three paragraphs
        paragraphs = [" ".join([opener, *details[:2]]), " ".join([*backstory[:2], *details[2:4]])]
        if rng.random() < 0.5:
            paragraphs.append(ask)
        else:
            paragraphs[-1] += " " + ask
    else:  # a long one, roughly 200-400 words
        paragraphs = [
            " ".join([*backstory[:1], opener, *details[:2]]),
            rng.choice(TIMELINE) + " ".join([stories[0], *backstory[1:3], *details[2:4]]),
            " ".join([stories[1], *backstory[3:5], *details[4:6]]),
            " ".join([stories[2], *backstory[5:7], *details[6:9]]),
            " ".join([ask, *backstory[7:9]]),
        ]
        del paragraphs[rng.randrange(1, 4) : rng.randrange(3, 5)]  # drop up to two middle ones: vary the length
    signoff = rng.choice(SIGNOFFS)
    sender = rng.choice([f"{first} {last}", first, f"{first} {last}\n{company}", ""])
    if label == "SALES-ENT" and sender and company not in sender:
        sender += f"\nProcurement, {company}"
    ending = "\n".join(x for x in [signoff + ("," if signoff and sender else ""), sender] if x)
    body = "\n\n".join(paragraphs) + ("\n\n" + ending if ending else "")
    return f"Subject: {subject}\n\n{body}"


# --------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------


def _row(system: str, user: str, assistant: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


def _unique_rows(make, labels: list[str], total: int, rng: random.Random) -> list[dict]:
    """`total` rows with distinct user messages, labels balanced (cycled), in a seeded shuffled order."""
    seen: dict[str, None] = {}  # a dict, not a set: iteration order must not depend on string hashing
    rows = []
    i = 0
    while len(rows) < total:
        label = labels[i % len(labels)]
        i += 1
        user, answer = make(rng, label)
        if user in seen:
            continue
        seen[user] = None
        rows.append((user, answer))
    rng.shuffle(rows)
    return rows


def email_rows() -> tuple[list[dict], list[dict]]:
    rng = random.Random(EMAIL_SEED)
    pairs = _unique_rows(make_email, ISSUES, N_TRAIN + N_TEST, rng)
    rows = [_row(EMAIL_SYSTEM, user, json.dumps(answer, ensure_ascii=False)) for user, answer in pairs]
    return rows[:EMAIL_TRAIN], rows[N_TRAIN:]


def ticket_rows() -> tuple[list[dict], list[dict]]:
    rng = random.Random(TICKET_SEED)
    pairs = _unique_rows(lambda r, label: (make_ticket(r, label), label), list(QUEUES), N_TRAIN + N_TEST, rng)
    rows = [_row(TICKET_SYSTEM, user, label) for user, label in pairs]
    return rows[:N_TRAIN], rows[N_TRAIN:]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="directory to write the task folders into (default: next to this script)",
    )
    args = parser.parse_args(argv)
    tasks = {"email_extraction": email_rows(), "ticket_routing": ticket_rows(),
             "tool_calling": tool_calling_data.rows()}
    for task, (train, test) in tasks.items():
        write_jsonl(args.out / task / "train.jsonl", train)
        write_jsonl(args.out / task / "test.jsonl", test)
        print(f"wrote {args.out / task}: {len(train)} train, {len(test)} test")


if __name__ == "__main__":
    main()
