"""Rewrites `variables.NAME` references of a CEL expression to plain identifiers.

Authors write `variables.name` (cel-go's convention); the composed program binds each variable
with `cel.bind`, which only accepts a simple identifier. A small lexer skips string literals
and comments so text inside them is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

_IDENT_START = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT = _IDENT_START | frozenset("0123456789")
_STRING_PREFIX = frozenset("rRbB")


def bound_name(name: str) -> str:
    """The identifier a policy variable is bound to inside the composed program."""
    return f"__var_{name}"


def _skip_string(src: str, i: int) -> int:
    """`i` is at a quote (possibly after an r/b prefix); returns the index after the literal."""
    raw = False
    while src[i] in _STRING_PREFIX:
        raw = raw or src[i] in "rR"
        i += 1
    quote = src[i]
    triple = src.startswith(quote * 3, i)
    end_token = quote * 3 if triple else quote
    i += len(end_token)
    while i < len(src):
        if not raw and src[i] == "\\":
            i += 2
            continue
        if src.startswith(end_token, i):
            return i + len(end_token)
        if not triple and src[i] == "\n":
            return i
        i += 1
    return i


def rewrite_variables(src: str, resolve: Callable[[str], str | None]) -> str:
    """Replace each `variables.NAME` for which `resolve(NAME)` gives a replacement."""
    out: list[str] = []
    i = 0
    n = len(src)
    prev_sig = ""  # last non-blank character outside literals: a '.' means member access
    while i < n:
        c = src[i]
        if c in "'\"" or (
            c in _STRING_PREFIX
            and i + 1 < n
            and (
                src[i + 1] in "'\""
                or (src[i + 1] in _STRING_PREFIX and i + 2 < n and src[i + 2] in "'\"")
            )
            and not (i > 0 and src[i - 1] in _IDENT)
        ):
            end = _skip_string(src, i)
            out.append(src[i:end])
            i = end
            prev_sig = '"'
            continue
        if c == "/" and src.startswith("//", i):
            end = src.find("\n", i)
            end = n if end < 0 else end
            out.append(src[i:end])
            i = end
            continue
        if c in _IDENT_START:
            j = i
            while j < n and src[j] in _IDENT:
                j += 1
            word = src[i:j]
            if word == "variables" and prev_sig != ".":
                k = j
                while k < n and src[k].isspace():
                    k += 1
                if k < n and src[k] == ".":
                    k += 1
                    while k < n and src[k].isspace():
                        k += 1
                    m = k
                    while m < n and src[m] in _IDENT:
                        m += 1
                    replacement = resolve(src[k:m]) if m > k else None
                    if replacement is not None:
                        out.append(replacement)
                        i = m
                        prev_sig = "a"
                        continue
            out.append(word)
            i = j
            prev_sig = "a"
            continue
        out.append(c)
        if not c.isspace():
            prev_sig = c
        i += 1
    return "".join(out)


def referenced_variables(src: str) -> set[str]:
    """Names `NAME` of every `variables.NAME` in `src` (outside literals and comments)."""
    names: set[str] = set()

    def collect(name: str) -> str | None:
        names.add(name)
        return None

    rewrite_variables(src, collect)
    return names
