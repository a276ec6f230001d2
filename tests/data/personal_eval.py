"""A labelled evaluation set for personal data in free text, generated with Faker: the same
seed gives the same samples, byte for byte (nothing is committed but this generator).

Each sample is one request text with character spans labelled `person`, `address` (street
address), `dob` (a date stated as a birth date), `phone` and `health` (a diagnosis,
medication or record number about the person). Templates cover chat messages, support
tickets, CSV rows, JSON records, clinical notes and e-mails in several locales, and carry
distractors that must not be labelled: other dates (visits, orders), order and invoice
numbers, amounts, postcodes, cities, company names, times.

The set is an upper bound on real-world accuracy: generated names and streets follow a few
dozen patterns, real text does not.

    python tests/data/personal_eval.py [N] [SEED]   # prints a few samples
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from faker import Faker

LOCALES = (
    "en_US",
    "en_GB",
    "en_CA",
    "en_AU",
    "de_DE",
    "fr_FR",
    "es_ES",
    "it_IT",
    "nl_NL",
)
TYPES = ("person", "address", "dob", "phone", "health")

# Deliberately broader than the detector's vocabulary: conditions and drugs it does not list
# are here too, so health recall is measured, not assumed.
CONDITIONS = (
    "type 2 diabetes",
    "hypertension",
    "asthma",
    "COPD",
    "major depressive disorder",
    "generalized anxiety disorder",
    "rheumatoid arthritis",
    "stage 2 breast cancer",
    "atrial fibrillation",
    "chronic kidney disease",
    "hypothyroidism",
    "epilepsy",
    "multiple sclerosis",
    "Crohn's disease",
    "gout",
    "shingles",
    "endometriosis",
    "psoriasis",
    "HIV",
    "hepatitis C",
    "migraine",
    "sleep apnea",
    "osteoarthritis",
    "celiac disease",
)
MEDICATIONS = (
    "metformin",
    "lisinopril",
    "atorvastatin",
    "levothyroxine",
    "sertraline",
    "albuterol",
    "warfarin",
    "amlodipine",
    "omeprazole",
    "gabapentin",
    "insulin glargine",
    "prednisone",
    "methotrexate",
    "allopurinol",
    "tamsulosin",
    "escitalopram",
)
DOB_FORMATS = ("%m/%d/%Y", "%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y")
PRODUCTS = ("laptop stand", "router", "monitor", "office chair", "license renewal", "headset")


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)
    locale: str = ""
    template: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "text": self.text,
                "spans": self.spans,
                "locale": self.locale,
                "template": self.template,
            },
            ensure_ascii=False,
        )


class _Builder:
    """Appends text pieces, recording the span of each labelled one."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[str, int, int]] = []

    def add(self, text: str, label: str | None = None) -> _Builder:
        if label is not None:
            self.spans.append((label, self.length, self.length + len(text)))
        self.parts.append(text)
        self.length += len(text)
        return self

    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Person:
    name: str
    street: str
    city: str
    postcode: str
    phone: str
    dob: str
    condition: str
    medication: str
    company: str
    email: str


def _person(fake: Faker, rng: random.Random) -> _Person:
    born = fake.date_of_birth(minimum_age=18, maximum_age=95)
    return _Person(
        name=f"{fake.first_name()} {fake.last_name()}",
        street=fake.street_address().replace("\n", ", "),
        city=_city(fake),
        postcode=fake.postcode(),
        phone=fake.phone_number(),
        dob=born.strftime(rng.choice(DOB_FORMATS)),
        condition=rng.choice(CONDITIONS),
        medication=rng.choice(MEDICATIONS),
        company=fake.company(),
        email=fake.free_email(),
    )


def _city(fake: Faker) -> str:
    """`fake.city()`, independent of the interpreter's hash seed: some locales (it_IT) build
    their city list from a set, whose order changes from one process to the next."""
    for provider in fake.providers:
        cities = getattr(provider, "cities", None)
        if isinstance(cities, list | tuple) and hasattr(provider, "city"):
            return str(fake.random_element(sorted(cities)))
    return str(fake.city())


def _other_date(fake: Faker, rng: random.Random) -> str:
    day: date = fake.date_between(start_date="-2y", end_date="+30d")
    return day.strftime(rng.choice(DOB_FORMATS))


def _chat(p: _Person, fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    if rng.random() < 0.5:
        b.add("Hi, I'm ").add(p.name, "person").add(" and I was born on ").add(p.dob, "dob")
        b.add(f". My order #{rng.randint(10000, 99999)} from {_other_date(fake, rng)} never ")
        b.add("arrived at ").add(p.street, "address").add(f", {p.city}. Call me at ")
        b.add(p.phone, "phone").add(" if you need anything.")
    else:
        b.add("Can you draft a reply to ").add(p.name, "person").add(" (phone ")
        b.add(p.phone, "phone").add(f")? She says the {rng.choice(PRODUCTS)} costs ")
        b.add(f"${rng.randint(20, 900)}.{rng.randint(10, 99)} and asks whether we ship to ")
        b.add(p.street, "address").add(f", {p.postcode} {p.city} before {_other_date(fake, rng)}.")
    return b


def _ticket(p: _Person, fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    b.add(f"Ticket INC-{rng.randint(100000, 999999)} | Priority P{rng.randint(1, 4)}\n")
    b.add("Reporter: ").add(p.name, "person").add(f" ({p.company})\nCallback: ")
    b.add(p.phone, "phone").add("\n")
    b.add(f"Opened {_other_date(fake, rng)} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}\n")
    b.add(f"Customer cannot log in since the update to version {rng.randint(1, 9)}.")
    b.add(f"{rng.randint(0, 20)}.{rng.randint(0, 9)}. Verified identity with date of birth ")
    b.add(p.dob, "dob").add(" and billing address ").add(p.street, "address")
    b.add(f", {p.city}. Refund of EUR {rng.randint(10, 500)} approved.")
    return b


def _csv(people: list[_Person], fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    b.add("Clean up this export and dedupe it:\nname,dob,address,city,phone,plan,joined\n")
    for p in people:
        b.add(p.name, "person").add(",").add(p.dob.replace(",", ""), "dob").add(",")
        b.add(p.street.replace(",", ""), "address").add(f",{p.city},")
        b.add(p.phone, "phone").add(f",{rng.choice(('basic', 'pro', 'team'))},")
        b.add(f"{_other_date(fake, rng).replace(',', '')}\n")
    return b


def _json(people: list[_Person], fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    b.add("Summarize these customer records:\n[")
    for index, p in enumerate(people):
        if index:
            b.add(", ")
        b.add('{"id": ').add(str(rng.randint(1000, 9999))).add(', "name": "')
        b.add(p.name, "person").add('", "date_of_birth": "').add(p.dob, "dob")
        b.add('", "address": "').add(p.street, "address").add(f'", "city": "{p.city}", ')
        b.add('"phone": "').add(p.phone, "phone")
        b.add(f'", "balance": {rng.randint(0, 5000)}.{rng.randint(10, 99)}}}')
    b.add("]")
    return b


def _clinical(p: _Person, fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    mrn = f"{rng.choice('ABCDEFGH')}{rng.randint(1000000, 9999999)}"
    b.add("Discharge summary\nPatient: ").add(p.name, "person").add("  DOB: ").add(p.dob, "dob")
    b.add("  MRN: ").add(mrn, "health").add("\n")
    b.add(f"Admitted {_other_date(fake, rng)} with shortness of breath. History of ")
    b.add(p.condition, "health").add(". Discharged on ").add(p.medication, "health")
    b.add(f" {rng.choice((5, 10, 20, 40, 500))} mg daily; follow-up in {rng.randint(1, 6)} weeks.")
    b.add("\nHome address: ").add(p.street, "address").add(f", {p.city}. Contact: ")
    b.add(p.phone, "phone").add("\nSummarize for the GP letter.")
    return b


def _email(p: _Person, fake: Faker, rng: random.Random) -> _Builder:
    b = _Builder()
    b.add("From: ").add(fake.first_name(), "person")
    b.add(f" <{fake.user_name()}@{fake.domain_name()}>\n")
    b.add(f"Subject: {rng.choice(('Address change', 'Appointment', 'Your invoice'))}\n\n")
    b.add("Dear ").add(p.name, "person").add(",\n\nthank you for your message of ")
    b.add(f"{_other_date(fake, rng)}. We updated your address to ").add(p.street, "address")
    b.add(f", {p.postcode} {p.city}. As discussed, your ")
    b.add(rng.choice(("GP", "physician", "specialist"))).add(" confirmed the diagnosis of ")
    b.add(p.condition, "health").add(f"; invoice {rng.randint(100000, 999999)} for ")
    b.add(f"{rng.randint(50, 400)} EUR is attached. For questions call ")
    b.add(p.phone, "phone").add(".\n\nKind regards,\n").add(fake.company())
    return b


def _negative(fake: Faker, rng: random.Random) -> _Builder:
    """No personal data: a public figure's name alone, business text, dates and numbers."""
    b = _Builder()
    figure = rng.choice(
        ("Ada Lovelace", "Alan Turing", "Marie Curie", "Nelson Mandela", "Albert Einstein")
    )
    b.add("Write a short paragraph on what ").add(figure, "person")
    b.add(" contributed to science, then list ")
    b.add(f"{rng.randint(3, 7)} follow-up readings. Our quarterly revenue was ")
    b.add(
        f"${rng.randint(1, 90)}.{rng.randint(1, 9)}M; the meeting is on {_other_date(fake, rng)} "
    )
    b.add(f"at {rng.randint(1, 12)} pm in room {rng.randint(100, 999)}. ")
    b.add(f"Reference {rng.randint(1000, 9999)}-{rng.randint(100, 999)}, postcode ")
    b.add(f"{fake.postcode()}, {_city(fake)}.")
    return b


TEMPLATES: dict[str, Callable[[Faker, random.Random], _Builder]] = {
    "chat": lambda f, r: _chat(_person(f, r), f, r),
    "ticket": lambda f, r: _ticket(_person(f, r), f, r),
    "csv": lambda f, r: _csv([_person(f, r) for _ in range(r.randint(2, 4))], f, r),
    "json": lambda f, r: _json([_person(f, r) for _ in range(r.randint(1, 3))], f, r),
    "clinical": lambda f, r: _clinical(_person(f, r), f, r),
    "email": lambda f, r: _email(_person(f, r), f, r),
    "negative": _negative,
}


def generate(count: int = 900, seed: int = 20261202) -> list[Sample]:
    """`count` samples, cycling through every (locale, template) pair in a seeded order."""
    rng = random.Random(seed)
    fakers = {}
    for index, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + index)
        fakers[locale] = fake
    pairs = [(loc, name) for loc in LOCALES for name in TEMPLATES]
    samples = []
    for index in range(count):
        locale, name = pairs[index % len(pairs)]
        built = TEMPLATES[name](fakers[locale], rng)
        samples.append(Sample(built.text(), built.spans, locale, name))
    return samples


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 20261202
    for sample in generate(n, seed):
        print(sample.to_json())
