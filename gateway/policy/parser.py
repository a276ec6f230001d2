"""YAML -> policy model, with the file position of every expression.

The format is cel-go's CEL Policy (`policy` package): `name`, `description`, `imports`, and a
`rule` of ordered `variables` and an ordered `match` list. Parsing never stops at the first
problem: every structural error of the file is collected as a `Diagnostic` so an author fixes
them in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_IDENT_START = "_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_IDENT_CHARS = _IDENT_START + "0123456789"


@dataclass(frozen=True)
class Diagnostic:
    """One problem at a 1-based line and column of a file."""

    path: str
    line: int
    col: int
    message: str
    snippet: str = ""

    def format(self) -> str:
        head = f"{self.path}:{self.line}:{self.col}: {self.message}"
        if not self.snippet:
            return head
        caret = " | " + "." * max(self.col - 1, 0) + "^"
        return f"{head}\n | {self.snippet}\n{caret}"


@dataclass(frozen=True)
class SourceFile:
    path: str
    text: str
    lines: tuple[str, ...]

    @classmethod
    def of(cls, path: str, text: str) -> SourceFile:
        return cls(path, text, tuple(text.splitlines()))

    def diagnostic(self, line: int, col: int, message: str) -> Diagnostic:
        snippet = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return Diagnostic(self.path, line, col, message, snippet)


@dataclass(frozen=True)
class Expr:
    """A CEL expression as written in the file.

    `text` is what CEL type-checks: for plain and block scalars it is the raw file text padded
    so CEL's line and column equal the file's (cel-go does the same), which keeps carets exact
    even for folded (`>`) blocks. `compact` is the same text without the padding, used when
    expressions are composed into one program (CEL limits program size). Both come from the
    raw text, never from YAML's folded value: a triple-quoted string spanning lines inside a `>`
    block would otherwise be checked with its line breaks and evaluated without them.
    """

    text: str
    compact: str
    line: int  # file line of CEL line 1
    col_shift: int  # added to CEL's column on line 1 (quoted scalars only)

    def position(self, cel_line: int, cel_col: int) -> tuple[int, int]:
        if cel_line <= 1:
            return self.line, cel_col + self.col_shift
        return self.line + cel_line - 1, cel_col


@dataclass(frozen=True)
class Variable:
    name: str
    expression: Expr
    line: int
    col: int
    # Where the name itself is written (redeclaration errors point at it).
    name_line: int = 0
    name_col: int = 0


@dataclass(frozen=True)
class Import:
    name: str
    line: int
    col: int


@dataclass(frozen=True)
class Match:
    condition: Expr | None
    output: Expr | None
    rule: Rule | None
    line: int
    col: int


@dataclass(frozen=True)
class Rule:
    id: str | None
    description: str | None
    variables: tuple[Variable, ...]
    matches: tuple[Match, ...]
    line: int
    col: int


@dataclass(frozen=True)
class Policy:
    name: str
    description: str | None
    imports: tuple[str, ...]
    rule: Rule
    source: SourceFile
    # The same imports with where each is written, for diagnostics.
    import_marks: tuple[Import, ...] = ()


@dataclass
class _Ctx:
    src: SourceFile
    errors: list[Diagnostic] = field(default_factory=list)

    def error(self, node: Node, message: str) -> None:
        self.errors.append(
            self.src.diagnostic(node.start_mark.line + 1, node.start_mark.column + 1, message)
        )


class PolicyParseError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(d.format() for d in diagnostics))
        self.diagnostics = diagnostics


def parse_policy(text: str, path: str | Path) -> Policy:
    """Parse policy YAML; raises PolicyParseError holding every problem found."""
    src = SourceFile.of(str(path), text)
    ctx = _Ctx(src)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyParseError([src.diagnostic(line, col, f"invalid YAML: {problem}")]) from None
    if root is None:
        raise PolicyParseError([src.diagnostic(1, 1, "the policy file is empty")])
    policy = _policy(ctx, root)
    if ctx.errors or policy is None:
        raise PolicyParseError(ctx.errors)
    return policy


def _mapping(ctx: _Ctx, node: Node, what: str) -> list[tuple[str, ScalarNode, Node]] | None:
    if not isinstance(node, MappingNode):
        ctx.error(node, f"{what} must be a mapping")
        return None
    out: list[tuple[str, ScalarNode, Node]] = []
    seen: set[str] = set()
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            ctx.error(key, f"{what}: keys must be strings")
            continue
        if key.value in seen:
            ctx.error(key, f"{what}: duplicate field '{key.value}'")
        seen.add(key.value)
        out.append((key.value, key, value))
    return out


def _string(ctx: _Ctx, node: Node, what: str) -> str | None:
    if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        ctx.error(node, f"{what} must be a string")
        return None
    return str(node.value)


def _expr(ctx: _Ctx, node: Node, what: str) -> Expr | None:
    if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        ctx.error(node, f"{what} must be a CEL expression (a string)")
        return None
    value = str(node.value)
    if not value.strip():
        ctx.error(node, f"{what} is empty")
        return None
    start, end, text = node.start_mark, node.end_mark, ctx.src.text
    style = node.style
    if style in ("|", ">"):
        # Content starts on the line after the indicator; keep full lines so CEL's columns
        # are the file's columns.
        first = text.find("\n", start.index)
        raw = text[first + 1 : end.index] if first >= 0 else value
        raw = raw.rstrip()
        return Expr(raw, raw.strip(), start.line + 2, 0)
    if style in ("'", '"'):
        return Expr(value, value, start.line + 1, start.column + 1)
    raw = text[start.index : end.index]
    return Expr(" " * start.column + raw, raw.strip(), start.line + 1, 0)


def _policy(ctx: _Ctx, node: Node) -> Policy | None:
    fields = _mapping(ctx, node, "policy")
    if fields is None:
        return None
    name: str | None = None
    description: str | None = None
    imports: list[Import] = []
    rule: Rule | None = None
    for key, key_node, value in fields:
        if key == "name":
            name = _string(ctx, value, "name")
        elif key == "description":
            description = _string(ctx, value, "description")
        elif key == "imports":
            imports = _imports(ctx, value)
        elif key == "rule":
            rule = _rule(ctx, value)
        else:
            ctx.error(
                key_node,
                f"unsupported policy field '{key}' (expected name, description, imports, rule)",
            )
    if name is None and not any(k == "name" for k, _, _ in fields):
        ctx.error(node, "policy needs a 'name'")
    if rule is None and not any(k == "rule" for k, _, _ in fields):
        ctx.error(node, "policy needs a 'rule'")
    if name is None or rule is None:
        return None
    names = tuple(i.name for i in imports)
    return Policy(name, description, names, rule, ctx.src, tuple(imports))


def _imports(ctx: _Ctx, node: Node) -> list[Import]:
    if not isinstance(node, SequenceNode):
        ctx.error(node, "imports must be a list of {name: qualified.TypeName}")
        return []
    out: list[Import] = []
    for item in node.value:
        fields = _mapping(ctx, item, "import")
        if fields is None:
            continue
        for key, key_node, value in fields:
            if key != "name":
                ctx.error(key_node, f"unsupported import field '{key}' (expected name)")
                continue
            name = _string(ctx, value, "import name")
            if name:
                mark = value.start_mark
                out.append(Import(name.strip(), mark.line + 1, mark.column + 1))
    return out


def _rule(ctx: _Ctx, node: Node) -> Rule | None:
    fields = _mapping(ctx, node, "rule")
    if fields is None:
        return None
    rule_id: str | None = None
    description: str | None = None
    variables: list[Variable] = []
    matches: list[Match] = []
    for key, key_node, value in fields:
        if key == "id":
            rule_id = _string(ctx, value, "rule id")
        elif key == "description":
            description = _string(ctx, value, "rule description")
        elif key == "variables":
            variables = _variables(ctx, value)
        elif key == "match":
            matches = _matches(ctx, value)
        else:
            ctx.error(
                key_node,
                f"unsupported rule field '{key}' (expected id, description, variables, match)",
            )
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    return Rule(rule_id, description, tuple(variables), tuple(matches), line, col)


def _variables(ctx: _Ctx, node: Node) -> list[Variable]:
    if not isinstance(node, SequenceNode):
        ctx.error(node, "variables must be a list of {name, expression}")
        return []
    out: list[Variable] = []
    for item in node.value:
        fields = _mapping(ctx, item, "variable")
        if fields is None:
            continue
        name: str | None = None
        name_at = (0, 0)
        expression: Expr | None = None
        for key, key_node, value in fields:
            if key == "name":
                name = _string(ctx, value, "variable name")
                name_at = (value.start_mark.line + 1, value.start_mark.column + 1)
                if name is not None and not _is_ident(name):
                    ctx.error(value, f"variable name '{name}' must be a CEL identifier")
                    name = None
            elif key == "expression":
                expression = _expr(ctx, value, "variable expression")
            elif key != "description":
                ctx.error(
                    key_node, f"unsupported variable field '{key}' (expected name, expression)"
                )
        keys = {k for k, _, _ in fields}
        for required in ("name", "expression"):
            if required not in keys:
                ctx.error(item, f"variable needs '{required}'")
        if name is not None and expression is not None:
            line, col = item.start_mark.line + 1, item.start_mark.column + 1
            out.append(Variable(name, expression, line, col, *name_at))
    return out


def _matches(ctx: _Ctx, node: Node) -> list[Match]:
    if not isinstance(node, SequenceNode):
        ctx.error(node, "match must be a list of {condition, output} or {condition, rule}")
        return []
    out: list[Match] = []
    for item in node.value:
        fields = _mapping(ctx, item, "match")
        if fields is None:
            continue
        condition: Expr | None = None
        output: Expr | None = None
        rule: Rule | None = None
        for key, key_node, value in fields:
            if key == "condition":
                condition = _expr(ctx, value, "condition")
            elif key == "output":
                output = _expr(ctx, value, "output")
            elif key == "rule":
                rule = _rule(ctx, value)
            elif key not in ("explanation", "description"):
                ctx.error(
                    key_node, f"unsupported match field '{key}' (expected condition, output, rule)"
                )
        keys = {k for k, _, _ in fields}
        if "output" in keys and "rule" in keys:
            ctx.error(item, "match has both 'output' and 'rule'; keep one")
        elif "output" not in keys and "rule" not in keys:
            ctx.error(item, "match needs an 'output' or a 'rule'")
        if output is not None or rule is not None:
            line, col = item.start_mark.line + 1, item.start_mark.column + 1
            out.append(Match(condition, output, rule, line, col))
    return out


def _is_ident(name: str) -> bool:
    return bool(name) and name[0] in _IDENT_START and all(c in _IDENT_CHARS for c in name)
