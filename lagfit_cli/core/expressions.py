r"""User-defined Lagrangians from a config string, compiled safely into torch operations.

``system=custom`` reads ``system.lagrangian`` (one expression) and ``system.params`` (a
mapping parameter name -> true value, which also fixes θ's order)::

    lagfit run system=custom system.lagrangian="0.5*m*qd0**2 - 0.5*k*q0**2 - b*q0**4" \
        system.params="{m: 1.0, k: 2.0, b: 0.1}"

Spelling
    - State variables: ``q0, q1, ...`` (coordinates) and ``qd0, qd1, ...`` (velocities),
      numbered from 0 without gaps. ``q`` and ``qd`` are accepted as ``q0`` and ``qd0``
      when the Lagrangian has a single coordinate. The number of degrees of freedom D is
      the highest index used, plus one.
    - Parameters: the names declared in ``system.params`` (identifiers that are neither a
      state variable, a function name nor ``pi``).
    - Numbers (``2``, ``0.5``, ``1e-3``) and the constant ``pi``.
    - Operators ``+ - * / **``, unary ``-`` and ``+``, parentheses.
    - Functions of one argument: ``sin cos tan asin acos atan sinh cosh tanh exp log
      log10 sqrt abs``.

    - The time ``t`` (the system is then time-dependent; ``t`` cannot be a parameter).

A Rayleigh dissipation function (``system.dissipation``) is written the same way over the
same parameters (:func:`compile_dissipation`); L and R are analysed together for their scale
groups (L -> cL, R -> cR is one symmetry), and errors in R name ``dissipation``.

Anything else (attribute access, calls of other names, subscripts, keyword arguments,
lambdas, strings, comparisons, unknown names, ...) raises ``LagfitError`` with one line
naming the offending token. The text is never handed to ``eval``/``exec``/``compile``:
it is parsed by ``ast.parse`` into a syntax tree, every node is checked against the
whitelist above, and the tree is flattened (iteratively, so deep nesting cannot exhaust
the Python stack) into a postfix program of torch operations, run by a small stack
machine. Length (``MAX_LENGTH`` characters) and nesting (``MAX_DEPTH`` levels) are
bounded before anything is built. Sub-expressions made only of numbers are folded once,
in float64 torch arithmetic (no Python big-integer powers).

The compiled Lagrangian follows the broadcasting convention of ``systems``:
``L(q: (..., D), qd: (..., D), theta: (..., P)) -> (...)``, so every solver works on it.

From the tree the compiler also reads two structural facts:
    - ``linear_in_params``: every term has degree ≤ 1 in the parameters,
      L = L₀(q, q̇) + Σⱼ θⱼ φⱼ(q, q̇) (L₀ may be nonzero).
    - ``scale_groups``: the parameter scalings that leave q̈ unchanged. Each node gets
      an exponent vector a (how it scales when θⱼ -> c^{wⱼ} θⱼ: by c^{a·w}); every sum
      of two state-dependent terms requires a_left·w = a_right·w and every function
      argument (other than abs, sqrt) a·w = 0. Terms that depend on no state variable
      and sit in the top-level sum (possibly times a number) only shift L by a constant
      and impose nothing. The
      exact (rational) null space of these constraints is the symmetry space W. When W
      is spanned by disjoint groups of parameters scaling together (the usual case:
      ``0.5*m*qd0**2 - 0.5*k*q0**2`` gives (m, k); the pendulum
      ``0.5*m*l**2*qd0**2 + m*g*l*cos(q0)`` gives (m), (l, g);
      ``0.5*qd0**2 - 0.5*k*q0**2`` gives none, so k is identifiable on its own) those
      groups are the system's scale groups. A weighted symmetry (m scaling with k², as
      in ``m*qd0**2 - k**2*q0**2``, where only m/k² is identifiable) cannot be written
      as groups: every parameter it moves is then reported as not identifiable on its
      own (a one-member group), which under-claims rather than over-claims.
Degeneracies that are not scalings
      (two parameters only ever appearing as a sum) are not detected.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import keyword
import math
import operator
import re
import tokenize
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import Tensor

from lagfit_cli.errors import ArgumentError, LagfitError
from lagfit_cli.core.systems import Coefficients, System, register_system

MAX_LENGTH = 100_000  #: characters (a flat sum of thousands of terms fits)
MAX_DEPTH = 200  #: nesting levels of the syntax tree
MAX_DOF = 100  #: highest coordinate count a custom Lagrangian may use

FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "log": torch.log,
    "log10": torch.log10,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
}
CONSTANTS: dict[str, float] = {"pi": math.pi}

_BINARY: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Pow: ("**", operator.pow),
}
_STATE_NAME = re.compile(r"(q|qd)(0|[1-9][0-9]*)")
_ALIASES = {"q": ("q", 0), "qd": ("qd", 0)}
_KEY = "lagrangian"

# Instructions of the postfix program: (opcode, argument).
_PUSH_Q, _PUSH_QD, _PUSH_PARAM, _PUSH_CONST, _UNARY, _BINARY_OP, _PUSH_T = range(7)
#: the time variable's name in expressions
TIME = "t"
Instruction = tuple[int, Any]


@dataclass(frozen=True)
class CompiledLagrangian:
    """A validated user Lagrangian: call it as ``L(q, qd, theta)``.

    Attributes:
        source: the expression text.
        param_names: θ's entries, in order.
        dof: D, one plus the highest state index used.
        program: the postfix torch program (opcode, argument) the stack machine runs.
        linear_in_params: every term has degree ≤ 1 in θ.
        scale_groups: groups of parameters whose common scaling leaves q̈ unchanged
            (see the module docstring).
    """

    source: str
    param_names: tuple[str, ...]
    dof: int
    program: tuple[Instruction, ...]
    linear_in_params: bool
    scale_groups: tuple[tuple[str, ...], ...]
    #: the expression uses the time ``t`` (then it must be called with ``t=``)
    uses_t: bool = False
    #: the velocities it uses (indices of qd0, qd1, ...), every coordinate index it uses,
    #: the ``q``/``qd`` shorthands it uses, and the parameters it uses
    velocities: frozenset = frozenset()
    coords: frozenset = frozenset()
    aliases: tuple = ()
    used_params: frozenset = frozenset()

    def __call__(self, q: Tensor, qd: Tensor, theta: Tensor, t: Optional[Tensor] = None) -> Tensor:
        """L at every state: q, qd (..., D), theta (..., P), t like q[..., 0] -> (...) (broadcast)."""
        value = self.run(q, qd, theta, t)
        shapes = [q.shape[:-1], qd.shape[:-1], theta.shape[:-1]]
        if t is not None:
            shapes.append(t.shape)
        shape = torch.broadcast_shapes(*shapes)
        if isinstance(value, Tensor) and value.shape == shape:
            return value
        return torch.broadcast_to(torch.as_tensor(value, dtype=theta.dtype, device=theta.device), shape)

    def run(
        self, q: Optional[Tensor], qd: Optional[Tensor], theta: Tensor, t: Optional[Tensor] = None
    ) -> Union[Tensor, float]:
        """The program's value as the stack machine leaves it (a number if constant)."""
        stack: list[Union[Tensor, float]] = []
        for opcode, argument in self.program:
            if opcode == _PUSH_T:
                if t is None:
                    raise ArgumentError("t", "the expression uses the time t, but no times were given")
                stack.append(t)
            elif opcode == _PUSH_Q:
                stack.append(q[..., argument])
            elif opcode == _PUSH_QD:
                stack.append(qd[..., argument])
            elif opcode == _PUSH_PARAM:
                stack.append(theta[..., argument])
            elif opcode == _PUSH_CONST:
                stack.append(argument)
            elif opcode == _UNARY:
                stack.append(argument(stack.pop()))
            else:
                right = stack.pop()
                stack.append(argument(stack.pop(), right))
        (value,) = stack
        return value


Exponents = tuple[Fraction, ...]  # a node's scaling exponent per parameter


@dataclass(frozen=True)
class _Item:
    """Compile-time facts about one finished sub-expression."""

    constant: Optional[float]  # its value when it is made of numbers only
    param_degree: float  # polynomial degree in θ (inf: not a polynomial in θ)
    exponents: Exponents  # it scales by c^(exponents·w) when θⱼ -> c^wⱼ θⱼ
    has_state: bool  # depends on some q or q̇


def _fail(message: str) -> LagfitError:
    return ArgumentError(_KEY, message)


def _snippet(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(source: str, node: ast.AST) -> str:
    """One clause naming a disallowed node, e.g. "attribute access '.__class__'"."""
    snippet = repr(_snippet(source, node))
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}' is not allowed"
    if isinstance(node, ast.Subscript):
        return f"subscript {snippet} is not allowed"
    if isinstance(node, ast.Lambda):
        return f"lambda {snippet} is not allowed"
    if isinstance(node, ast.Compare):
        return f"comparison {snippet} is not allowed"
    if isinstance(node, ast.Constant):
        kind = "string" if isinstance(node.value, (str, bytes)) else "literal"
        return f"{kind} {snippet} is not allowed (only real numbers)"
    if isinstance(node, ast.BinOp):
        symbol = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@"}.get(type(node.op))
        symbol = symbol or type(node.op).__name__
        return f"operator '{symbol}' in {snippet} is not allowed (use + - * / **)"
    if isinstance(node, ast.UnaryOp):
        symbol = {ast.Not: "not", ast.Invert: "~"}.get(type(node.op), type(node.op).__name__)
        return f"operator '{symbol}' in {snippet} is not allowed (only unary - and +)"
    return f"{snippet} ({type(node).__name__}) is not allowed"


def _check_param_names(param_names: tuple[str, ...]) -> None:
    for name in param_names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ArgumentError("params", f"{name!r} is not a valid parameter name")
        if _STATE_NAME.fullmatch(name) or name in _ALIASES:
            raise ArgumentError(
                "params", f"{name!r} is a state variable name and cannot be a parameter"
            )
        if name in FUNCTIONS or name in CONSTANTS:
            raise ArgumentError("params", f"{name!r} is a reserved name (function or constant)")
        if name == TIME:
            raise ArgumentError("params", f"{name!r} is the time variable and cannot be a parameter")


def _parse(source: Any) -> tuple[ast.Expression, str]:
    """The syntax tree of ``source``, and the text its node positions refer to."""
    if not isinstance(source, str):
        raise _fail(f"expected an expression string, got {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise _fail(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
    if not source.strip():
        raise _fail("the expression is empty")
    if "#" in source:
        raise _fail(f"'#' at column {source.index('#') + 1} is not allowed (comments are not part of an expression)")
    text = source.strip()
    try:
        return _quiet_parse(text), text
    except SyntaxError as error:
        where = f" at column {error.offset}" if error.offset else ""
        raise _fail(f"syntax error{where}: {error.msg.split(';')[0]}") from None
    except (RecursionError, MemoryError):
        # Python's parser nests a flat sum a + b + c + ... one level per term: parse a long
        # sum term by term and rejoin it as a balanced tree (same value, depth log₂ terms)
        balanced = _balanced_sum(text)
        if balanced is not None:
            try:
                return _quiet_parse(balanced), balanced
            except (SyntaxError, RecursionError, MemoryError):
                pass
        raise _fail(f"expression is nested too deeply (limit {MAX_DEPTH} levels)") from None
    except ValueError as error:  # e.g. integer literals beyond Python's digit limit
        raise _fail(str(error).split("\n")[0]) from None


def _quiet_parse(text: str) -> ast.Expression:
    # Python's own warnings (e.g. "invalid decimal literal" for `1if 1 else 0`) would print
    # a line of their own: an expression gets one error line, or none
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, mode="eval")


def _balanced_sum(text: str) -> Optional[str]:
    """``t1 - t2 + t3 ...`` (split at the top-level binary + and -) rewritten as a balanced
    sum ``((t1)+(-(t2)))+((t3)+...)``; None when it is not a long sum or cannot be split."""
    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    terms: list[tuple[str, str]] = []
    sign, start, depth, previous = "+", 0, 0, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    for token in tokens:
        if token.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER,
                          tokenize.INDENT, tokenize.DEDENT):
            continue
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif (
            token.type == tokenize.OP and token.string in ("+", "-") and depth == 0
            and previous is not None
            and (previous.type == tokenize.NUMBER or previous.string in ")]}"
                 or (previous.type == tokenize.NAME and not keyword.iskeyword(previous.string)))
        ):
            begin = line_starts[token.start[0] - 1] + token.start[1]
            terms.append((sign, text[start:begin]))
            sign, start = token.string, line_starts[token.end[0] - 1] + token.end[1]
        previous = token
    terms.append((sign, text[start:]))
    if len(terms) < 2 or any(not term.strip() for _, term in terms):
        return None
    parts = [f"({term})" if sign == "+" else f"(-({term}))" for sign, term in terms]
    while len(parts) > 1:
        parts = [f"({a}+{b})" for a, b in zip(parts[::2], parts[1::2])] + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _fold(source: str, node: ast.AST, function: Callable[..., Any], *values: float) -> float:
    """Evaluate a numbers-only sub-expression in float64 torch arithmetic."""
    result = float(function(*(torch.tensor(v, dtype=torch.float64) for v in values)))
    if not math.isfinite(result):
        raise _fail(f"{_snippet(source, node)!r} evaluates to {result} (not a finite number)")
    return result


def compile_lagrangian(
    source: str, param_names: tuple[str, ...], *, allow_unused: bool = False
) -> CompiledLagrangian:
    """Validate ``source`` and build the torch Lagrangian it describes.

    Args:
        source: the expression (see the module docstring for the spelling).
        param_names: the declared parameters, in θ's order.
        allow_unused: parameters may be missing from it (they appear in the dissipation).

    Raises:
        LagfitError: one line naming the offending token.
    """
    param_names = tuple(param_names)
    _check_param_names(param_names)
    tree, text = _parse(source)
    compiled = _Compiler(text, param_names, allow_unused=allow_unused).run(tree.body)
    return dataclasses.replace(compiled, source=source.strip())


_DISSIPATION_KEY = "dissipation"


def compile_dissipation(source: Any, param_names: tuple[str, ...], dof: int) -> CompiledLagrangian:
    """Validate a Rayleigh dissipation function R(q, q̇, t; θ) for a Lagrangian with ``dof``
    coordinates: the same spelling and parser as the Lagrangian; errors name
    ``dissipation``.

    Raises:
        LagfitError: one line: bad syntax or names, a coordinate the Lagrangian does not
            have, no velocity at all (∂R/∂q̇ would vanish: R would do nothing), or ``q``/``qd``
            shorthand where the Lagrangian has several coordinates.
    """
    param_names = tuple(param_names)
    try:
        tree, text = _parse(source)
        compiled = _Compiler(text, param_names, require_all=False, check_coords=False).run(tree.body)
    except ArgumentError as err:
        if err.argument == _KEY:
            raise ArgumentError(_DISSIPATION_KEY, err.detail) from None
        raise
    if compiled.aliases and dof > 1:
        alias = compiled.aliases[0]
        raise ArgumentError(
            _DISSIPATION_KEY, f"{alias!r} is shorthand for {alias}0 in a one-coordinate system; "
            f"the Lagrangian has {dof} coordinates: write {alias}0"
        )
    beyond = sorted(i for i in compiled.coords if i >= dof)
    if beyond:
        raise ArgumentError(
            _DISSIPATION_KEY, f"uses coordinate {beyond[0]} (q{beyond[0]} or qd{beyond[0]}), but the "
            f"Lagrangian has {dof} coordinate{'s' if dof > 1 else ''} (q0..q{dof - 1})"
        )
    if not compiled.velocities:
        raise ArgumentError(
            _DISSIPATION_KEY, "does not depend on any velocity (qd0, qd1, ...): ∂R/∂q̇ would be "
            "zero, so it would exert no force; write R like ½ c qd0**2"
        )
    return dataclasses.replace(compiled, source=str(source).strip(), dof=dof)


def _compile_part(source: str, names: tuple[str, ...]) -> CompiledLagrangian:
    """Compile a piece that lagfit itself assembled from a validated expression (a
    coefficient or the Lagrangian in coefficients): names need not all appear."""
    return _Compiler(source, names, require_all=False).run(_parse(source)[0].body)


def _signed_terms(node: ast.AST, sign: int = 1):
    """The terms of a sum, with their signs: ``a - (b + c)`` -> (+1, a), (-1, b), (-1, c)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        yield from _signed_terms(node.left, sign)
        yield from _signed_terms(node.right, sign if isinstance(node.op, ast.Add) else -sign)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        yield from _signed_terms(node.operand, -sign if isinstance(node.op, ast.USub) else sign)
    else:
        yield sign, node


def _factors(node: ast.AST, power: int = 1):
    """The factors of a product, with ±1 powers: ``a*b/c`` -> (1, a), (1, b), (−1, c)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        yield from _factors(node.left, power)
        yield from _factors(node.right, power if isinstance(node.op, ast.Mult) else -power)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield 1, ast.Constant(-1.0)
        yield from _factors(node.operand, power)
    else:
        yield power, node


def _product(parts: list[str]) -> str:
    return "*".join(parts) if parts else "1"


def _as_tensor(value: Union[Tensor, float], like: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value
    return torch.full(like.shape[:-1], float(value), dtype=like.dtype, device=like.device)


def separate(source: str, param_names: tuple[str, ...]) -> Optional[Coefficients]:
    """L as Σₖ cₖ(θ) φₖ(q, q̇) + φ₀(q, q̇), read off a validated expression's tree, or None.

    Every term of the top-level sum must be a product (and quotient) of factors each of which
    depends on parameters only, on states only, or on neither; terms with the same state
    part share one coefficient, terms with no state are dropped (a constant in L moves
    nothing). ``k*(q + b)`` is not separable in this sense (its factor mixes both).
    """
    tree = _parse(source)[0].body
    params = set(param_names)
    coefficient_parts: dict[str, list[str]] = {}
    offset: list[str] = []
    for sign, term in _signed_terms(tree):
        param_side: list[str] = [] if sign > 0 else ["(-1)"]
        state_side: list[str] = []
        for power, factor in _factors(term):
            names = {n.id for n in ast.walk(factor) if isinstance(n, ast.Name)} - {"pi"}
            names -= set(FUNCTIONS)
            text = f"({ast.unparse(factor)})" if power > 0 else f"(1/({ast.unparse(factor)}))"
            uses_params, uses_state = bool(names & params), bool(names - params)
            if uses_params and uses_state:
                return None
            (state_side if uses_state else param_side).append(text)
        if not state_side:
            continue  # a constant term
        state = _product(sorted(state_side))
        if not any(isinstance(n, ast.Name) and n.id in params for n in ast.walk(term)):
            offset.append(f"{_product(param_side)}*{state}")
        else:
            coefficient_parts.setdefault(state, []).append(_product(param_side))
    if not coefficient_parts:
        return None
    states = list(coefficient_parts)
    names = tuple(" + ".join(parts) for parts in coefficient_parts.values())
    coefficient_programs = [_compile_part(name, param_names) for name in names]
    slots = tuple(f"c{k}" for k in range(len(states)))
    in_coefficients = " + ".join(
        [f"{slot}*{state}" for slot, state in zip(slots, states)] + offset
    )
    lagrangian = _compile_part(in_coefficients, slots)

    def of_params(theta: Tensor) -> Tensor:
        values = [c.run(None, None, theta) for c in coefficient_programs]  # no state in them
        return torch.stack(torch.broadcast_tensors(*(_as_tensor(v, theta) for v in values)), dim=-1)

    return Coefficients(of_params, lagrangian, names)


class _Compiler:
    """One pass over a parsed expression: validate, fold, emit postfix, analyse."""

    def __init__(
        self, source: str, param_names: tuple[str, ...], require_all: bool = True,
        allow_unused: bool = False, check_coords: bool = True,
    ) -> None:
        self.source = source
        self.require_all = require_all
        self.allow_unused = allow_unused
        self.check_coords = check_coords
        self.param_names = param_names
        self.param_index = {name: i for i, name in enumerate(param_names)}
        self.program: list[Instruction] = []
        self.items: list[_Item] = []
        self.constraints: set[Exponents] = set()  # rows r with r·w = 0 for a symmetry w
        self.used_coords: set[int] = set()
        self.used_velocities: set[int] = set()
        self.uses_t = False
        self.used_params: set[str] = set()
        self.aliases_used: list[str] = []

    def run(self, root: ast.AST) -> CompiledLagrangian:
        # Iterative post-order walk over (node, depth, in_top_sum, children_done); children
        # are pushed in reverse so that errors name the leftmost offending token first.
        # in_top_sum: the node is a term of L's top-level sum (only + - and unary - above).
        todo: list[tuple[ast.AST, int, bool, bool]] = [(root, 1, True, False)]
        while todo:
            node, depth, in_top_sum, children_done = todo.pop()
            if depth > MAX_DEPTH:
                raise _fail(f"expression is nested too deeply (limit {MAX_DEPTH} levels)")
            if children_done:
                self._emit(node, in_top_sum)
                continue
            children = _validated_children(self.source, node, self.param_index)
            todo.append((node, depth, in_top_sum, True))
            todo.extend(
                (child, depth + _depth_step(node, child), in_top_sum and _keeps_top_sum(node, child), False)
                for child in reversed(children)
            )

        (result,) = self.items
        if not self.check_coords:
            dof = max(self.used_coords) + 1 if self.used_coords else 0
        elif self.used_coords or self.require_all:
            dof = _infer_dof(self.used_coords, self.aliases_used)
        else:
            dof = 0
        unused = [name for name in self.param_names if name not in self.used_params]
        if unused and self.require_all and not self.allow_unused:
            raise ArgumentError(
                "params", f"parameter {unused[0]!r} does not appear in the Lagrangian "
                f"(q̈ would not depend on it)"
            )
        if not self.param_names and self.require_all:
            raise ArgumentError("params", "a custom Lagrangian needs at least one parameter")
        return CompiledLagrangian(
            source=self.source,
            param_names=self.param_names,
            dof=dof,
            program=tuple(self.program),
            linear_in_params=result.param_degree <= 1,
            scale_groups=_scale_groups(self.constraints, self.param_names),
            uses_t=self.uses_t,
            velocities=frozenset(self.used_velocities),
            coords=frozenset(self.used_coords),
            aliases=tuple(self.aliases_used),
            used_params=frozenset(self.used_params),
        )

    # ------------------------------------------------------------------ emission

    def _zero(self) -> Exponents:
        return (Fraction(0),) * len(self.param_names)

    def _push_constant(self, value: float, n_replaced: int) -> None:
        """Replace the last ``n_replaced`` (constant) instructions by one folded constant."""
        del self.program[len(self.program) - n_replaced :]
        self.program.append((_PUSH_CONST, value))
        self.items.append(_Item(value, 0.0, self._zero(), False))

    def _emit(self, node: ast.AST, in_top_sum: bool) -> None:
        if isinstance(node, ast.Constant):
            self._push_constant(float(node.value), 0)
        elif isinstance(node, ast.Name):
            self._emit_name(node.id)
        elif isinstance(node, ast.UnaryOp):
            operand = self.items.pop()
            if isinstance(node.op, ast.UAdd):
                self.items.append(operand)
            elif operand.constant is not None:
                self._push_constant(-operand.constant, 1)
            else:
                self.program.append((_UNARY, operator.neg))
                self.items.append(operand)
        elif isinstance(node, ast.Call):
            name = node.func.id  # validated: a Name in FUNCTIONS
            argument = self.items.pop()
            if argument.constant is not None:
                value = _fold(self.source, node, FUNCTIONS[name], argument.constant)
                self._push_constant(value, 1)
            else:
                self.program.append((_UNARY, FUNCTIONS[name]))
                self.items.append(self._call_item(name, argument))
        else:  # ast.BinOp, validated
            right, left = self.items.pop(), self.items.pop()
            symbol, function = _BINARY[type(node.op)]
            if left.constant is not None and right.constant is not None:
                value = _fold(self.source, node, function, left.constant, right.constant)
                self._push_constant(value, 2)
            else:
                if symbol == "/" and right.constant == 0:
                    raise _fail(f"division by zero in {_snippet(self.source, node)!r}")
                self.program.append((_BINARY_OP, function))
                self.items.append(self._binary_item(symbol, left, right, in_top_sum))

    def _emit_name(self, name: str) -> None:
        if name in self.param_index:
            index = self.param_index[name]
            self.used_params.add(name)
            self.program.append((_PUSH_PARAM, index))
            exponents = tuple(Fraction(int(j == index)) for j in range(len(self.param_names)))
            self.items.append(_Item(None, 1.0, exponents, False))
        elif name in CONSTANTS:
            self._push_constant(CONSTANTS[name], 0)
        elif name == TIME:
            self.uses_t = True
            self.program.append((_PUSH_T, None))
            self.items.append(_Item(None, 0.0, self._zero(), True))
        else:
            kind, index = _ALIASES.get(name) or _split_state(name)
            if index >= MAX_DOF:
                raise _fail(f"state variable {name!r}: at most {MAX_DOF} coordinates are supported")
            if name in _ALIASES:
                self.aliases_used.append(name)
            self.used_coords.add(index)
            if kind == "qd":
                self.used_velocities.add(index)
            self.program.append((_PUSH_Q if kind == "q" else _PUSH_QD, index))
            self.items.append(_Item(None, 0.0, self._zero(), True))

    def _require_invariant(self, exponents: Exponents) -> None:
        if any(exponents):
            self.constraints.add(exponents)

    def _call_item(self, name: str, argument: _Item) -> _Item:
        """f(x) for a non-constant x: abs and sqrt keep a scaling, others need x invariant."""
        degree = 0.0 if argument.param_degree == 0 else math.inf
        if name == "abs":
            exponents = argument.exponents
        elif name == "sqrt":
            exponents = tuple(a / 2 for a in argument.exponents)
        else:
            self._require_invariant(argument.exponents)
            exponents = self._zero()
        return _Item(None, degree, exponents, argument.has_state)

    def _binary_item(self, symbol: str, left: _Item, right: _Item, in_top_sum: bool) -> _Item:
        """``left symbol right``, at least one side not a plain number."""
        has_state = left.has_state or right.has_state
        if symbol in "+-":
            degree = max(left.param_degree, right.param_degree)
            if in_top_sum and not (left.has_state and right.has_state):
                # A state-free term of L's top-level sum only shifts L by a constant.
                exponents = left.exponents if left.has_state else right.exponents
            else:
                self._require_invariant(
                    tuple(a - b for a, b in zip(left.exponents, right.exponents))
                )
                exponents = left.exponents
            return _Item(None, degree, exponents, has_state)
        if symbol in "*/":
            sign = 1 if symbol == "*" else -1
            exponents = tuple(a + sign * b for a, b in zip(left.exponents, right.exponents))
            if symbol == "*":
                degree = left.param_degree + right.param_degree
            else:
                degree = left.param_degree if right.param_degree == 0 else math.inf
            return _Item(None, degree, exponents, has_state)
        # symbol == "**"
        if right.constant is not None:
            power = Fraction(right.constant).limit_denominator(1000)
            whole = right.constant >= 0 and float(right.constant).is_integer()
            if left.param_degree == 0:
                degree = 0.0
            else:
                degree = left.param_degree * right.constant if whole else math.inf
            return _Item(None, degree, tuple(a * power for a in left.exponents), has_state)
        self._require_invariant(left.exponents)
        self._require_invariant(right.exponents)
        degree = 0.0 if left.param_degree == 0 and right.param_degree == 0 else math.inf
        return _Item(None, degree, self._zero(), has_state)


_CHAINS = ((ast.Add, ast.Sub), (ast.Mult, ast.Div))


def _depth_step(parent: ast.AST, child: ast.AST) -> int:
    """Nesting a child adds to the depth: 0 along a flat chain a + b - c + ... or a * b / c
    (the left operand of the same kind of operator), so a sum of thousands of terms is flat;
    1 otherwise."""
    if (
        isinstance(parent, ast.BinOp)
        and isinstance(child, ast.BinOp)
        and child is parent.left
        and any(isinstance(parent.op, ops) and isinstance(child.op, ops) for ops in _CHAINS)
    ):
        return 0
    return 1


def _keeps_top_sum(parent: ast.AST, child: ast.AST) -> bool:
    """Whether the terms of ``child`` are still terms of the sum that ``parent`` is in:
    through + - and unary signs, and through a product with (or division by) a literal."""
    if isinstance(parent, ast.UnaryOp):
        return True
    if not isinstance(parent, ast.BinOp):
        return False
    if isinstance(parent.op, (ast.Add, ast.Sub)):
        return True
    other = parent.right if child is parent.left else parent.left
    while isinstance(other, ast.UnaryOp):
        other = other.operand
    if isinstance(parent.op, ast.Mult) or (isinstance(parent.op, ast.Div) and child is parent.left):
        return isinstance(other, ast.Constant)
    return False


def _null_space(rows: set[Exponents], size: int) -> list[list[Fraction]]:
    """An exact basis of {w : r·w = 0 for every row r} (Gauss–Jordan over the rationals)."""
    matrix = [list(row) for row in sorted(rows)]
    pivot_columns: list[int] = []
    for column in range(size):
        rank = len(pivot_columns)
        pivot = next((i for i in range(rank, len(matrix)) if matrix[i][column] != 0), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        lead = matrix[rank][column]
        matrix[rank] = [value / lead for value in matrix[rank]]
        for i, row in enumerate(matrix):
            if i != rank and row[column] != 0:
                factor = row[column]
                matrix[i] = [a - factor * b for a, b in zip(row, matrix[rank])]
        pivot_columns.append(column)
    basis = []
    for free in (c for c in range(size) if c not in pivot_columns):
        vector = [Fraction(0)] * size
        vector[free] = Fraction(1)
        for row, pivot_column in enumerate(pivot_columns):
            vector[pivot_column] = -matrix[row][free]
        basis.append(vector)
    return basis


def _scale_groups(
    constraints: set[Exponents], param_names: tuple[str, ...]
) -> tuple[tuple[str, ...], ...]:
    """Disjoint parameter groups spanning the scaling symmetries {w : C w = 0}.

    When no such groups span them (a weighted symmetry), every parameter the symmetries
    move becomes a one-member group, i.e. is reported as not identifiable on its own.
    """
    basis = _null_space(constraints, len(param_names))
    groups: dict[tuple[Fraction, ...], list[str]] = {}
    for j, name in enumerate(param_names):
        row = tuple(vector[j] for vector in basis)
        if any(row):
            groups.setdefault(row, []).append(name)
    result = tuple(tuple(group) for group in groups.values())
    representable = len(result) == len(basis) and not any(
        sum(r for r, name in zip(row, param_names) if name in group)
        for group in result
        for row in constraints
    )
    if representable:
        return result
    # A weighted symmetry: claim nothing for the parameters it moves.
    return tuple((name,) for group in result for name in group)


def _validated_children(source: str, node: ast.AST, param_index: Mapping[str, int]) -> list:
    """The sub-expressions of an allowed node; raise for anything not on the whitelist."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _fail(_describe(source, node))
        try:
            finite = math.isfinite(float(node.value))
        except OverflowError:
            finite = False
        if not finite:
            raise _fail(f"number {_snippet(source, node)!r} is too large")
        return []
    if isinstance(node, ast.Name):
        if not (
            node.id in param_index
            or node.id in CONSTANTS
            or node.id in _ALIASES
            or node.id == TIME
            or _STATE_NAME.fullmatch(node.id)
        ):
            if node.id in FUNCTIONS:
                raise _fail(f"function {node.id!r} must be called, e.g. {node.id}(q0)")
            raise _fail(
                f"unknown name {node.id!r} (state variables: q0, q1, ..., qd0, qd1, ..., "
                f"time t; parameters: {', '.join(param_index) or 'none'})"
            )
        return []
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise _fail(_describe(source, node))
        return [node.operand]
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise _fail(_describe(source, node))
        return [node.left, node.right]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _fail(_describe(source, node.func))
        name = node.func.id
        if name not in FUNCTIONS:
            raise _fail(
                f"unknown function {name!r} (allowed functions: {', '.join(FUNCTIONS)})"
            )
        if node.keywords:
            keyword_name = node.keywords[0].arg or "**"
            raise _fail(f"keyword argument '{keyword_name}=' in call of {name!r} is not allowed")
        if len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise _fail(f"function {name!r} takes exactly one argument: {_snippet(source, node)!r}")
        return [node.args[0]]
    raise _fail(_describe(source, node))


def _split_state(name: str) -> tuple[str, int]:
    match = _STATE_NAME.fullmatch(name)
    assert match is not None  # validated
    return match.group(1), int(match.group(2))


def _infer_dof(used_coords: set[int], aliases_used: list[str]) -> int:
    if not used_coords:
        raise _fail("no state variable (q0, qd0, ...) appears in the expression")
    dof = max(used_coords) + 1
    missing = sorted(set(range(dof)) - used_coords)
    if missing:
        raise _fail(
            f"coordinate {missing[0]} is never used (no q{missing[0]} or qd{missing[0]}); "
            f"number the coordinates q0, q1, ... without gaps"
        )
    if aliases_used and dof > 1:
        alias = aliases_used[0]
        raise _fail(
            f"{alias!r} is shorthand for {alias}0 in a one-coordinate Lagrangian; "
            f"with {dof} coordinates write {alias}0"
        )
    return dof


@register_system("custom")
def custom_system(spec: Mapping[str, Any]) -> System:
    """``system=custom``: the Lagrangian in ``spec["lagrangian"]`` over ``spec["params"]``,
    with an optional Rayleigh function ``spec["dissipation"]`` over the same parameters.

    Either may use the time ``t`` (the system is then time-dependent). L and R scale
    together: the scale groups are read off the pair (as if R's terms were L's), so a
    parameter of R shares L's scale group when L -> cL, R -> cR is the only freedom.
    """
    params = spec.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ArgumentError(
            "params", "a custom Lagrangian needs a mapping of parameter names to true "
            "values, e.g. {m: 1.0, k: 2.0}"
        )
    source = spec.get("lagrangian")
    if source is None:
        raise _fail(
            "system=custom needs an expression, e.g. "
            '"0.5*m*qd0**2 - 0.5*k*q0**2"'
        )
    friction_source = spec.get("dissipation")
    if friction_source is not None and not (isinstance(friction_source, str) and friction_source.strip()):
        raise ArgumentError(_DISSIPATION_KEY, "must be a non-empty expression, e.g. \"0.5*c*qd0**2\"")
    names = tuple(params)
    compiled = compile_lagrangian(source, names, allow_unused=friction_source is not None)
    if friction_source is None:
        return System(
            name="custom",
            lagrangian=compiled,
            param_names=compiled.param_names,
            dof=compiled.dof,
            scale_groups=compiled.scale_groups,
            linear_in_params=compiled.linear_in_params,
            coefficients=None if compiled.linear_in_params else separate(source, compiled.param_names),
            time_dependent=compiled.uses_t,
        )
    friction = compile_dissipation(friction_source, names, compiled.dof)
    unused = [n for n in names if n not in compiled.used_params | friction.used_params]
    if unused:
        raise ArgumentError(
            "params", f"parameter {unused[0]!r} appears in neither the Lagrangian nor the "
            "dissipation (q̈ would not depend on it)"
        )
    # L and R scale together: analyse the pair as one sum of terms
    pair_text = f"({compiled.source})+({friction.source})"
    pair = _Compiler(pair_text, names, require_all=False, check_coords=False).run(_parse(pair_text)[0].body)
    linear = compiled.linear_in_params and friction.linear_in_params
    return System(
        name="custom",
        lagrangian=compiled,
        param_names=compiled.param_names,
        dof=compiled.dof,
        scale_groups=pair.scale_groups,
        linear_in_params=linear,
        coefficients=None if linear else _separate_pair(compiled.source, friction.source, names),
        dissipation=friction,
        time_dependent=compiled.uses_t or friction.uses_t,
    )


def _separate_pair(lagrangian: str, dissipation: str, names: tuple[str, ...]) -> Optional[Coefficients]:
    """L and R both as Σₖ cₖ(θ) φₖ, with one coefficient vector c = (c_L, c_R); None when
    either does not separate."""
    in_l, in_r = separate(lagrangian, names), separate(dissipation, names)
    if in_l is None or in_r is None:
        return None
    n_l = len(in_l.names)

    def of_params(theta: Tensor) -> Tensor:
        return torch.cat((in_l.of_params(theta), in_r.of_params(theta)), dim=-1)

    def l_of_c(q: Tensor, qd: Tensor, c: Tensor, t: Optional[Tensor] = None) -> Tensor:
        return in_l.lagrangian(q, qd, c[..., :n_l], t)

    def r_of_c(q: Tensor, qd: Tensor, c: Tensor, t: Optional[Tensor] = None) -> Tensor:
        return in_r.lagrangian(q, qd, c[..., n_l:], t)

    return Coefficients(of_params, l_of_c, in_l.names + in_r.names, dissipation=r_of_c)
