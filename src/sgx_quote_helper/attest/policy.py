"""Attestation policies in Azure Attestation's text format: lexer, parser, evaluator, policy hash.

The format (learn.microsoft.com/azure/attestation/claim-rule-grammar, policy-version-1-0 ... 1-2)::

    version= 1.0;
    configurationrules { => issueproperty(type="x-ms-sgx-tcbidentifier", value="azuredefault"); };
    authorizationrules { c:[type=="x-ms-sgx-is-debuggable", value==false] && [type=="x-ms-sgx-svn", value>=2]
                             => permit(); };
    issuancerules      { c:[type=="x-ms-sgx-mrsigner"] => issue(type="sgx-mrsigner", value=c.value);
                         c:[type=="x-ms-sgx-mrenclave"] => issue(claim=c); };

A rule is ``[conditions] => action;``. A condition is ``[ident:] [prop op operand, ...]`` over
the claim properties ``type``, ``value``, ``issuer`` (``==`` ``!=`` for all, ``<`` ``<=`` ``>``
``>=`` for integers); operands are strings, integers, ``true``/``false`` or ``ident.value`` /
``ident.type`` / ``ident.issuer`` of an earlier condition. Actions: ``permit()``, ``deny()``
(authorization only), ``issue(...)`` (issuance only: the claim goes into the token and the claim
set), ``add(...)`` (the claim set only) and ``issueproperty(...)`` (configuration only), with
``type=..., value=...`` or ``claim=ident``. Keywords are case-insensitive, as in Microsoft's
published default policy (``Version= 1.0;``). Anything else is a :class:`PolicyError` with the
line and column.

Evaluation (fail closed): a rule fires once per combination of claims that satisfies its
conditions (at most :data:`MAX_MATCHES`); authorization succeeds only if some ``permit()`` fired and
no ``deny()`` did. The hash is MAA's: ``BASE64URL(SHA256(UTF8(BASE64URL(UTF8(policy text)))))``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from ..errors import PolicyError

Value = str | int | bool
#: most claim combinations one rule may match (a guard against quadratic blow-ups)
MAX_MATCHES = 4096
#: most claim comparisons one evaluation may make (a draft policy comes from the client)
MAX_STEPS = 200_000
#: largest policy text accepted
MAX_POLICY_CHARS = 256 * 1024
VERSIONS = ("1.0", "1.1", "1.2")
SECTIONS = ("configurationrules", "authorizationrules", "issuancerules")
#: claim types a policy may not issue: the service's own and the JWT's registered claims
RESERVED_PREFIXES = ("x-ms-", "x-sgxqh-")
RESERVED = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "nonce", "cnf"})
#: configuration properties understood (issued into the token; they select no TCB baseline)
PROPERTIES = frozenset({"x-ms-sgx-tcbidentifier"})

Service = "AttestationService"


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def policy_hash(text: str) -> str:
    """MAA's ``x-ms-policy-hash``: BASE64URL(SHA256(UTF8(BASE64URL(UTF8(text)))))."""
    return b64url(hashlib.sha256(b64url(text.encode("utf-8")).encode("ascii")).digest())


class Claim(NamedTuple):
    """One claim: type, value and issuer (``AttestationService``, ``AttestationPolicy``...).

    Immutable and hashable; a named tuple because every attestation makes a few dozen of them
    (half the cost of a frozen dataclass)."""

    type: str
    value: Value
    issuer: str = Service


# ---------------------------------------------------------------------------------------- lexer

_PUNCT = ("=>", "==", "!=", "<=", ">=", "&&", "=", "<", ">", ";", "{", "}", "[", "]", "(", ")", ",", ":", ".")
_SMART_QUOTES = "\u201c\u201d\u2018\u2019"


@dataclass(frozen=True)
class Token:
    kind: Literal["ident", "string", "number", "punct", "eof"]
    text: str
    line: int
    column: int


def tokens(text: str) -> list[Token]:
    """Split policy text into tokens (PolicyError with line/column for anything unknown)."""
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(f"policy longer than {MAX_POLICY_CHARS} characters")
    out: list[Token] = []
    i, line, col = 0, 1, 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            i, line, col = i + 1, line + 1, 1
            continue
        if ch in " \t\r\ufeff":
            i, col = i + 1, col + 1
            continue
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        start_col = col
        if ch == '"':
            j, buf = i + 1, []
            while True:
                if j >= n or text[j] == "\n":
                    raise PolicyError("unterminated string", line, start_col)
                c = text[j]
                if c == "\\":
                    if j + 1 >= n or text[j + 1] not in '"\\':
                        raise PolicyError('bad escape in string (only \\" and \\\\)', line, col + j - i)
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if c == '"':
                    break
                buf.append(c)
                j += 1
            out.append(Token("string", "".join(buf), line, start_col))
            col += j + 1 - i
            i = j + 1
            continue
        if ch.isascii() and (ch.isdigit() or (ch == "-" and i + 1 < n and text[i + 1].isdigit())):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isdigit() or text[j] == "."):
                j += 1
            out.append(Token("number", text[i:j], line, start_col))
            col += j - i
            i = j
            continue
        if ch.isascii() and (ch.isalpha() or ch in "_$"):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] in "_-$"):
                j += 1
            out.append(Token("ident", text[i:j], line, start_col))
            col += j - i
            i = j
            continue
        for p in _PUNCT:
            if text.startswith(p, i):
                out.append(Token("punct", p, line, start_col))
                i, col = i + len(p), col + len(p)
                break
        else:
            hint = ' (a typographic quote: use a plain ")' if ch in _SMART_QUOTES else ""
            raise PolicyError(f"unexpected character {ch!r}{hint}", line, start_col)
    out.append(Token("eof", "", line, col))
    return out


# ------------------------------------------------------------------------------------ the model

Prop = Literal["type", "value", "issuer"]
Op = Literal["==", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Ref:
    """``ident.prop``: a property of the claim an earlier condition matched."""

    ident: str
    prop: Prop


Operand = Value | Ref


@dataclass(frozen=True)
class Test:
    prop: Prop
    op: Op
    operand: Operand


@dataclass(frozen=True)
class Condition:
    ident: str | None
    tests: tuple[Test, ...]


@dataclass(frozen=True)
class Action:
    name: Literal["permit", "deny", "issue", "add", "issueproperty"]
    type: Operand | None = None
    value: Operand | None = None
    claim: str | None = None


@dataclass(frozen=True)
class Rule:
    conditions: tuple[Condition, ...]
    action: Action
    line: int

    @functools.cached_property
    def literals(self) -> tuple[str | None, ...]:
        """Per condition, the claim type it names (``type == "..."``), or None: it may match any
        claim (worked out once per rule, not per evaluation)."""
        return tuple(_type_literal(c) for c in self.conditions)

    @functools.cached_property
    def lone_tests(self) -> tuple[Test, ...]:
        """A one-condition rule's tests but the one that picked its claim type (every candidate
        has that type already, so the test always holds)."""
        (cond,) = self.conditions
        lit = self.literals[0]
        if lit is None:
            return cond.tests
        picked = next(t for t in cond.tests if t.prop == "type" and t.op == "==" and t.operand == lit)
        return tuple(t for t in cond.tests if t is not picked)

    @functools.cached_property
    def checked_type(self) -> bool:
        """The action's claim type is a literal the parser has already checked (not reserved), so
        evaluation need not check it again."""
        t = self.action.type
        return isinstance(t, str) and not _reserved(t)


@dataclass(frozen=True)
class Policy:
    """A parsed policy: its text (for the hash), version and the three rule sections."""

    text: str
    version: str
    configuration: tuple[Rule, ...] = ()
    authorization: tuple[Rule, ...] = ()
    issuance: tuple[Rule, ...] = ()

    @functools.cached_property
    def hash(self) -> str:
        return policy_hash(self.text)

    @functools.cached_property
    def claim_types(self) -> frozenset[str] | None:
        """The incoming claim types the policy can look at: every condition names its type, so a
        claim of any other type never matches; None when some condition names no type."""
        out: set[str] = set()
        for rule in (*self.configuration, *self.authorization, *self.issuance):
            for lit in rule.literals:
                if lit is None:
                    return None
                out.add(lit)
        return frozenset(out)

    def evaluate(self, claims: Sequence[Claim]) -> Decision:
        """Run the sections in order over the service's claims (see the module doc)."""
        return _evaluate(self, claims)


# ----------------------------------------------------------------------------------- the parser

_ALLOWED = {
    "configurationrules": ("issueproperty", "add"),
    "authorizationrules": ("permit", "deny", "add"),
    "issuancerules": ("issue", "add"),
}


class _Parser:
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> Token:
        return self.toks[self.pos]

    def next(self) -> Token:
        tok = self.toks[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def fail(self, message: str, tok: Token | None = None) -> PolicyError:
        t = tok or self.peek()
        found = "end of policy" if t.kind == "eof" else repr(t.text)
        return PolicyError(f"{message}, found {found}", t.line, t.column)

    def punct(self, p: str) -> Token:
        tok = self.peek()
        if tok.kind != "punct" or tok.text != p:
            raise self.fail(f"expected {p!r}")
        return self.next()

    def is_punct(self, p: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.text == p

    def keyword(self, *words: str) -> str:
        tok = self.peek()
        if tok.kind != "ident" or tok.text.lower() not in words:
            raise self.fail("expected " + " or ".join(repr(w) for w in words))
        self.next()
        return tok.text.lower()

    def policy(self, text: str) -> Policy:
        self.keyword("version")
        self.punct("=")
        vtok = self.peek()
        if vtok.kind != "number" or vtok.text not in VERSIONS:
            raise self.fail(f"expected a policy version ({', '.join(VERSIONS)})")
        self.next()
        self.punct(";")
        sections: dict[str, tuple[Rule, ...]] = {}
        order = list(SECTIONS)
        while self.peek().kind != "eof":
            tok = self.peek()
            name = self.keyword(*SECTIONS)
            if name in sections:
                raise PolicyError(f"section {name} appears twice", tok.line, tok.column)
            if order.index(name) < max((order.index(s) for s in sections), default=-1):
                raise PolicyError(
                    f"section {name} out of order ({', '.join(SECTIONS)})", tok.line, tok.column
                )
            if name == "configurationrules" and vtok.text == "1.0":
                raise PolicyError("configurationrules need version 1.1 or later", tok.line, tok.column)
            sections[name] = self.section(name)
        for required in ("authorizationrules", "issuancerules"):
            if required not in sections:
                raise self.fail(f"expected the section {required}")
        return Policy(
            text=text,
            version=vtok.text,
            configuration=sections.get("configurationrules", ()),
            authorization=sections["authorizationrules"],
            issuance=sections["issuancerules"],
        )

    def section(self, name: str) -> tuple[Rule, ...]:
        self.punct("{")
        rules: list[Rule] = []
        while not self.is_punct("}"):
            rules.append(self.rule(name))
        self.punct("}")
        self.punct(";")
        return tuple(rules)

    def rule(self, section: str) -> Rule:
        first = self.peek()
        conditions: list[Condition] = []
        idents: set[str] = set()
        if not self.is_punct("=>"):
            conditions.append(self.condition(idents))
            while self.is_punct("&&"):
                self.next()
                conditions.append(self.condition(idents))
        self.punct("=>")
        action = self.action(section, idents)
        self.punct(";")
        return Rule(tuple(conditions), action, first.line)

    def condition(self, idents: set[str]) -> Condition:
        ident = None
        tok = self.peek()
        if tok.kind == "ident":
            ident = self.next().text
            if ident in idents:
                raise PolicyError(f"identifier {ident!r} used twice in one rule", tok.line, tok.column)
            self.punct(":")
        self.punct("[")
        tests = [self.test(idents)]
        while self.is_punct(","):
            self.next()
            tests.append(self.test(idents))
        self.punct("]")
        if ident is not None:
            idents.add(ident)
        return Condition(ident, tuple(tests))

    def prop(self) -> Prop:
        word = self.keyword("type", "value", "issuer")
        return word  # type: ignore[return-value]

    def test(self, idents: set[str]) -> Test:
        prop = self.prop()
        tok = self.peek()
        if tok.kind != "punct" or tok.text not in ("==", "!=", "<", "<=", ">", ">="):
            raise self.fail("expected a comparison (== != < <= > >=)")
        self.next()
        operand = self.operand(idents)
        if tok.text not in ("==", "!=") and (
            prop != "value" or (not _is_int(operand) and not isinstance(operand, Ref))
        ):
            raise PolicyError(f"{tok.text} compares integer values only", tok.line, tok.column)
        if prop in ("type", "issuer") and not isinstance(operand, (str, Ref)):
            raise PolicyError(f"{prop} is a string", tok.line, tok.column)
        return Test(prop, tok.text, operand)  # type: ignore[arg-type]

    def operand(self, idents: set[str]) -> Operand:
        tok = self.next()
        if tok.kind == "string":
            return tok.text
        if tok.kind == "number":
            if "." in tok.text:
                raise PolicyError("only integer numbers are supported", tok.line, tok.column)
            return int(tok.text)
        if tok.kind == "ident":
            low = tok.text.lower()
            if low in ("true", "false"):
                return low == "true"
            if tok.text not in idents:
                raise PolicyError(f"unknown identifier {tok.text!r}", tok.line, tok.column)
            self.punct(".")
            return Ref(tok.text, self.prop())
        raise self.fail("expected a string, integer, true, false or ident.value", tok)

    def action(self, section: str, idents: set[str]) -> Action:
        tok = self.peek()
        name = self.keyword("permit", "deny", "issue", "add", "issueproperty")
        if name not in _ALLOWED[section]:
            allowed = ", ".join(f"{a}()" for a in _ALLOWED[section])
            raise PolicyError(
                f"{name}() is not allowed in {section} (allowed: {allowed})", tok.line, tok.column
            )
        self.punct("(")
        if name in ("permit", "deny"):
            self.punct(")")
            return Action(name)  # type: ignore[arg-type]
        args: dict[str, Operand] = {}
        claim: str | None = None
        while True:
            atok = self.peek()
            arg = self.keyword("type", "value", "claim")
            if arg in args or (arg == "claim" and claim is not None):
                raise PolicyError(f"argument {arg} given twice", atok.line, atok.column)
            self.punct("=")
            if arg == "claim":
                ctok = self.next()
                if ctok.kind != "ident" or ctok.text not in idents:
                    raise PolicyError("claim= names the identifier of a condition", ctok.line, ctok.column)
                claim = ctok.text
            else:
                args[arg] = self.operand(idents)
            if not self.is_punct(","):
                break
            self.next()
        end = self.punct(")")
        if claim is not None and args:
            raise PolicyError("give either claim=ident or type=..., value=...", end.line, end.column)
        if claim is None and set(args) != {"type", "value"}:
            raise PolicyError(f"{name}() needs type=... and value=... (or claim=ident)", end.line, end.column)
        typ = args.get("type")
        if typ is not None and not isinstance(typ, (str, Ref)):
            raise PolicyError("type= is a string", end.line, end.column)
        if name == "issueproperty" and typ not in PROPERTIES:
            known = ", ".join(sorted(PROPERTIES))
            raise PolicyError(
                f"issueproperty: unsupported property (supported: {known})", end.line, end.column
            )
        if isinstance(typ, str) and name == "issue" and _reserved(typ):
            raise PolicyError(
                f"claim type {typ!r} is the service's own: a policy cannot issue it", end.line, end.column
            )
        return Action(name, type=typ, value=args.get("value"), claim=claim)  # type: ignore[arg-type]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _reserved(typ: str) -> bool:
    return typ in RESERVED or typ.startswith(RESERVED_PREFIXES)


def parse(text: str) -> Policy:
    """Parse policy text (PolicyError with line and column for anything not in the grammar)."""
    if not isinstance(text, str):
        raise PolicyError("policy text must be a string")
    return _Parser(tokens(text)).policy(text)


# -------------------------------------------------------------------------------- the evaluator


@dataclass
class Decision:
    """The result of evaluating a policy: permitted?, why not, and what it issues."""

    permitted: bool
    reason: str
    issued: list[Claim] = field(default_factory=list)
    properties: list[Claim] = field(default_factory=list)

    def issued_claims(self) -> dict[str, object]:
        """Issued claims as JSON members (a type issued more than once becomes a list)."""
        out: dict[str, object] = {}
        for c in self.issued:
            if c.type in out:
                prev = out[c.type]
                out[c.type] = [*prev, c.value] if isinstance(prev, list) else [prev, c.value]
            else:
                out[c.type] = c.value
        return out


def _get(claim: Claim, prop: Prop) -> Value:
    return claim.type if prop == "type" else claim.issuer if prop == "issuer" else claim.value


def _same_kind(a: Value, b: Value) -> bool:
    return type(a) is type(b) or (_is_int(a) and _is_int(b))


def _compare(have: Value, op: Op, want: Value) -> bool:
    if not _same_kind(have, want):
        return op == "!="
    if op == "==":
        return have == want
    if op == "!=":
        return have != want
    if not (_is_int(have) and _is_int(want)):
        return False
    a, b = int(have), int(want)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _resolve(operand: Operand, bound: dict[str, Claim]) -> Value:
    if isinstance(operand, Ref):
        return _get(bound[operand.ident], operand.prop)
    return operand


def _type_literal(cond: Condition) -> str | None:
    for t in cond.tests:
        if t.prop == "type" and t.op == "==" and isinstance(t.operand, str):
            return t.operand
    return None


def _matches(
    rule: Rule, claims: Sequence[Claim], by_type: dict[str, list[Claim]], budget: list[int]
) -> Iterator[dict[str, Claim]]:
    """Every binding of the rule's conditions to claims (a condition naming a literal type only
    looks at claims of that type)."""
    candidates: list[Sequence[Claim]] = [
        by_type.get(lit, ()) if lit is not None else claims for lit in rule.literals
    ]

    def walk(i: int, bound: dict[str, Claim]) -> Iterator[dict[str, Claim]]:
        if i == len(rule.conditions):
            yield bound
            return
        cond = rule.conditions[i]
        for claim in candidates[i]:
            budget[0] -= 1
            if budget[0] < 0:
                raise PolicyError(
                    f"evaluation exceeds {MAX_STEPS} claim comparisons (rule at line {rule.line})"
                )
            if all(_compare(_get(claim, t.prop), t.op, _resolve(t.operand, bound)) for t in cond.tests):
                yield from walk(i + 1, {**bound, cond.ident: claim} if cond.ident else bound)

    return walk(0, {})


def _single_matches(
    rule: Rule, claims: Sequence[Claim], by_type: dict[str, list[Claim]], budget: list[int]
) -> list[dict[str, Claim]]:
    """:func:`_matches` for the common one-condition rule, without the recursion (the same
    bindings in the same order, the same step budget, at most ``MAX_MATCHES + 1`` of them).
    A lone condition cannot refer to another one, so its operands are literals."""
    ident = rule.conditions[0].ident
    lit = rule.literals[0]
    tests = rule.lone_tests
    out: list[dict[str, Claim]] = []
    for claim in by_type.get(lit, ()) if lit is not None else claims:
        budget[0] -= 1
        if budget[0] < 0:
            raise PolicyError(f"evaluation exceeds {MAX_STEPS} claim comparisons (rule at line {rule.line})")
        for t in tests:
            if not _compare(getattr(claim, t.prop), t.op, t.operand):  # type: ignore[arg-type]
                break
        else:
            out.append({ident: claim} if ident else {})
            if len(out) > MAX_MATCHES:
                break
    return out


def _evaluate(policy: Policy, incoming: Sequence[Claim]) -> Decision:
    claims = list(incoming)
    by_type: dict[str, list[Claim]] = {}
    for c in claims:
        by_type.setdefault(c.type, []).append(c)
    decision = Decision(permitted=False, reason="no authorization rule permitted the attestation")
    permitted = denied = False
    budget = [MAX_STEPS]
    for section, rules in (
        ("configurationrules", policy.configuration),
        ("authorizationrules", policy.authorization),
        ("issuancerules", policy.issuance),
    ):
        for rule in rules:
            if len(rule.conditions) == 1:
                matches = _single_matches(rule, claims, by_type, budget)
            else:
                matches = list(itertools.islice(_matches(rule, claims, by_type, budget), MAX_MATCHES + 1))
            if len(matches) > MAX_MATCHES:
                raise PolicyError(
                    f"rule at line {rule.line} matches more than {MAX_MATCHES} claim combinations"
                )
            a = rule.action
            if not matches:
                continue
            if a.name == "permit":
                permitted = True
                continue
            if a.name == "deny":
                denied = True
                decision.reason = f"denied by the rule at line {rule.line}"
                continue
            for bound in matches:
                if a.claim is not None:
                    src = bound[a.claim]
                    typ, value = src.type, src.value
                else:
                    assert a.type is not None and a.value is not None
                    t = _resolve(a.type, bound)
                    if not isinstance(t, str):
                        raise PolicyError(f"rule at line {rule.line}: claim type must be a string")
                    typ, value = t, _resolve(a.value, bound)
                if a.name == "issue" and not (a.claim is None and rule.checked_type) and _reserved(typ):
                    raise PolicyError(f"rule at line {rule.line}: a policy cannot issue the claim {typ!r}")
                made = Claim(typ, value, "AttestationPolicy")
                if a.name == "issueproperty":
                    decision.properties.append(made)
                    continue
                claims.append(made)
                by_type.setdefault(typ, []).append(made)
                if a.name == "issue":
                    decision.issued.append(made)
        if section == "authorizationrules":
            decision.permitted = permitted and not denied
            if not decision.permitted:
                return decision
    decision.reason = ""
    return decision


__all__ = [
    "MAX_MATCHES",
    "VERSIONS",
    "Claim",
    "Decision",
    "Policy",
    "PolicyError",
    "Token",
    "b64url",
    "parse",
    "policy_hash",
    "tokens",
]
