"""`celgate keys new --tenant NAME`: mint an API key, print it once with the line to configure.

The key is shown only here; celgate keeps its SHA-256 and cannot show it again. Lose it and
mint another (then remove the old line to revoke the lost one).
"""

from __future__ import annotations

import re
import secrets
import sys
from typing import Final, TextIO

from gateway.auth import hash_key
from gateway.config import TENANT_PATTERN

KEY_PREFIX: Final = "cg_"
# 32 random bytes: 256 bits, far beyond guessing, which is why a plain SHA-256 is a safe store.
KEY_BYTES: Final = 32


def new_key() -> str:
    """A fresh API key: `cg_` and 43 URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def run_keys_new(tenant: str, out: TextIO, err: TextIO | None = None) -> int:
    """Print a new key for `tenant` and the config lines that accept it; 0, or 2 on bad input."""
    if not re.match(TENANT_PATTERN, tenant):
        print(
            f"celgate keys new: invalid --tenant {tenant!r}: use 1-64 letters, digits, '.', '_'"
            " or '-', starting with a letter or digit",
            file=err or sys.stderr,
        )
        return 2
    key = new_key()
    digest = hash_key(key)
    out.write(
        f"API key for tenant {tenant} (shown once; give it to the client, store it as a secret):\n"
        f"\n  {key}\n\n"
        "Clients send it as gRPC metadata:  authorization: Bearer <key>\n\n"
        "Add to celgate.yaml under auth.api_keys:\n"
        f"    - {{tenant: {tenant}, sha256: {digest}}}\n\n"
        "or, if you use auth.api_keys_file, append this line to that file:\n"
        f"{tenant} {digest}\n"
    )
    return 0
