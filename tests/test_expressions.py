"""User-defined Lagrangians: the safe expression compiler behind system=custom."""

from __future__ import annotations

import ast
import builtins
import os
import time

import pytest
import torch

from lagfit_cli import SOLVERS, LagfitError, build_system
from lagfit_cli.core.expressions import MAX_DEPTH, MAX_LENGTH, compile_lagrangian
from lagfit_cli.core.systems import SYSTEMS
from conftest import uniform_states as states

DTYPE = torch.float64


def custom(lagrangian: str, params: dict) -> object:
    return build_system({"name": "custom", "params": params, "lagrangian": lagrangian})


# --------------------------------------------------------------- same motion as built-ins

BUILT_IN_TWINS = [
    ("harmonic", "0.5*m*qd0**2 - 0.5*k*q0**2", {"m": 2.0, "k": 4.0}),
    (
        "anharmonic",
        "0.5*m*qd**2 - 0.5*k*q**2 - alpha*q**2*qd**2",
        {"m": 2.0, "k": 4.0, "alpha": 0.3},
    ),
    ("duffing", "0.5*m*qd0**2 - 0.5*k*q0**2 - 0.25*beta*q0**4", {"m": 1.0, "k": 2.0, "beta": 0.5}),
    ("pendulum", "0.5*m*l**2*qd**2 + m*g*l*cos(q)", {"m": 1.5, "l": 2.0, "g": 9.81}),
    (
        "double_pendulum",
        "0.5*(m1 + m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0 - q1)"
        " + (m1 + m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)",
        {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81},
    ),
    (
        "coupled_oscillators",
        "0.5*m1*qd0**2 + 0.5*m2*qd1**2 - 0.5*k1*q0**2 - 0.5*k2*q1**2 - 0.5*kc*(q1 - q0)**2",
        {"m1": 1.0, "m2": 2.0, "k1": 3.0, "k2": 1.5, "kc": 0.5},
    ),
]


@pytest.mark.parametrize("solver_name", sorted(set(SOLVERS) - {"closed_form"}))
@pytest.mark.parametrize(
    "built_in, lagrangian, params", BUILT_IN_TWINS, ids=[t[0] for t in BUILT_IN_TWINS]
)
def test_custom_expression_reproduces_the_built_in(built_in, lagrangian, params, solver_name):
    system = custom(lagrangian, params)
    reference = SYSTEMS[built_in]({})
    assert system.dof == reference.dof
    assert system.param_names == reference.param_names
    n_points = 3 if solver_name == "loop" else 200
    q, qd = states(n_points, system.dof, seed=1)
    true = torch.tensor(list(params.values()), dtype=DTYPE)
    theta = torch.stack((true, true * torch.linspace(0.6, 1.4, len(true), dtype=DTYPE)))
    if solver_name == "linear" and not system.linear_in_params:
        with pytest.raises(LagfitError, match="nonlinear in its parameters"):
            SOLVERS[solver_name](system, q, qd, theta)
        return

    qdd = SOLVERS[solver_name](system, q, qd, theta)
    expected = reference.closed_form(q, qd, theta[:, None, :])
    torch.testing.assert_close(qdd, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))
    # The structural analysis agrees with the hand-written built-in's.
    assert system.scale_groups == reference.scale_groups
    assert system.linear_in_params == reference.linear_in_params


def test_broadcasting_convention():
    lagrangian = compile_lagrangian("0.5*m*qd0**2 + 0.5*m*qd1**2 - k*q0*q1", ("m", "k"))
    q, qd = states(7, 2)
    theta = torch.rand(3, 1, 2, dtype=DTYPE)
    assert lagrangian(q, qd, theta).shape == (3, 7)
    assert lagrangian(q[0], qd[0], theta[0, 0]).shape == ()
    single = lagrangian(q[4], qd[4], theta[1, 0])
    torch.testing.assert_close(single, lagrangian(q, qd, theta)[1, 4])


def test_float32_stays_float32():
    system = custom("0.5*m*qd0**2 - 0.5*k*q0**2 + 2.5*m*sin(q0)", {"m": 1.0, "k": 2.0})
    q, qd = (t.float() for t in states(10, 1))
    qdd = SOLVERS["batched"](system, q, qd, torch.tensor([[1.0, 2.0]]))
    assert qdd.dtype == torch.float32


def test_numbers_only_parts_are_folded():
    lagrangian = compile_lagrangian("(1/2)*m*qd0**2 - 2**-1*k*cos(pi/3)*2*q0**2", ("m", "k"))
    constants = [arg for op, arg in lagrangian.program if isinstance(arg, float)]
    assert constants == pytest.approx([0.5, 2.0, 0.5, 0.5, 2.0, 2.0], rel=1e-15)
    assert all(arg is not torch.cos for op, arg in lagrangian.program)


@pytest.mark.parametrize(
    "lagrangian, params, dof",
    [
        ("0.5*m*qd0**2", ("m",), 1),
        ("0.5*m*(qd0**2 + qd1**2 + qd2**2) - k*q2", ("m", "k"), 3),
        ("m*(qd0*qd1 + qd1**2) - k*q0**2", ("m", "k"), 2),
    ],
)
def test_dof_is_one_plus_the_highest_state_index(lagrangian, params, dof):
    assert compile_lagrangian(lagrangian, params).dof == dof


@pytest.mark.parametrize(
    "lagrangian, params, linear, groups",
    [
        ("0.5*m*qd0**2 - 0.5*k*q0**2 - b*q0**4", "m k b", True, [("m", "k", "b")]),
        ("0.5*qd0**2 - 0.5*k*q0**2", "k", True, []),  # k is fixed absolutely
        ("0.5*m*l**2*qd0**2 + m*g*l*cos(q0)", "m l g", False, [("m",), ("l", "g")]),
        ("0.5*m*qd**2 - m*g/l*(1 - cos(q))", "m g l", False, [("m",), ("g", "l")]),
        ("m*qd0**2*(1 + a*q0**2) - k*q0**2", "m a k", False, [("m", "k")]),  # a absolute
        ("0.5*(m*qd0**2 - k*q0**2 + 3) + m*k", "m k", False, [("m", "k")]),  # constants
        ("sqrt(m)*qd0**2 - sqrt(k)*q0**2", "m k", False, [("m", "k")]),
        ("m*qd0**2 - k**2*q0**2", "m k", False, [("m",), ("k",)]),  # weighted: under-claim
        ("exp(m)*qd0**2 - k*q0**2", "m k", False, []),
    ],
)
def test_structure_read_from_the_tree(lagrangian, params, linear, groups):
    compiled = compile_lagrangian(lagrangian, tuple(params.split()))
    assert compiled.linear_in_params is linear
    assert sorted(compiled.scale_groups) == sorted(groups)


def test_custom_system_reports_ratios_from_its_scale_groups():
    system = custom("0.5*qd0**2 - 0.5*k*q0**2 - b*q0**4", {"k": 2.0, "b": 0.1})
    assert [(r.name, r.status) for r in system.parameter_ratios()] == [
        ("k", "absolute"),
        ("b", "absolute"),
    ]


# --------------------------------------------------------------- rejections, one line each

REJECTED = [
    ("", "the expression is empty"),
    ("   \n ", "the expression is empty"),
    ("0.5*m*qd0**2 - k*x**2", "unknown name 'x'"),
    ("0.5*m*qd0**2 - k*q0**2 + sin", "function 'sin' must be called"),
    ("m*qd0**2 + open(q0)", "unknown function 'open'"),
    ("m*qd0**2 + max(q0)", "unknown function 'max'"),
    ("m*qd0.real**2", "attribute access '.real'"),
    ("m*q[0]*qd0", "subscript 'q[0]'"),
    ("m*qd0**2 + (lambda: q0)", "lambda"),
    ("m*qd0**2 + 'q0'", "string"),
    ("m*qd0**2 * (q0 < 1)", "comparison 'q0 < 1'"),
    ("m*sin(x=qd0)", "keyword argument 'x='"),
    ("m*sin(q0, qd0)", "takes exactly one argument"),
    ("m*sin(*qd0)", "takes exactly one argument"),
    ("m*qd0**2 // 2", "operator '//'"),
    ("m*qd0**2 % 2", "operator '%'"),
    ("m*qd0 if q0 else m", "IfExp"),
    ("m*qd0 and q0", "BoolOp"),
    ("not m*qd0", "operator 'not' in 'not m*qd0'"),
    ("~q0*m", "operator '~'"),
    ("m*[qd0][0]", "subscript"),
    ("1j*m*qd0", "literal '1j'"),
    ("True*m*qd0", "literal 'True'"),
    ("m*qd0**2 +", "syntax error"),
    ("m*qd0**2 )", "syntax error"),
    ("m*qd0**2; q0", "syntax error"),
    ("m*qd0**2 + 1/0*q0", "'1/0' evaluates to inf"),
    ("m*qd0**2 + 2**2**100000*q0", "evaluates to inf"),
    ("m*qd0**2 + 1" + "0" * 400 + ".0*q0", "too large"),
    ("m*qd0**2 + 1e400*q0", "number '1e400' is too large"),
    ("m*qd0**2 + 1" + "0" * 400 + "*q0", "too large"),
    ("m*qd1**2", "coordinate 0 is never used"),
    ("m*(qd0**2 + qd2**2)", "coordinate 1 is never used"),
    ("m*(qd**2 + qd1**2)", "'qd' is shorthand for qd0"),
    ("m*k", "no state variable"),
    ("m*qd123**2", "at most 100 coordinates"),
    ("m*qd01**2", "unknown name 'qd01'"),
]


@pytest.mark.parametrize("lagrangian, message", REJECTED)
def test_rejected_with_one_line_naming_the_token(lagrangian, message):
    with pytest.raises(LagfitError) as error:
        compile_lagrangian(lagrangian, ("m", "k"))
    text = str(error.value)
    assert message in text
    assert "\n" not in text and text.startswith(("lagrangian: ", "params: "))


@pytest.mark.parametrize(
    "params, message",
    [
        (("m", "q0"), "'q0' is a state variable name"),
        (("m", "qd"), "'qd' is a state variable name"),
        (("m", "sin"), "'sin' is a reserved name"),
        (("m", "pi"), "'pi' is a reserved name"),
        (("m", "1k"), "'1k' is not a valid parameter name"),
        (("m", "lambda"), "'lambda' is not a valid parameter name"),
        (("m", "k"), "parameter 'k' does not appear"),
        ((), "at least one parameter"),
    ],
)
def test_bad_parameter_declarations(params, message):
    lagrangian = "0.5*qd0**2 + m*q0" if params else "0.5*qd0**2"
    with pytest.raises(LagfitError, match=message):
        compile_lagrangian(lagrangian, params)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "custom", "params": {"m": 1.0}}, "lagrangian: system=custom needs"),
        ({"name": "custom", "params": {"m": 1.0}, "lagrangian": 3}, "expected an expression"),
        ({"name": "custom", "params": None, "lagrangian": "m*qd0**2"}, "params:"),
        ({"name": "custom", "params": [1.0], "lagrangian": "m*qd0**2"}, "params:"),
    ],
)
def test_custom_system_config_errors(spec, message):
    with pytest.raises(LagfitError, match=message):
        build_system(spec)


# --------------------------------------------------------------- hostile input

HOSTILE = [
    "__import__('os').system('x')",
    "q0.__class__",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "open('f')",
    "eval('1')",
    "exec('import os')",
    "getattr(q0, 'x')",
    "(lambda: __import__('os'))()",
    "[x for x in ().__class__.__mro__]",
    "q0 if __import__('os').system('x') else q0",
    "'a' * 10**9",
    "9**9**9**9 * q0",
    "q0" + "+q0" * 333_333,  # 1e6 characters
    "(" * 5000 + "q0" + ")" * 5000,
    "(" * 1000 + "q0" + ")" * 1000,
    "-" * 3000 + "q0",
    "sin(" * 900 + "q0" + ")" * 900,
    "+".join(["m*qd0"] * 1600) + "+__import__('os')",  # a long flat sum is fine (issue 14); the name is not
    "**".join(["q0"] * 2000),
    "m*" * 3000 + "q0",
]


def compile_with_nothing_executed(lagrangian: str) -> tuple[Exception, list[str]]:
    """Compile with __import__, open, eval, exec and os.system replaced by recorders, and
    compile() allowed only to parse (ast.PyCF_ONLY_AST: a tree, never a code object).
    Returns the exception raised and the forbidden calls made (restored before returning,
    so that pytest itself can import and report freely)."""
    # Warm up torch's own lazy imports (number folding creates tensors) before guarding.
    compile_lagrangian("sqrt(2)**0.5*m*q0", ("m",))
    calls: list[str] = []
    real_compile = builtins.compile

    def recorder(name, real):
        def record(*args, **kwargs):
            calls.append(f"{name}{args[:1]!r}")
            raise RuntimeError(f"{name} is forbidden here")

        return record

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            calls.append("compile() to a code object")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    saved = {name: getattr(builtins, name) for name in ("__import__", "open", "eval", "exec")}
    saved_system = os.system
    try:
        for name, real in saved.items():
            setattr(builtins, name, recorder(name, real))
        os.system = recorder("os.system", saved_system)
        builtins.compile = parse_only
        try:
            compile_lagrangian(lagrangian, ("m",))
        except Exception as error:  # noqa: BLE001 - inspected below
            raised = error
        else:
            raised = None
    finally:
        for name, real in saved.items():
            setattr(builtins, name, real)
        os.system = saved_system
        builtins.compile = real_compile
    return raised, calls


@pytest.mark.parametrize("lagrangian", HOSTILE, ids=lambda s: s[:40])
def test_hostile_input_is_rejected_without_executing_anything(lagrangian):
    # CPU seconds, not wall time: a huge expression must be refused without real work, and a
    # busy machine must not fail the test
    start = time.process_time()
    raised, forbidden_calls = compile_with_nothing_executed(lagrangian)
    assert time.process_time() - start < 2.0
    assert forbidden_calls == []
    assert isinstance(raised, LagfitError), repr(raised)
    text = str(raised)
    assert text.startswith("lagrangian: ") and "\n" not in text and len(text) < 300


def test_the_guard_notices_execution(monkeypatch):
    def leaky_compiler(lagrangian, params):
        return __import__("os")

    monkeypatch.setitem(globals(), "compile_lagrangian", leaky_compiler)
    raised, calls = compile_with_nothing_executed("q0")
    assert calls == ["__import__('os',)"] and isinstance(raised, RuntimeError)


def test_limits_are_named_in_the_message():
    with pytest.raises(LagfitError, match=f"limit is {MAX_LENGTH}"):
        compile_lagrangian("q0" + "+q0" * 333_333, ("m",))
    with pytest.raises(LagfitError, match=f"limit {MAX_DEPTH} levels"):
        compile_lagrangian("m*qd0**2+" + "-" * (MAX_DEPTH + 10) + "q0", ("m",))
    # A flat sum is not nesting (issue 14): thousands of terms are legitimate.
    long_sum = "m*qd0**2" + "+q0" * (MAX_DEPTH * 10)
    assert compile_lagrangian(long_sum, ("m",)).dof == 1


def test_the_custom_yaml_builds_through_omegaconf():
    """conf/system/custom.yaml with the documented example, as hydra would hand it over."""
    from pathlib import Path

    from omegaconf import OmegaConf

    spec = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "system" / "custom.yaml").system
    assert spec.params is None and spec.lagrangian is None  # the user gives both
    spec.params = {"m": 1.0, "k": 2.0, "b": 0.1}
    spec.lagrangian = "0.5*m*qd0**2 - 0.5*k*q0**2 - b*q0**4"
    system = build_system(spec)
    assert system.param_names == tuple(spec.params) and system.dof == 1
    q, qd = states(50, 1)
    m, k, b = (float(v) for v in spec.params.values())
    qdd = SOLVERS["batched"](system, q, qd, torch.tensor([[m, k, b]], dtype=DTYPE))
    torch.testing.assert_close(qdd[0], -(k * q + 4 * b * q**3) / m, rtol=1e-12, atol=1e-12)
