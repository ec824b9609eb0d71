"""Strategy source text -> a checked strategy class, or an error that says why (with the traceback)."""

from __future__ import annotations

import textwrap

import pytest

from tradebaas.strategies.loader import (
    StrategyApiError,
    StrategyLoadError,
    check_api,
    load_class,
    module_from_source,
    pick_class,
    source_version,
)

GOOD = textwrap.dedent('''
    from tradebaas.strategies.base import BaseStrategy, Decision, Param

    class Flat(BaseStrategy):
        name = "flat"
        params = (Param("n", int, 3, 1, 10, "a number"),)

        def on_candle(self, candle, context):
            return Decision(candle.ts_ms, "none", {}, {}, ())
''')


def test_a_good_source_gives_its_class_and_a_stable_version() -> None:
    cls = load_class(GOOD, "tb_user_good", "<good>")
    assert cls.name == "flat" and cls({"n": 4}).config["n"] == 4
    assert source_version(GOOD) == source_version(GOOD) and len(source_version(GOOD)) == 64
    assert source_version(GOOD) != source_version(GOOD + "\n")


def test_a_source_that_fails_to_import_says_where_with_its_traceback() -> None:
    with pytest.raises(StrategyLoadError) as err:
        module_from_source("import no_such_module_here\n", "tb_user_bad", "<cell 3>")
    assert "<cell 3> failed to load: ModuleNotFoundError" in str(err.value)
    assert "Traceback" in err.value.details and "no_such_module_here" in err.value.details
    with pytest.raises(StrategyLoadError, match="SyntaxError"):
        module_from_source("def (:\n", "tb_user_syntax", "<x>")


@pytest.mark.parametrize(("body", "why"), [
    ("name = 'has space'\n    params = ()\n    def on_candle(self, c, x): pass", "`name` must be"),
    ("name = 'p'\n    params = ('n',)\n    def on_candle(self, c, x): pass", "tuple of"),
    ("name = 'p'\n    params = ()\n    def on_candle(self): pass", "must take (self, candle, context)"),
    ("name = 'p'\n    params = ()\n    def __init__(self, config): raise RuntimeError('boom')\n"
     "    def on_candle(self, c, x): pass", "raised RuntimeError: boom"),
])
def test_a_class_that_breaks_the_api_is_refused_with_the_reason(body: str, why: str) -> None:
    module = module_from_source(f"class S:\n    {body}\n", f"tb_user_api_{abs(hash(body))}", "<api>")
    with pytest.raises(StrategyApiError, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_api(pick_class(module))


def test_pick_class_wants_exactly_one_or_a_name() -> None:
    two = GOOD + GOOD.split("\n\n", 1)[1].replace("class Flat", "class Flat2").replace('"flat"', '"flat2"')
    module = module_from_source(two, "tb_user_two", "<two>")
    with pytest.raises(StrategyApiError, match="found: flat, flat2"):
        pick_class(module)
    assert pick_class(module, "flat2").__name__ == "Flat2"
    with pytest.raises(StrategyApiError, match="found: none"):
        pick_class(module_from_source("x = 1\n", "tb_user_none", "<none>"))
