"""The tests' own assertions can fail: a lint over tests/, molecule/*/tests/ and bench/.

It refuses the shapes that are true whatever the code does: ``assert A or B`` with an operand
that is a bare value (``or rows["h1"]["FLEET-001"]``: a Result, a dict entry, a name is truthy
whenever it exists), ``assert`` of a literal, an f-string or a non-empty display, ``len(x) >= 0``,
a value compared with itself, and ``pytest.skip``/``xfail`` called without a condition in the
body of a test. An ``or`` of two properties is written with comparisons or calls
(``any(...)``), whose falsity means something.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT

#: Test code and the benchmark (an extensionless script).
SOURCES = sorted(
    [
        *(REPO_ROOT / "tests").rglob("*.py"),
        *(REPO_ROOT / "molecule").glob("*/tests/*.py"),
        REPO_ROOT / "bench" / "run",
    ]
)
#: Operands whose truth says nothing about a property: they are true as soon as they exist.
_BARE = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.JoinedStr)


def _displayed(node: ast.expr) -> bool:
    """A non-empty list, tuple, set or dict written out: always true."""
    if isinstance(node, ast.Dict):
        return bool(node.keys)
    return isinstance(node, (ast.List, ast.Tuple, ast.Set)) and bool(node.elts)


def always_true(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, why) for every assertion of ``tree`` that cannot fail, or cannot fail usefully."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            test = node.test
            if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
                for operand in test.values:
                    if isinstance(operand, _BARE) or _displayed(operand):
                        yield (
                            node.lineno,
                            f"an 'or' operand is a bare value: {ast.unparse(operand)}",
                        )
            elif (isinstance(test, ast.Constant) and test.value) or isinstance(test, ast.JoinedStr):
                yield node.lineno, f"asserts a literal: {ast.unparse(test)}"
            elif _displayed(test):
                yield node.lineno, f"asserts a non-empty display: {ast.unparse(test)}"
            elif isinstance(test, ast.Compare):
                left = ast.dump(test.left)
                for op, right in zip(test.ops, test.comparators, strict=True):
                    if ast.dump(right) == left:
                        yield node.lineno, f"compares a value with itself: {ast.unparse(test)}"
                    if (
                        isinstance(op, ast.GtE)
                        and isinstance(right, ast.Constant)
                        and right.value == 0
                        and isinstance(test.left, ast.Call)
                        and ast.unparse(test.left.func) == "len"
                    ):
                        yield node.lineno, f"a length is always >= 0: {ast.unparse(test)}"
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            for statement in node.body:
                call = statement.value if isinstance(statement, ast.Expr) else None
                if isinstance(call, ast.Call) and ast.unparse(call.func) in (
                    "pytest.skip",
                    "pytest.xfail",
                ):
                    yield statement.lineno, f"skips unconditionally: {ast.unparse(call)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_assertion_is_always_true(path: Path) -> None:
    found = list(always_true(ast.parse(path.read_text(), str(path))))
    assert found == [], "\n".join(f"{path}:{line}: {why}" for line, why in found)


@pytest.mark.parametrize(
    "source",
    [
        'assert "on all 2 host(s)" in rows["h1"]["F"].message or rows["h1"]["F"]',
        "assert x == 1 or result",
        "assert x == 1 or result.ok",
        "assert x == 1 or [x]",
        "assert 'message'",
        "assert f'{x}'",
        "assert [x]",
        "assert len(items) >= 0",
        "assert got == got",
        "def test_x():\n    pytest.skip('later')",
    ],
)
def test_the_lint_refuses_an_always_true_assertion(source: str) -> None:
    assert [why for _, why in always_true(ast.parse(source))] != []


@pytest.mark.parametrize(
    "source",
    [
        'assert "a" in text or "b" in text',
        "assert any(s.is_listening for s in sockets)",
        "assert result.ok",
        "assert not missing",
        "assert x == 1",
        "assert len(items) >= 1",
        "def test_x():\n    if old:\n        pytest.skip('needs root')",
    ],
)
def test_the_lint_lets_a_real_assertion_be(source: str) -> None:
    assert list(always_true(ast.parse(source))) == []
