"""The selection grammar: one parser for every ``-s EXPR`` and ``shoal select``.

It turns an expression into a small AST (frozen dataclasses below) and raises
:class:`~shoal.errors.SelectionSyntaxError` with the column and what was
expected. It knows nothing of inventories: evaluation lives in ``select.py``.

Grammar (whitespace is allowed between tokens, never inside a name)::

    expr     := postfix (binop postfix)*            all binary operators: one level,
    binop    := ',' | '|' | '!' | '-' | '&' | '^'     applied left to right (ClusterShell)
    postfix  := atom filter*                        filters bind tightest
    atom     := NODESET | '@' GROUP | '%' PLAN | 'all' | 'failed' | 'healthy'
              | '(' expr ')' | filter | call
    filter   := '[' KEY ']' | '[' '!' KEY ']' | '[' KEY OP VALUE ']'
    OP       := '=' | '!=' | '<' | '<=' | '>' | '>=' | '~' | '!~'
    call     := 'limit(' arg ',' COUNT ')' | 'random(' arg ',' COUNT [',' [seed=]INT] ')'
              | 'spread(' arg ',' COUNT ',' 'by=' KEY ')'
    COUNT    := INT | INT '%'

Bounds, refused with the column before anything is expanded: the node-set
literals of one expression stand for at most
:data:`~shoal.nodes.nodeset.MAX_NAMES` names in all, parentheses and calls
nest at most :data:`MAX_NESTING` deep, and plans refer to plans at most
:data:`MAX_PLAN_DEPTH` deep (checked where plans are stored and evaluated).

``,`` and ``|`` are union; ``!`` and a ``-`` that does not continue a name are
difference; ``&`` intersection; ``^`` symmetric difference. Inside a call's
first argument ``,`` separates arguments, so write unions there with ``|`` or
parentheses. A ``[`` glued to a name whose body is a range list (``n[1-4]``)
is part of the node set, and so is a leading one (``[1-2]x``: attribute names
never start with a digit); any other ``[`` is an attribute filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from shoal.errors import NodeSetParseError, SelectionSyntaxError
from shoal.nodes.nodeset import MAX_NAMES, expand
from shoal.nodes.nodeset import count as count_names

KEYWORDS = ("all", "failed", "healthy")
FUNCTIONS = ("limit", "random", "spread")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "~", "!~")
BINOPS = {",": "union", "|": "union", "!": "difference", "-": "difference"}
BINOPS.update({"&": "intersection", "^": "symmetric_difference"})

_NAME_CHAR = re.compile(r"[A-Za-z0-9_.\-]")
_NAME_START = re.compile(r"[A-Za-z0-9_]")
_RANGE_BODY = re.compile(r"\[(\d+(?:-\d+(?:/\d+)?)?(?:,\d+(?:-\d+(?:/\d+)?)?)*)\]")
_IDENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-:]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_OPCHARS = re.compile(r"[=!<>~]+")
_INT = re.compile(r"\d+")

#: The deepest nesting of parentheses and calls in one expression.
MAX_NESTING = 64
#: The longest chain of plans referring to plans (``%a`` uses ``%b`` uses ...).
MAX_PLAN_DEPTH = 32


@dataclass(frozen=True)
class Names:
    """A node-set literal such as ``n[1-4]``: exactly these names."""

    text: str
    names: frozenset[str]
    column: int


@dataclass(frozen=True)
class Group:
    name: str
    column: int


@dataclass(frozen=True)
class PlanRef:
    name: str
    column: int


@dataclass(frozen=True)
class Keyword:
    word: str  # all | failed | healthy
    column: int


@dataclass(frozen=True)
class Condition:
    """One attribute test. ``op`` is one of OPERATORS, ``has`` or ``lacks``."""

    key: str
    op: str
    value: str
    column: int


@dataclass(frozen=True)
class Filter:
    """Nodes of ``operand`` (all nodes when None) that satisfy ``condition``."""

    operand: Expr | None
    condition: Condition


@dataclass(frozen=True)
class BinOp:
    op: str  # union | difference | intersection | symmetric_difference
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Count:
    value: int
    percent: bool = False

    def of(self, size: int) -> int:
        if not self.percent:
            return self.value
        return -(-size * self.value // 100)


@dataclass(frozen=True)
class Call:
    func: str  # limit | random | spread
    arg: Expr
    count: Count
    seed: int | None = None
    by: str | None = None


Expr: TypeAlias = Names | Group | PlanRef | Keyword | Filter | BinOp | Call


class _Parser:
    def __init__(self, text: str, budget: int) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0  # parentheses and calls open at self.pos
        self.budget = budget  # names the literals still to come may stand for

    # --- helpers ------------------------------------------------------------
    def error(self, expected: str, column: int | None = None) -> SelectionSyntaxError:
        return SelectionSyntaxError(self.text, self.pos if column is None else column, expected)

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str, what: str | None = None) -> None:
        if self.peek() != ch:
            raise self.error(what or repr(ch))
        self.pos += 1

    def match(self, regex: re.Pattern[str]) -> str | None:
        self.skip()
        m = regex.match(self.text, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    # --- grammar ------------------------------------------------------------
    def parse(self) -> Expr:
        if not self.text.strip():
            raise self.error("a selection expression", 0)
        node = self.expr(allow_comma=True)
        if self.peek():
            ch = self.peek()
            what = "an operator (, | ! - & ^) or the end"
            if ch == ")":
                what = "an operator or the end (unbalanced ')')"
            raise self.error(what)
        return node

    def expr(self, allow_comma: bool) -> Expr:
        left = self.postfix()
        while True:
            ch = self.peek()
            if not ch or ch not in BINOPS or (ch == "," and not allow_comma):
                return left
            self.pos += 1
            right = self.postfix()
            left = BinOp(BINOPS[ch], left, right)

    def postfix(self) -> Expr:
        node: Expr = self.atom()
        while self.peek() == "[":
            node = Filter(node, self.condition())
        return node

    def atom(self) -> Expr:
        ch = self.peek()
        start = self.pos
        what = "a node set, @group, %plan, all, failed, healthy, '(', '[' or a function"
        if not ch:
            raise self.error(what)
        if ch == "(":
            self.enter()
            self.pos += 1
            inner = self.expr(allow_comma=True)
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        if ch == "[" and not _RANGE_BODY.match(self.text, self.pos):
            return Filter(None, self.condition())
        if ch in "@%":
            self.pos += 1
            if ch == "@" and self.text.startswith("*", self.pos):
                self.pos += 1
                return Keyword("all", start)
            m = _IDENT.match(self.text, self.pos)
            if not m:
                raise self.error("a group name after '@'" if ch == "@" else "a plan name after '%'")
            self.pos = m.end()
            if ch == "%":
                return PlanRef(m.group(0), start)
            if m.group(0) == "all":
                return Keyword("all", start)
            return Group(m.group(0), start)
        if not _NAME_START.match(ch) and ch != "[":
            raise self.error(what)
        text = self.name()
        if text in KEYWORDS:
            return Keyword(text, start)
        if text in FUNCTIONS and self.peek() == "(":
            return self.call(text)
        try:
            size = count_names(text, start)
            if size > self.budget:
                left = "" if self.budget == MAX_NAMES else f", {self.budget:,} left"
                raise self.error(
                    f"a node set of fewer names: {text!r} stands for {size:,}; "
                    f"a selection may name at most {MAX_NAMES:,}{left}",
                    start,
                )
            names = frozenset(expand(text, start))
        except NodeSetParseError as exc:
            raise self.error(f"a valid node set ({exc})", exc.column) from None
        self.budget -= size
        return Names(text, names, start)

    def name(self) -> str:
        """A node-set pattern: name characters and glued range brackets."""
        start = self.pos
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if _NAME_CHAR.match(ch):
                self.pos += 1
            elif ch == "[":
                m = _RANGE_BODY.match(text, self.pos)
                if not m:
                    break
                self.pos = m.end()
            else:
                break
        return text[start : self.pos]

    def condition(self) -> Condition:
        self.expect("[")
        column = self.pos - 1
        lacks = False
        if self.peek() == "!":
            self.pos += 1
            lacks = True
        key = self.match(_KEY)
        if key is None:
            raise self.error("an attribute name")
        if self.peek() == "]":
            self.pos += 1
            return Condition(key, "lacks" if lacks else "has", "", column)
        if lacks:
            raise self.error("']' after '[!KEY'")
        op_col = self.pos
        op = self.match(_OPCHARS)
        if op is None:
            raise self.error("an attribute operator (= != < <= > >= ~ !~) or ']'")
        if op not in OPERATORS:
            raise self.error(f"an attribute operator (= != < <= > >= ~ !~), not {op!r}", op_col)
        value = self.value()
        self.expect("]", "']' closing the attribute filter")
        if op in ("~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise self.error(f"a valid regular expression ({exc})", op_col + len(op)) from None
        return Condition(key, op, value, column)

    def value(self) -> str:
        self.skip()
        text = self.text
        if self.pos < len(text) and text[self.pos] in "'\"":
            quote = text[self.pos]
            end = text.find(quote, self.pos + 1)
            if end < 0:
                raise self.error(f"a closing {quote}")
            value = text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        end = text.find("]", self.pos)
        if end < 0:
            self.pos = len(text)
            raise self.error("']' closing the attribute filter")
        value = text[self.pos : end].strip()
        self.pos = end
        return value

    def count(self) -> Count:
        digits = self.match(_INT)
        if digits is None:
            raise self.error("a count (N or N%)")
        if self.peek() == "%":
            self.pos += 1
            return Count(int(digits), True)
        return Count(int(digits))

    def enter(self) -> None:
        """One level deeper into parentheses or a call (at self.pos), within MAX_NESTING."""
        self.skip()
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"at most {MAX_NESTING} nested parentheses or calls")

    def call(self, func: str) -> Call:
        self.enter()
        self.expect("(")
        arg = self.expr(allow_comma=False)
        self.expect(",", f"',' and a count in {func}()")
        count = self.count()
        seed: int | None = None
        by: str | None = None
        if func == "random" and self.peek() == ",":
            self.pos += 1
            self.skip()
            if self.text.startswith("seed", self.pos):
                self.pos += 4
                self.expect("=")
            digits = self.match(_INT)
            if digits is None:
                raise self.error("an integer seed")
            seed = int(digits)
        elif func == "spread":
            self.expect(",", "', by=ATTR' in spread()")
            self.skip()
            if not self.text.startswith("by", self.pos):
                raise self.error("'by=ATTR'")
            self.pos += 2
            self.expect("=", "'=' after by")
            by = self.match(_KEY)
            if by is None:
                raise self.error("an attribute name after 'by='")
        self.expect(")", f"')' closing {func}()")
        self.depth -= 1
        return Call(func, arg, count, seed, by)


def parse(text: str, budget: int = MAX_NAMES) -> Expr:
    """The AST of a selection expression; SelectionSyntaxError when it is malformed.

    Its node-set literals may stand for at most ``budget`` names in all.
    """
    return _Parser(text, budget).parse()


def plan_refs(node: Expr | None) -> list[str]:
    """Names of the plans an expression refers to, in order of appearance."""
    out: list[str] = []
    stack: list[Expr | None] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, PlanRef):
            out.append(n.name)
        elif isinstance(n, BinOp):
            stack.extend((n.right, n.left))
        elif isinstance(n, Filter):
            stack.append(n.operand)
        elif isinstance(n, Call):
            stack.append(n.arg)
    return out
