"""One list of RPC methods (``engine/api.py``): the engine serves exactly it, and docs/rpc.md documents exactly it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tradebaas.engine import api
from tradebaas.engine.process.daemon import build_engine
from tradebaas.home import Home
from tradebaas.rpc.protocol import FORBIDDEN, Access, CallContext, RpcError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rpc.md"


def documented() -> dict[str, str]:
    """``method -> access`` from the methods table of docs/rpc.md."""
    rows: dict[str, str] = {}
    in_table = False
    for line in DOCS.read_text().splitlines():
        if line.startswith("| method | access |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def documented_params() -> dict[str, set[str]]:
    """``method -> parameter names`` from the params column (``{a, b?, c?: false}``; ``–`` for none)."""
    rows: dict[str, set[str]] = {}
    in_table = False
    for line in DOCS.read_text().splitlines():
        if line.startswith("| method | access |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            braces = re.search(r"\{([^}]*)\}", cells[2])
            names = {p.split(":")[0].strip().rstrip("?") for p in braces.group(1).split(",")} if braces else set()
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = names - {""}
    return rows


def test_docs_list_every_parameter_of_every_method() -> None:
    docs = documented_params()
    differ = {m.name: (sorted(docs.get(m.name, set())), sorted(m.params)) for m in api.METHODS
              if m.name not in api.SERVER_METHODS and docs.get(m.name, set()) != set(m.params)}
    assert differ == {}, "docs/rpc.md params (left) differ from engine/api.py METHODS (right)"


def test_docs_list_every_method_with_its_access_level() -> None:
    table = {m.name: m.access.value for m in api.METHODS}
    docs = documented()
    assert sorted(set(table) - set(docs)) == [], "methods missing from docs/rpc.md"
    assert sorted(set(docs) - set(table)) == [], "docs/rpc.md lists methods the engine does not serve"
    assert docs == table


def test_the_assembled_engine_serves_exactly_the_table(tb_home: Home) -> None:
    engine = build_engine(tb_home)
    try:
        served = {name: engine.registry.get(name).access for name in engine.registry.names()}  # type: ignore[union-attr]
        assert served == {m.name: m.access for m in api.METHODS}
    finally:
        engine.journal.close()


def test_a_handler_missing_from_the_table_is_refused() -> None:
    from tradebaas.rpc.protocol import Registry

    with pytest.raises(ValueError, match="without an entry"):
        api.register(Registry(), {"strategy.secret_backdoor": lambda: None}, partial=True)
    with pytest.raises(ValueError, match="without a handler"):
        api.register(Registry(), {})


def test_a_read_only_connection_may_read_but_not_trade(tb_home: Home) -> None:
    engine = build_engine(tb_home)

    async def calls() -> None:
        read_only = CallContext(access=Access.READ)
        assert await engine.registry.call("engine.ping", {}, read_only) == "pong"
        assert await engine.registry.call("strategy.list", {}, read_only) == []
        for name in ("strategy.start", "risk.kill", "reports.run", "engine.shutdown"):
            with pytest.raises(RpcError) as err:
                await engine.registry.call(name, {"name": "razor"} if "start" in name or "run" in name else {},
                                           read_only)
            assert err.value.code == FORBIDDEN, name

    try:
        asyncio.run(calls())
    finally:
        engine.journal.close()
