"""The cheap half of the personal-data tier: rules (regular expressions over one request field)
for street addresses, dates of birth, health details, titled names and labelled fields.

Rules run on every text the tier scans, in microseconds; the NER model (personal.py) runs only
where a rule found something a person could be tied to. Each rule returns spans as
`(detector, start, end)` in str offsets of the text it was given. Nothing here keeps a value.

Vocabularies are the public postal and clinical conventions, not any generator's word lists:
USPS Publication 28 street suffixes, the street-type words of the German, Dutch, French,
Spanish, Italian and Portuguese postal addresses, common chronic conditions and the most
prescribed medications.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hyperscan

PERSON = "pii.person"
ADDRESS = "pii.address"
DOB = "pii.date_of_birth"
HEALTH = "phi.health"
LOCATION = "pii.location"

Span = tuple[str, int, int]

_CAP = r"[A-ZÀ-ÖØ-Þ][\w'\u2019.\-]*"  # a capitalized word (letters, apostrophes, dots, hyphens)
_NAMEWORD = r"[A-ZÀ-Þ][\w'\u2019\-]*"

# USPS Publication 28, appendix C1 (common street suffixes and their abbreviations).
_US_SUFFIX = (
    r"Alley|Aly|Annex|Arcade|Avenue|Ave|Bayou|Beach|Bend|Bluffs?|Bottom|Boulevard|Blvd|Branch|"
    r"Bridge|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Ctr|Circles?|Cir|Cliffs?|"
    r"Club|Commons?|Corners?|Course|Courts?|Ct|Coves?|Creek|Crescent|Crest|Crossing|"
    r"Crossroads?|Curve|Dale|Dam|Divide|Drives?|Dr|Estates?|Expressway|Expy|Extensions?|Ext|"
    r"Falls?|Ferry|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Freeway|Fwy|Gardens?|"
    r"Gateway|Glens?|Greens?|Groves?|Harbors?|Haven|Heights|Hts|Highway|Hwy|Hills?|Hollow|"
    r"Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?|Land|Landing|Lane|Ln|Lights?|Loaf|"
    r"Locks?|Lodge|Loop|Mall|Manors?|Meadows?|Mews|Mills?|Mission|Motorway|Mount|Mountains?|"
    r"Neck|Orchard|Oval|Overpass|Parks?|Parkways?|Pkwy|Pass|Passage|Path|Pike|Pines?|Place|Pl|"
    r"Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ramp|Ranch|Rapids?|Rest|Ridges?|River|Roads?|"
    r"Rd|Route|Row|Rue|Run|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares?|Sq|Station|"
    r"Stravenue|Stream|Streets?|St|Summit|Terrace|Ter|Throughway|Trace|Track|Trafficway|Trail|"
    r"Trl|Trailer|Tunnel|Turnpike|Underpass|Unions?|Valleys?|Viaduct|Views?|Villages?|Ville|"
    r"Vista|Walks?|Wall|Ways?|Wells?|Close|Cross|Reserve|Parade|Esplanade|Promenade|Grange|Rise"
)
_UNIT = r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Studio|Floor|Fl\.?|#)\s*[\w\-/]+"
_ADDRESS_RULES = (
    # `41 Birch Lane`, `580 Parsons Gateway Apt. 215`, `Flat 9, 364 Sabrina Walk`, `221B Baker St.`
    re.compile(
        rf"(?:\b{_UNIT},?\s+)?\b\d{{1,6}}[A-Za-z]?(?:[/\-]\d{{1,5}})?,?\s+"
        rf"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"
        rf"(?:{_CAP}\s+){{0,3}}{_CAP}?\s?(?:{_US_SUFFIX})\b\.?(?:,?\s+{_UNIT})?"
    ),
    # `Studio 19\nJames Street`: a unit line before a street without a number.
    re.compile(rf"\b{_UNIT},?\s+(?:{_CAP}\s+){{1,3}}(?:{_US_SUFFIX})\b"),
    # German and Dutch compounds: `Hauptstraße 12a`, `Sabina-Franke-Gasse 77/93`, `Kikihof 4`.
    re.compile(
        r"\b[A-ZÄÖÜ][\w'\u2019.\-]*?(?i:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|"
        r"chaussee|pfad|steig|markt|hof|straat|laan|plein|gracht|kade|dreef|steeg|singel|dijk|"
        r"pad|boulevard|park|plantsoen)\s+\d{1,4}\s?[a-zA-Z]?(?:\s?[\-/]\s?\d{1,4}[a-z]?)?\b"
    ),
    # French: `28, rue de Richard`, `12 bis avenue Foch`.
    re.compile(
        r"\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|place|chemin|allée|"
        r"impasse|quai|route|cours|square|passage|voie|rond-point)\s+"
        rf"(?:(?:de la|de l'|des|du|de|d'|l')\s*)?{_NAMEWORD}(?:\s+{_NAMEWORD}){{0,3}}"
    ),
    # French street types (the ones that are not English words too) are written in lower
    # case: `rue Jules Jacob` needs no number.
    re.compile(
        r"\b(?:rue|chemin|allée|impasse|quai)\s+"
        rf"(?:(?:de la|de l'|des|du|de|d')\s*)?{_NAMEWORD}(?:\s+{_NAMEWORD}){{0,3}}"
    ),
    # Spanish, Italian, Portuguese: the street type first, the number after the name.
    re.compile(
        r"\b(?:Calle|C/|Avenida|Avda\.?|Av\.|Paseo|Plaza|Camino|Carretera|Ronda|Travesía|"
        r"Rambla|Pasaje|Callejón|Glorieta|Vía|Cuesta|Carrer|Passeig|Plaça|Via|Viale|Piazza|"
        r"Piazzale|Corso|Largo|Vicolo|Strada|Contrada|Borgo|Lungomare|Salita|Rua|Travessa|"
        r"Praça|Rodovia|Alameda|Estrada)\s+"
        r"(?:(?:de la|de los|de las|del|de|da|do|dos|das|della|delle|dei|di)\s+)?"
        rf"{_NAMEWORD}(?:\s+(?:de la|del|de|di|della)?\s*{_NAMEWORD}){{0,3}},?\s*"
        r"(?:n[º°o]\.?\s*)?\d{1,5}\b(?:\s*(?:Apt\.|Apartamento|Appartamento|Piso|Puerta|Int\.)"
        r"\s*\d+)?"
    ),
)

_MONTHS = (
    r"January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Januar|Februar|März|Mai|Juni|Juli|Oktober|"
    r"Dezember|janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|"
    r"décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|"
    r"noviembre|diciembre|gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|"
    r"dicembre|januari|februari|maart|mei|augustus|oktober"
)
_DATE = re.compile(
    r"\b(?:\d{1,2}[/.\-]\d{1,2}[/.\-](?:19|20)?\d{2}|(?:19|20)\d{2}[/.\-]\d{1,2}[/.\-]\d{1,2}|"
    rf"\d{{1,2}}\.?\s+(?:de\s+)?(?i:{_MONTHS})\.?,?\s+(?:de\s+)?(?:19|20)\d{{2}}|"
    rf"(?i:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}})\b"
)
_BIRTH_CUE = re.compile(
    r"(?i:\bborn\b|birth|\bdob\b|d\.o\.b|\bb\.|birthday|\bgeb\.|geboren|\bnée?\b|naissance|"
    r"nacid[oa]|nacimiento|\bnat[oa]\b|nascita|geboorte|\bbday\b)"
)

# Health: a condition or medication, a dosage, or what follows a clinical verb.
_CONDITIONS = (
    r"diabetes|type [12] diabetes|hypertension|high blood pressure|asthma|copd|cancer|"
    r"carcinoma|melanoma|leukemia|lymphoma|tumou?r|depression|anxiety disorder|bipolar|"
    r"schizophrenia|adhd|autism|dementia|alzheimer'?s|parkinson'?s|epilepsy|multiple sclerosis|"
    r"hiv|aids|hepatitis [abc]?|tuberculosis|pneumonia|covid-19|stroke|heart failure|"
    r"atrial fibrillation|coronary artery disease|myocardial infarction|heart attack|"
    r"arrhythmia|chronic kidney disease|renal failure|cirrhosis|crohn'?s|ulcerative colitis|"
    r"celiac disease|arthritis|rheumatoid arthritis|osteoporosis|lupus|psoriasis|"
    r"hypothyroidism|hyperthyroidism|obesity|anorexia|bulimia|ptsd|ocd|migraine|"
    r"sleep apnea|glaucoma|cataract|pregnan(?:t|cy)|miscarriage|infertility|"
    r"substance use disorder|alcoholism|opioid use disorder|sickle cell|cystic fibrosis|"
    r"hemophilia|anemia|sepsis|fracture|concussion|chlamydia|gonorrhea|syphilis|herpes"
)
_MEDICATIONS = (
    r"metformin|insulin|lisinopril|atorvastatin|simvastatin|rosuvastatin|amlodipine|"
    r"metoprolol|losartan|hydrochlorothiazide|levothyroxine|omeprazole|pantoprazole|"
    r"albuterol|salbutamol|gabapentin|sertraline|fluoxetine|citalopram|escitalopram|"
    r"bupropion|trazodone|prednisone|warfarin|apixaban|rivaroxaban|clopidogrel|furosemide|"
    r"tramadol|oxycodone|hydrocodone|morphine|fentanyl|buprenorphine|methadone|lithium|"
    r"quetiapine|aripiprazole|risperidone|olanzapine|methylphenidate|adderall|alprazolam|"
    r"lorazepam|clonazepam|diazepam|zolpidem|montelukast|ozempic|semaglutide|"
    r"empagliflozin|sitagliptin|glipizide|allopurinol|tamoxifen|methotrexate|humira|"
    r"adalimumab|truvada|tenofovir|chemotherapy|radiotherapy|dialysis"
)
_HEALTH_TERM = re.compile(
    rf"(?i:\b(?:{_CONDITIONS}|{_MEDICATIONS})\b|\b\d+(?:\.\d+)?\s?(?:mg|mcg|µg|ml|units|iu)\b)"
)
_CLINICAL = re.compile(
    r"(?i:\bdiagnos(?:ed|is)\b|\bdx\b|\bprescri(?:bed|ption)\b|\brx\b|\bmedications?\b|"
    r"\btak(?:es|ing)\b|\btreated\b|\btreatment\b|\bhistory of\b|\bhx\b|\bsuffer(?:s|ing)\b|"
    r"\bpresent(?:s|ed)? with\b|\badmitted\b|\ballerg(?:y|ic)\b|\bchart\b|\bsymptoms?\b|"
    r"\btested positive\b|\bdischarged\b|\bliving with\b|\bpatient\b|\bclinic\b|\bdose\b)"
)
# After such a verb, the next words name the condition even when the vocabulary lacks it.
_DIAGNOSED = re.compile(
    r"(?i:\b(?:diagnosed with|diagnosed as|diagnosis of|dx:|suffers from|suffering from|"
    r"treated for|history of|presents with|presented with|admitted for|tested positive for|"
    r"discharged on|started on|prescribed)\s+)"
    r"((?:stage [0-9IV]+\s+)?[\w'\-]+(?:\s+[\w'\-]+){0,2})"
)
# Triggers that name a diagnosis in any text; the others (`history of`, `started on`,
# `presents with`, `prescribed` ...) also open ordinary phrases and need clinical context.
_DIAGNOSIS = re.compile(
    r"(?i:\b(?:diagnosed with|diagnosed as|diagnosis of|dx:|suffers from|suffering from|"
    r"tested positive for)\s)"
)
_MRN = re.compile(
    r"(?i:\b(?:MRN|medical record (?:number|no\.?|#)|patient (?:id|number|no\.?)|"
    r"chart (?:number|no\.?|#))\s*[:#]?\s*)([A-Z0-9][A-Z0-9\-]{4,19})\b"
)
# A singular person the health detail is about (plural "patients" is a topic, not a person).
_PERSON_REF = re.compile(
    r"(?i:\b(?:patient|pt\.?|client|member|resident|he|she|his|her|him|my|i|i'm|i've|me|you|your|"
    r"mother|father|mom|dad|son|daughter|wife|husband|brother|sister|mr|mrs|ms|miss)\b)"
)

_TITLES = r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Sig|Sig\.ra|Dott|Dhr|Mevr"
# A word of a name: capitalized, then lower case (`DOB`, `MRN` after a name are not part of it).
_PNAME = r"[A-ZÀ-Þ][a-zß-ÿ'\u2019]+(?:-[A-ZÀ-Þ][a-zß-ÿ'\u2019]+)*"
_TITLED = re.compile(rf"\b(?:{_TITLES})\.?[ \t]+((?:{_PNAME}[ \t]+){{0,2}}{_PNAME})")
_LABELLED = re.compile(
    r"(?i:\b(?:name|full name|patient|customer|client|employee|applicant|contact|"
    r"cardholder|account holder|insured|member|dear|attn\.?|nombre|nom|vorname|nachname|"
    r"reporter|requester|requested by|submitted by|assignee|caller|recipient|"
    r"cognome|naam)\s*[:\-,]?\s+)"
    rf"({_PNAME}(?:[ \t]+(?:(?:van|von|de|del|da|di|der|la|le)[ \t]+)*{_PNAME}){{1,3}})"
)
# `"name": "Maria Gonzalez"`, `dob=1961-02-07`, `"address": "41 Birch Lane"`.
_KEYED = re.compile(
    r"""(?i)["']?\b(full_?name|first_?name|last_?name|given_?name|family_?name|surname|"""
    r"""patient(?:_name)?|customer(?:_name)?|client_name|employee_name|contact_name|name|"""
    r"""dob|date_?of_?birth|birth_?date|birthdate|birthday|"""
    r"""address|street(?:_address)?|address_?line_?1|home_address|addr|city|town)\b["']?"""
    r"""\s*[:=]\s*"""
    r"""["']?([^"'\n,;{}\[\]]{2,80})"""
)
_STREET_VALUE = re.compile(r"\d[\w/\-]*,?\s+[A-ZÀ-Þ][a-zß-ÿ]|[A-ZÀ-Þ][a-zß-ÿ]+,?\s+\d{1,5}\b")
_KEY_TYPES = {
    "dob": DOB,
    "birth": DOB,
    "addr": ADDRESS,
    "street": ADDRESS,
    "city": LOCATION,
    "town": LOCATION,
}

# A name in these roles is attribution, not a data subject: `Copyright (c) 2004 Jane Roe`,
# `Author: ...`, `Signed-off-by: ...`. It never combines with a nearby address or date.
_ATTRIBUTION = re.compile(
    r"(?i:copyright|\(c\)|©|author|@author|written by|maintainer|signed-off-by|"
    r"co-authored-by|reviewed-by|contributors?|thanks to|credits?|licen[cs]ed? (?:to|by))"
)


def addresses(text: str) -> Iterator[Span]:
    for rule in _ADDRESS_RULES:
        for match in rule.finditer(text):
            yield ADDRESS, match.start(), match.end()


def dates_of_birth(text: str, anchors: Anchors) -> Iterator[Span]:
    """The first date after a birth word, on the same line (`born 2/7/1961`, `DOB: ...`)."""
    for _, cue_end in anchors.birth:
        line_end = text.find("\n", cue_end)
        limit = min(len(text), cue_end + 40 if line_end < 0 else min(line_end, cue_end + 40))
        match = _DATE.search(text, cue_end, limit + 30)
        if match is not None and match.start() <= limit:
            yield DOB, match.start(), match.end()


def health(text: str, anchors: Anchors) -> Iterator[Span]:
    """Health details stated about one person: an MRN always; a condition, medication or
    dosage when a clinical verb is near it and a singular person reference is in reach; the
    words after `diagnosed with`, `history of` ... likewise."""
    found: list[tuple[int, int]] = []
    for start, _ in anchors.diagnosed:
        mrn = _MRN.match(text, start)
        if mrn is not None:
            yield HEALTH, mrn.start(1), mrn.end(1)
            continue
        phrase = _DIAGNOSED.match(text, start)
        if phrase is not None and (
            _DIAGNOSIS.match(text, start) is not None or _clinical_near(anchors, phrase.span())
        ):
            found.append((phrase.start(1), phrase.end(1)))
    clinical = [start for start, _ in anchors.clinical]
    for start, end in anchors.term:
        near = bisect.bisect_left(clinical, start - 80)
        if near < len(clinical) and clinical[near] <= end + 40:
            found.append((start, end))
    for start, end in found:
        if _PERSON_REF.search(text, max(0, start - 300), min(len(text), end + 60)):
            yield HEALTH, start, end


def _clinical_near(anchors: Anchors, span: tuple[int, int]) -> bool:
    """A vocabulary term inside the phrase, or a clinical word other than its own trigger
    within 120 characters: what tells `history of diabetes` from `the history of redirects`.
    Both lists are in text order: each look is a bisection and a window of a few anchors."""
    start, end = span
    terms = anchors.term
    index = bisect.bisect_left(terms, (start, 0))
    while index < len(terms) and terms[index][0] < end:
        if terms[index][1] <= end:
            return True
        index += 1
    clinical = anchors.clinical
    index = bisect.bisect_left(clinical, (start - 120, 0))
    while index < len(clinical) and clinical[index][0] < end + 120:
        lo, hi = clinical[index]
        if hi <= end + 120 and not (start <= lo < end):
            return True
        index += 1
    return False


def titled_people(text: str, anchors: Anchors) -> Iterator[Span]:
    """Names after a title (`Mrs Ada Byron`), a label (`Patient: ...`, `Dear ...`) or in an
    e-mail header's display name; each rule reads only from where its words were found."""
    for rule, found in ((_TITLED, anchors.title), (_LABELLED, anchors.label)):
        for start, _ in found:
            match = rule.match(text, start)
            if match is not None:
                yield PERSON, match.start(1), match.end(1)
    if anchors.label:
        for match in _DISPLAY_NAME.finditer(text):
            yield PERSON, match.start(1), match.end(1)


def keyed(text: str) -> Iterator[Span]:
    """Values of labelled fields in JSON, YAML, `key=value` and form text."""
    for match in _KEYED.finditer(text):
        key = match.group(1).lower().replace("_", "")
        start, end = match.span(2)
        while end > start and text[end - 1] in " \t":
            end -= 1
        value = text[start:end]
        kind = PERSON
        for word, detector in _KEY_TYPES.items():
            if word in key:
                kind = detector
        if kind == DOB:
            if _DATE.search(value):
                yield DOB, start, end
        elif kind == ADDRESS:
            # A street value, not code (`addr: len(addr) <= 254`): a number and a name.
            if _STREET_VALUE.search(value):
                yield ADDRESS, start, end
        elif kind == LOCATION:
            yield LOCATION, start, end
        elif _plausible_name(value):
            yield PERSON, start, end


def _plausible_name(value: str) -> bool:
    words = value.split()
    return (
        1 <= len(words) <= 5
        and all(w[0].isupper() for w in words if w.lower() not in _PARTICLES)
        and not any(ch.isdigit() or ch in "_()=<>/@" for ch in value)
    )


_PARTICLES = frozenset({"van", "von", "de", "del", "da", "di", "der", "la", "le", "du", "y"})


def csv_columns(text: str) -> Iterator[Span]:
    """Rows of a delimited table whose header names a person, birth date or address column:
    each cell of that column is the value (a CSV export pasted into a prompt)."""
    lines = text.split("\n")
    offset = 0
    header: list[str] | None = None
    sep = ","
    for line in lines:
        stripped = line.rstrip("\r")
        if header is None:
            for candidate in (",", ";", "\t", "|"):
                if stripped.count(candidate) >= 2:
                    cells = [c.strip().strip("\"'").lower() for c in stripped.split(candidate)]
                    if any(_column_type(c) for c in cells):
                        header, sep = cells, candidate
                        break
        elif stripped.count(sep) == len(header) - 1:
            position = offset
            for index, cell in enumerate(stripped.split(sep)):
                kind = _column_type(header[index])
                value = cell.strip().strip("\"'")
                if kind and value:
                    start = offset + line.index(cell, position - offset) + cell.index(value)
                    if (kind == DOB and not _DATE.search(value)) or (
                        kind == PERSON and not _plausible_name(value)
                    ):
                        kind = ""
                    if kind:
                        yield kind, start, start + len(value)
                position += len(cell) + 1
        else:
            header = None
        offset += len(line) + 1


def _column_type(name: str) -> str:
    name = name.replace(" ", "_")
    if name in {"dob", "date_of_birth", "birth_date", "birthdate", "birthday", "born"}:
        return DOB
    if name in {"address", "street", "street_address", "address_line1", "address1", "addr"}:
        return ADDRESS
    if name in {
        "name",
        "full_name",
        "fullname",
        "first_name",
        "last_name",
        "patient",
        "patient_name",
        "customer",
        "customer_name",
        "employee",
        "contact",
        "surname",
    }:
        return PERSON
    return ""


_ORGANISATION = re.compile(
    r"\s*(?:,\s*)?(?:Inc\b|LLC\b|Ltd\b|Limited\b|PLC\b|plc\b|GmbH|AG\b|KG\b|e\.V\.|S\.?L\b|"
    r"S\.?A\b|S\.?p\.?A\b|S\.?r\.?l\b|SARL\b|SAS\b|B\.?V\.?|N\.?V\.?|Group\b|Corp|"
    r"Company\b|& ?Co\b|and Sons\b|\+ ?Co\b|Partners\b|Associates\b|[&+]|and\s+[A-Z][a-z])"
)


def organisation(text: str, end: int) -> bool:
    """True when a legal-form suffix or a partner list follows the name (`Ryan Inc`,
    `Fields, Moore and Levy`): a company, not a person."""
    return _ORGANISATION.match(text, end) is not None


# A name right after a postcode is the town: `75001 Paris`, `6813JY Arnhem`, `SW1A 1AA London`.
_POSTCODE_BEFORE = re.compile(
    r"(?:\b\d{4,5}|\b\d{4}\s?[A-Z]{2}|\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}),?\s*$"
)
_DISPLAY_NAME = re.compile(
    rf"(?m)^(?:From|To|Cc|Reply-To):[ \t]+((?:{_PNAME}[ \t]+){{0,2}}{_PNAME})[ \t]+<"
)


def after_postcode(text: str, start: int) -> bool:
    return _POSTCODE_BEFORE.search(text, max(0, start - 14), start) is not None


def attribution(text: str, start: int) -> bool:
    """True when the name at `start` follows an attribution word on its own line."""
    line_start = text.rfind("\n", 0, start) + 1
    return _ATTRIBUTION.search(text, line_start, start) is not None


def rule_spans(text: str) -> list[Span]:
    """Every span the rules find in `text` (persons only where a title or label names them)."""
    anchors = Anchors.of(text)
    spans: list[Span] = []
    if anchors.address:
        spans.extend(addresses(text))
    spans.extend(dates_of_birth(text, anchors))
    spans.extend(health(text, anchors))
    if anchors.title or anchors.label:
        spans.extend(titled_people(text, anchors))
    if anchors.key:
        spans.extend(keyed(text))
        if "\n" in text:
            spans.extend(csv_columns(text))
    return spans


# -- anchors -----------------------------------------------------------------------------
# The vocabularies (birth words, conditions and drugs, clinical verbs, name labels) are found
# in one Hyperscan pass; Python's `re` then reads only around what was found. A word list as
# one `re` alternation costs a millisecond per 2 KB; the pass costs microseconds.


def _bytes(pattern: str) -> bytes:
    return pattern.encode("utf-8")


_ANCHOR_KINDS = (
    "birth",
    "term",
    "clinical",
    "diagnosed",
    "title",
    "label",
    "key",
    "address",
)
_ANCHOR_EXPRESSIONS: tuple[tuple[int, bytes], ...] = (
    (
        0,
        rb"\bborn\b|birth|\bdob\b|d\.o\.b|\bb\.|\bgeb\.|geboren|\bn\xc3\xa9e?\b|naissance|"
        rb"nacid[oa]|nacimiento|\bnat[oa]\b|nascita|geboorte|\bbday\b",
    ),
    (1, b"\\b(?:" + _bytes(_CONDITIONS) + b"|" + _bytes(_MEDICATIONS) + b")\\b"),
    (1, rb"\b[0-9]+(?:\.[0-9]+)? ?(?:mg|mcg|\xc2\xb5g|ml|units|iu)\b"),
    (
        2,
        rb"\b(?:diagnos(?:ed|is)|dx|prescri(?:bed|ption)|rx|medications?|tak(?:es|ing)|treated|"
        rb"treatment|history of|hx|suffer(?:s|ing)|present(?:s|ed)? with|admitted|"
        rb"allerg(?:y|ic)|chart|symptoms?|tested positive|discharged|living with|patient|"
        rb"clinic|dose)\b",
    ),
    (
        3,
        rb"\b(?:diagnosed with|diagnosed as|diagnosis of|dx:|suffers from|suffering from|"
        rb"treated for|history of|presents with|presented with|admitted for|"
        rb"tested positive for|discharged on|started on|prescribed|mrn|"
        rb"medical record|patient (?:id|number|no)|chart (?:number|no|#))",
    ),
    (4, rb"\b(?:mr|mrs|ms|miss|mx|dr|prof|herr|frau|mme|mlle|sr|sra|srta|sig|dott|dhr|mevr)\b"),
    (
        5,
        rb"\b(?:name|full name|patient|customer|client|employee|applicant|contact|cardholder|"
        rb"account holder|insured|member|dear|attn|nombre|nom|vorname|nachname|reporter|"
        rb"requester|requested by|submitted by|assignee|caller|recipient|cognome|naam)\b|"
        rb"(?:from|to|cc|reply-to): ",
    ),
    # Keys and column names, also inside identifiers (`first_name`, `dob=`).
    (6, rb"name|dob|birth|addr|street|city|town"),
    # An address: a house number before a capitalized word, a unit, or a street type first.
    (
        7,
        rb"\b[0-9]{1,6}[A-Za-z]?(?:[/\-][0-9]{1,5})?,? +[A-Z\xc3]|"
        rb"\b(?:apt|apartment|suite|ste|unit|flat|studio)\b|"
        rb"(?:stra(?:\xc3\x9f|ss)e|str\.|weg|gasse|platz|allee|ring|damm|ufer|chaussee|pfad|"
        rb"steig|markt|hof|straat|laan|plein|gracht|kade|dreef|steeg|singel|dijk|pad|boulevard|"
        rb"park|plantsoen) +[0-9]|"
        rb"\b(?:rue|avenue|boulevard|chemin|all\xc3\xa9e|impasse|quai|place|calle|c/|avenida|"
        rb"avda|av\.|paseo|plaza|camino|carretera|ronda|traves\xc3\xada|rambla|pasaje|"
        rb"callej\xc3\xb3n|glorieta|v\xc3\xada|cuesta|carrer|passeig|pla\xc3\xa7a|via|viale|"
        rb"piazza|piazzale|corso|largo|vicolo|strada|contrada|borgo|lungomare|salita|rua|"
        rb"travessa|pra\xc3\xa7a|rodovia|alameda|estrada)\b",
    ),
)


def _anchor_database() -> hyperscan.Database:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SOM_LEFTMOST
    database.compile(
        expressions=[expression for _, expression in _ANCHOR_EXPRESSIONS],
        ids=[kind for kind, _ in _ANCHOR_EXPRESSIONS],
        elements=len(_ANCHOR_EXPRESSIONS),
        flags=[flags] * len(_ANCHOR_EXPRESSIONS),
    )
    return database


_DATABASE = _anchor_database()
_LOCAL = threading.local()


def _collect(kind: int, start: int, end: int, flags: int, hits: Any) -> None:
    hits.append((kind, start, end))


@dataclass(slots=True)
class Anchors:
    """Where each vocabulary occurs in a text: (start, end) in str offsets, in order."""

    birth: list[tuple[int, int]] = field(default_factory=list)
    term: list[tuple[int, int]] = field(default_factory=list)
    clinical: list[tuple[int, int]] = field(default_factory=list)
    diagnosed: list[tuple[int, int]] = field(default_factory=list)
    title: list[tuple[int, int]] = field(default_factory=list)
    label: list[tuple[int, int]] = field(default_factory=list)
    key: list[tuple[int, int]] = field(default_factory=list)
    address: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> Anchors:
        data = text.encode("utf-8", "replace")
        scratch = getattr(_LOCAL, "scratch", None)
        if scratch is None:
            scratch = _LOCAL.scratch = hyperscan.Scratch(_DATABASE)
        hits: list[tuple[int, int, int]] = []
        _DATABASE.scan(data, match_event_handler=_collect, context=hits, scratch=scratch)
        anchors = cls()
        if not hits:
            return anchors
        convert = _char_offsets(text) if len(data) != len(text) else None
        lists = [getattr(anchors, kind) for kind in _ANCHOR_KINDS]
        last: dict[tuple[int, int], int] = {}
        for kind, start, end in sorted(hits):
            if convert is not None:
                start, end = convert[start], convert[end]
            # Several ends per start (`type 2 diabetes` and `diabetes`): keep the longest.
            index = last.get((kind, start))
            if index is not None:
                lists[kind][index] = (start, max(end, lists[kind][index][1]))
                continue
            last[(kind, start)] = len(lists[kind])
            lists[kind].append((start, end))
        return anchors


def _char_offsets(text: str) -> list[int]:
    """UTF-8 byte offset -> str offset, for texts that are not ASCII."""
    out = []
    for index, char in enumerate(text):
        out.extend([index] * len(char.encode("utf-8", "replace")))
    out.append(len(text))
    return out
