"""One table of Deribit error codes (``exchange/deribit/codes.py``), used by the client and the simulator.

The source walk is static (``ast``): a Deribit code written as a bare number in a comparison, a call or a raise
anywhere under ``tradebaas/exchange`` (outside the table) is a second, silent copy of the table.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tradebaas
from tradebaas.exchange.deribit import codes
from tradebaas.exchange.deribit.errors import DeribitError
from tradebaas.exchange.sim.errors import SimRefusal, coded

EXCHANGE = Path(tradebaas.__file__).resolve().parent / "exchange"
TABLE = EXCHANGE / "deribit" / "codes.py"
#: Where a literal acts as an error code: compared with, passed to, or raised.
CODE_CONTEXTS = (ast.Compare, ast.Call, ast.Raise)


def code_literal(node: ast.AST) -> int | None:
    """The value of ``node`` if it is a classic Deribit code (10000..19999) or a JSON-RPC code (-32768..-32000)."""
    if isinstance(node, ast.Constant) and type(node.value) is int and 10_000 <= node.value <= 19_999:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int and 32_000 <= node.operand.value <= 32_768):
        return -node.operand.value
    return None


def bare_codes(source: str, filename: str = "<src>") -> Iterator[tuple[int, int]]:
    """(line, code) of every code literal used in a comparison, a call or a raise."""
    tree = ast.parse(source, filename)
    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    for node in ast.walk(tree):
        value = code_literal(node)
        if value is None or not isinstance(node, ast.expr):
            continue
        up = parents.get(node)
        while up is not None and not isinstance(up, (ast.stmt, *CODE_CONTEXTS)):
            up = parents.get(up)
        if isinstance(up, CODE_CONTEXTS):
            yield node.lineno, value


def test_the_walk_finds_bare_codes_in_comparisons_calls_and_raises():
    src = """
if exc.code in (10004, 11044):
    pass
raise Refusal(13009, "unauthorized")
AUTH = frozenset({10000, -32601})
ok = code == codes.ORDER_NOT_FOUND
timeout_ms = 10_000
"""
    assert sorted(bare_codes(src)) == [(2, 10004), (2, 11044), (4, 13009), (5, -32601), (5, 10000)]


def test_no_bare_deribit_code_under_exchange_outside_the_table():
    found = [f"{path.relative_to(EXCHANGE.parent)}:{line}: {code}"
             for path in sorted(EXCHANGE.rglob("*.py")) if path != TABLE
             for line, code in bare_codes(path.read_text(), str(path))]
    assert not found, "use tradebaas.exchange.deribit.codes instead of bare numbers:\n" + "\n".join(found)


def test_every_code_has_one_name_and_deribits_message():
    table = {name: value for name, value in vars(codes).items() if name.isupper() and type(value) is int}
    assert len(set(table.values())) == len(table), "a code is named twice"
    for name, value in table.items():
        assert value in codes.MESSAGES
        if value > 0:
            assert codes.message(value) == name.lower()
    assert codes.ORDER_NOT_FOUND == 10004 and codes.message(codes.ORDER_NOT_FOUND) == "order_not_found"
    assert codes.message(codes.INVALID_PARAMS) == "Invalid params"
    assert codes.message(99_999) == "error"


def test_the_simulators_refusal_is_not_the_clients_error():
    """One name per meaning: a refusal the simulator sends is not an error the client raises."""
    assert not issubclass(SimRefusal, DeribitError)
    assert coded(codes.NOT_OPEN_ORDER).to_json() == {"code": 11044, "message": "not_open_order"}


def exception_classes(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Refusal")) or b.id in (
                    "DeribitError", "DeribitApiError")) for b in node.bases):
            yield node.name


def test_no_exception_class_name_is_defined_twice_under_exchange():
    seen: dict[str, str] = {}
    twice = []
    for path in sorted(EXCHANGE.rglob("*.py")):
        for name in exception_classes(path):
            if name in seen:
                twice.append(f"{name}: {seen[name]} and {path.relative_to(EXCHANGE)}")
            seen[name] = str(path.relative_to(EXCHANGE))
    assert "SimRefusal" in seen and "DeribitError" in seen
    assert not twice, twice
