# ruff: noqa: E501 - a data file: one sample template per line reads best
"""Writes tests/data/inspect_corpus.jsonl: the labelled corpus for the inspection detectors.

Run `python tests/data/build_inspect_corpus.py` to regenerate (deterministic: fixed seed).
Each line: {"id", "text", "expect": {detector id: count}, "kind": "positive" | "negative"}.
Check digits (Luhn, mod-97) are computed here independently of gateway/inspect so that the
corpus does not share code with what it measures. Detector ids `dict.codenames` and
`regex.case_id` need the inspection config in inspect_corpus_config.json.
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.data.egress_cases import ALSO, NON_LITERALS, NOT_FOUND, SCOPE, SECRETS, crc_token

rng = random.Random(20240604)
ALNUM = string.ascii_letters + string.digits

# Surroundings: the value at the start, middle and end of prose, in code, JSON, CSV, logs.
SURROUNDINGS = [
    "{v}",
    "Please use {v} for this.",
    "The record shows {v}.",
    "value: {v}\nnext: line",
    '{{"field": "{v}", "n": 3}}',
    "id,value,notes\n17,{v},ok",
    "2024-03-01T10:22:31Z INFO request from {v} accepted",
    "Can you check ({v})? Thanks!",
    "<td>{v}</td>",
    "- item one\n- {v}\n- item three",
    "Note to self — {v} — verify later",
    "Hi team,\n\nsee {v}\n\nBest,\nAnna",
]


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def group(number: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(number[i : i + size])
        i += size
    return sep.join(out)


def cards() -> list[str]:
    values: list[str] = [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
    ]
    brands = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
              ("6011", 16), ("3530", 16), ("4", 13), ("62", 19),
              # Maestro 12-digit, the old 15-digit JCB ranges, JCB 35xx as card generators make them.
              ("5018", 12), ("6304", 12), ("1800", 15), ("2131", 15), ("35", 16)]  # fmt: skip
    for prefix, length in brands * 3:
        number = luhn_complete(prefix, length)
        style = rng.randrange(3)
        if length == 15:
            values.append(group(number, [4, 6, 5], rng.choice([" ", "-"])) if style else number)
        elif length == 12 and style:
            values.append(group(number, [4, 4, 4], " "))
        elif length == 16 and style:
            values.append(group(number, [4, 4, 4, 4], " " if style == 1 else "-"))
        else:
            values.append(number)
    return values


IBAN_SPEC = {"GB": "4a14n", "DE": "18n", "FR": "10n11c2n", "NL": "4a10n", "ES": "20n", "IT": "1a10n12c",
             "CH": "5n12c", "BE": "12n", "PL": "24n", "NO": "11n", "AT": "16n", "IE": "4a14n"}  # fmt: skip


def bban(spec: str) -> str:
    out, num = [], ""
    for ch in spec:
        if ch.isdigit():
            num += ch
            continue
        pool = {
            "n": string.digits,
            "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits,
        }[ch]
        out.append("".join(rng.choice(pool) for _ in range(int(num))))
        num = ""
    return "".join(out)


def iban_check(country: str, body: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in body + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def ibans() -> list[str]:
    values = [
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
    ]
    for country, spec in list(IBAN_SPEC.items()) * 3:
        body = bban(spec)
        iban = country + iban_check(country, body) + body
        style = rng.randrange(3)
        if style == 1:
            iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        elif style == 2:
            iban = iban.lower()
        values.append(iban)
    return values


def bad_ibans() -> list[str]:
    values = []
    for country, spec in IBAN_SPEC.items():
        body = bban(spec)
        check = iban_check(country, body)
        wrong = f"{(int(check) + rng.randrange(1, 96)) % 97 + 2:02d}"
        if wrong != check:
            values.append(country + wrong + body)
    return values


def ssns() -> list[str]:
    values = []
    for _ in range(30):
        area = rng.choice([a for a in range(1, 900) if a != 666])
        sep = rng.choice(["-", "-", " "])
        values.append(
            f"{area:03d}{sep}{rng.randrange(1, 100):02d}{sep}{rng.randrange(1, 10000):04d}"
        )
    return values


def ninos() -> list[str]:
    first = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
    second = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]
    values: list[str] = []
    while len(values) < 24:
        prefix = rng.choice(first) + rng.choice(second)
        if prefix in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            continue
        digits = f"{rng.randrange(10**6):06d}"
        suffix = rng.choice("ABCD")
        if rng.random() < 0.5:
            values.append(f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}")
        else:
            values.append(prefix + digits + suffix)
    return values


def emails() -> list[str]:
    names = ["jane.roe", "j.smith", "mohammed.ali", "li.wei", "o'neil"[:5], "anna+billing", "ops-team",
             "x_y.z", "SALES", "firstname.lastname99"]  # fmt: skip
    domains = ["acme-corp.io", "mail.contoso.co.uk", "gmail.com", "uni-heidelberg.de",
               "bigbank.com.au", "startup.ai", "EXAMPLECORP.COM", "health.gov"]  # fmt: skip
    return [f"{rng.choice(names)}@{rng.choice(domains)}" for _ in range(36)]


PHONES = ["+44 20 7946 0018", "+1 (415) 867-5309", "+49 30 12345678", "+33 1 23 45 67 89",
          "+81 3-1234-5678", "(212) 736-5000", "646.381.3890", "1-800-642-7676", "020 7123 4567",
          "07700 900123", "01 23 45 67 89", "030 1234567", "+91 98765 43210", "+61 2 9374 4000",
          "+447700900123", "+1-202-456-1111", "415-867-5309", "(02) 9374 4000", "+34 912 345 678",
          "+39 06 6982 1234", "0161 496 0000", "+353 1 234 5678", "+86 10 6552 9988",
          "+55 11 91234-5678"]  # fmt: skip


def public_ipv4() -> str:
    while True:
        a = rng.randrange(1, 224)
        if a in (10, 100, 127, 169, 172, 192, 198, 203):
            continue
        return f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def private_ipv4() -> str:
    return rng.choice([
        f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    ])  # fmt: skip


IPV6_PUBLIC = ["2606:4700:4700::1111", "2a00:1450:4001:81a::200e", "2001:4860:4860::8888",
               "2a03:2880:f12f:83:face:b00c:0:25de", "2600:1f18:24e6:b900:4c7a:91b2:3f0e:1d2c"]  # fmt: skip
IPV6_PRIVATE = [
    "fe80::1ff:fe23:4567:890a",
    "fd12:3456:789a:1::1",
    "fe80::4",
    "fdc8:bf8b:e62c:abcd::42",
]


def rand(pool: str, n: int) -> str:
    return "".join(rng.choice(pool) for _ in range(n))


def aws_keys() -> list[str]:
    return ["AKIA" + rand(string.ascii_uppercase + "234567", 16) for _ in range(16)] + [
        "ASIA" + rand(string.ascii_uppercase + "234567", 16) for _ in range(4)
    ]


def pem() -> str:
    kind = rng.choice(["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "])
    lines = [base64.b64encode(rng.randbytes(48)).decode() for _ in range(rng.randrange(2, 6))]
    return (
        f"-----BEGIN {kind}PRIVATE KEY-----\n"
        + "\n".join(lines)
        + f"\n-----END {kind}PRIVATE KEY-----"
    )


def b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def jwt() -> str:
    header = b64url({"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = b64url({"sub": str(rng.randrange(10**9)), "iat": 1700000000 + rng.randrange(10**6)})
    sig = base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")
    return f"{header}.{payload}.{sig}"


def github() -> str:
    # Checksummed like real tokens (30 random characters + base62 CRC32).
    return crc_token(rng.choice(["ghp_", "gho_", "ghs_", "ghu_"]))


def slack() -> str:
    return f"xox{rng.choice('bpa')}-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-{rand(ALNUM, 24)}"


def strong_secret() -> str:
    return rand(ALNUM + "!@#%^&*-_", rng.randrange(12, 33))


ASSIGN_FORMS = ['password="{s}"', "DB_PASSWORD={s}", "api_key: {s}", '"client_secret": "{s}"',
                "export AWS_SECRET_ACCESS_KEY={s}", "apiKey = '{s}'", "auth_token => {s}",
                "Password={s};", "secret_key := {s}", "PWD={s}"]  # fmt: skip
URL_FORMS = ["postgres://app:{s}@db.internal:5432/orders", "mongodb+srv://admin:{s}@cluster0.mongodb.net/test",
             "redis://:{s}@cache:6379/0", "https://deploy:{s}@git.corp.local/repo.git",
             "amqp://guest:{s}@rabbit/vhost", "mysql://root:{s}@10.0.0.5/app"]  # fmt: skip


TOKEN_CONTEXTS = ["export {k}={v}\n", "Here is the key: {v} (do not share)", '{{"{k}": "{v}"}}',
                  "{k}: {v}\n", "curl -s https://api.acme.io -H X-Key:{v}"]  # fmt: skip


def tokens() -> list[tuple[str, dict[str, int]]]:
    """Several made-up tokens per opaque-key format, in prose, env, JSON and shell contexts."""
    b62 = string.ascii_letters + string.digits
    makers: dict[str, Callable[[], str]] = {
        "secret.openai_key": lambda: "sk-proj-" + rand(b62 + "_-", 100),
        "secret.anthropic_key": lambda: "sk-ant-api03-" + rand(b62 + "_-", 93) + "AA",
        "secret.stripe_key": lambda: rng.choice(["sk_live_", "rk_live_"]) + rand(b62, 24),
        "secret.google_api_key": lambda: "AIza" + rand(b62 + "_-", 35),
        "secret.gitlab_token": lambda: "glpat-" + rand(b62, 20),
        "secret.npm_token": lambda: crc_token("npm_"),
        "secret.pypi_token": lambda: "pypi-AgEIcHlwaS5vcmc" + rand(b62 + "_-", 70),
        "secret.twilio_key": lambda: "SK" + rng.randbytes(16).hex(),
        "secret.sendgrid_key": lambda: f"SG.{rand(b62, 22)}.{rand(b62 + '_-', 43)}",
        "secret.huggingface_token": lambda: "hf_" + rand(string.ascii_letters, 34),
    }
    items = []
    for detector, make in makers.items():
        for context in TOKEN_CONTEXTS:
            # A neutral variable name, so that only the format detector is expected.
            items.append((context.format(k="VALUE_REF", v=make()), {detector: 1}))
    return items


def positives() -> list[tuple[str, dict[str, int]]]:
    items: list[tuple[str, dict[str, int]]] = []

    def add(values: list[str], detector: str) -> None:
        for value in values:
            items.append((rng.choice(SURROUNDINGS).format(v=value), {detector: 1}))

    add(emails(), "pii.email")
    add(PHONES, "pii.phone")
    add(ssns(), "gov.us_ssn")
    add(ninos(), "gov.uk_nino")
    add(cards(), "fin.payment_card")
    add(ibans(), "fin.iban")
    add([public_ipv4() for _ in range(24)], "net.ipv4")
    add(IPV6_PUBLIC * 2, "net.ipv6")
    add([private_ipv4() for _ in range(20)] + IPV6_PRIVATE, "net.private_ip")
    add(aws_keys(), "secret.aws_access_key")
    add([jwt() for _ in range(16)], "secret.jwt")
    add([github() for _ in range(16)], "secret.github_token")
    add([slack() for _ in range(12)], "secret.slack_token")
    for _ in range(12):
        items.append((f"Deploy notes:\n{pem()}\nkeep this safe", {"secret.private_key": 1}))
    for _ in range(30):
        items.append(
            (rng.choice(ASSIGN_FORMS).format(s=strong_secret()) + "\n", {"secret.assignment": 1})
        )
    for _ in range(18):
        url = rng.choice(URL_FORMS).format(
            s=strong_secret().replace("@", "%40").replace("#", "%23")
        )
        expect = {"secret.url_credentials": 1}
        if "10.0.0.5" in url:
            expect["net.private_ip"] = 1
        items.append((f"connect with {url} then run the migration", expect))
    for marker, det in (("CONFIDENTIAL", "marker.confidential"), ("INTERNAL ONLY", "marker.internal_only"),
                        ("RESTRICTED", "marker.restricted")):  # fmt: skip
        for template in (
            "{m}\nQ3 forecast draft",
            "Header: {m} - do not forward",
            "[{m}] board minutes",
        ):
            items.append((template.format(m=marker), {det: 1}))
    for template in (
        "Status of Project Falcon?",
        "bluebird launch slipped",
        "BLUEBIRD and project  falcon",
    ):
        items.append((template, {"dict.codenames": 2 if "and" in template else 1}))
    for _n in range(6):
        items.append(
            (f"Customer escalation CASE-{rng.randrange(10**6):06d} reopened", {"regex.case_id": 1})
        )
    items += tokens()
    # Addresses credited as authors: attribution, not a person's record.
    for template in ("# Author: Jo Bloggs <{e}>\nimport os", "__author__ = 'Jo Bloggs ({e})'",
                     "Signed-off-by: Jo Bloggs <{e}>", "# {e}\n# http://www.acme.io/"):  # fmt: skip
        items.append((template.format(e=emails()[0]), {"pii.email_attribution": 1}))
    # The egress review: every secret format, in-scope miss and encoding.
    for case, text, detector in SECRETS + SCOPE:
        items.append((text, {detector: 1, **ALSO.get(case, {})}))
    # Several values in one text.
    for _ in range(10):
        e, c, s = emails()[0], cards()[5], ssns()[0]
        items.append(
            (
                f"Name: Jo\nEmail: {e}\nCard: {c}\nSSN: {s}\n",
                {"pii.email": 1, "fin.payment_card": 1, "gov.us_ssn": 1},
            )
        )
    # Evasions in scope: full-width digits, zero-width characters, non-breaking spaces, Unicode dashes.
    fw = {ord(d): chr(ord(d) + 0xFEE0) for d in "0123456789"}  # full-width digits
    for value in cards()[:6]:
        items.append((f"card {value.translate(fw)} ok", {"fin.payment_card": 1}))
    for value in emails()[:6]:
        at = value.index("@")
        items.append((f"mail {value[:at]}\u200b@\u200d{value[at + 1 :]} now", {"pii.email": 1}))
    for value in ssns()[:6]:
        items.append(
            (
                f"ssn {value.replace('-', chr(0x2011)).replace(' ', chr(0x2011))} ok",
                {"gov.us_ssn": 1},
            )
        )
    for value in cards()[6:10]:
        items.append(
            (
                f"card {group(value.replace(' ', '').replace('-', ''), [4, 4, 4, 4, 3], chr(0xA0))} ok",
                {"fin.payment_card": 1},
            )
        )
    return items


def negatives() -> list[str]:
    texts = []
    for _ in range(30):  # order numbers and random digit strings that fail Luhn
        while True:
            n = rand(string.digits, rng.choice([13, 16, 19]))
            if not luhn_valid(n):
                break
        texts.append(
            rng.choice(["Order #{n} shipped", "tracking {n}", "ref: {n}", "{n}"]).format(n=n)
        )
    for _ in range(6):  # Luhn-valid but no card scheme uses the prefix
        texts.append(f"invoice {luhn_complete('9', 16)}")
    texts += [
        f"request id {rng.randbytes(16).hex()[:8]}-{rng.randbytes(2).hex()}-4{rng.randbytes(2).hex()[1:]}-a{rng.randbytes(2).hex()[1:]}-{rng.randbytes(6).hex()}"
        for _ in range(10)
    ]
    texts += [f"commit {rng.randbytes(20).hex()}" for _ in range(6)] + [
        f"sha256:{rng.randbytes(32).hex()}" for _ in range(4)
    ]
    texts += ["version 1.2.3.4 released", "upgrade to v2.10.3.1", "release 10.0.0.1 notes", "build 4.18.0-553.el9",
              "python 3.11.7", "OID 1.3.6.1.4.1.311", "lat 51.5074 lon -0.1278", "pi is 3.14159 26535"]  # fmt: skip
    texts += ["at 2024-01-15 10:30:45 UTC", "ts=20240115103045", "12:30:45.123", "on 05-12-2023", "15.03.2024",
              "2024/01/15 - 2024/02/15", "duration 00:12:34", "epoch 1700000000123", "1 000 000 users",
              "$1,234,567.89", "ISBN 978-3-16-148410-0", "MAC 00:1A:2B:3C:4D:5E", "error 0x80070005",
              "call 555-0123 (fiction)", "(555) 010-0199 ext", "page 123 of 456"]  # fmt: skip
    texts += ["write to user@example.com", "admin@example.org or ops@test", "noreply@foo.example",
              "see icon@2x.png", "host 192.0.2.10 in docs", "doc range 2001:db8::1", "loopback 127.0.0.1 and ::1",
              "AKIAIOSFODNN7EXAMPLE is AWS's doc key", "password=<your password>", "api_key=${API_KEY}",
              "password: ********", "token: 12345678", "secret=mysterious", "max_tokens=4096",
              "password = os.getenv(\"DB_PASSWORD\")", "API_KEY=YOUR_API_KEY_HERE",
              "postgres://user:password@localhost/db", "https://user:${PASS}@host/x",
              "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "xoxb-your-token-here-please",
              "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
              "paste it as -----BEGIN PRIVATE KEY----- ... -----END PRIVATE KEY-----",
              "eyJhbGciOi.eyJzdWIiOi.notreal", "std::vector<int> v; Face::Bead", "meeting 10:30:45",
              "this is confidential between us", "Restricted access area", "internal only in lowercase",
              "SSN 000-12-3456", "SSN 666-12-3456", "SSN 912-34-5678", "SSN 123-00-4567", "SSN 123-45-0000",
              "NINO QQ 12 34 56 C", "NINO GB123456A", "NINO AB123456E", "falconry and bluebirds",
              "CASE-12345 short", "UNRESTRICTED download", "NONCONFIDENTIAL memo"]  # fmt: skip
    texts += [f"IBAN {v}" for v in bad_ibans()]
    # Code whose right-hand side is not a literal, versions, slices, hex dumps, SSH remotes.
    texts += NON_LITERALS + [text for text, _ in NOT_FOUND]
    return texts


def main() -> None:
    out = Path(__file__).with_name("inspect_corpus.jsonl")
    lines = [
        {"id": f"pos-{i:03d}", "kind": "positive", "text": t, "expect": e}
        for i, (t, e) in enumerate(positives())
    ]
    lines += [
        {"id": f"neg-{i:03d}", "kind": "negative", "text": t, "expect": {}}
        for i, t in enumerate(negatives())
    ]
    out.write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    print(f"wrote {len(lines)} samples to {out}")


if __name__ == "__main__":
    main()
