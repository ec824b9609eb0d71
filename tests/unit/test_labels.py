"""Labels: ownership of an order must be recoverable from the exchange alone, and never guessed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradebaas.domain import OrderRole
from tradebaas.engine.core.labels import (
    MAX_LABEL_LENGTH,
    ParsedLabel,
    base36,
    make_label,
    new_strategy_id,
    new_trade_id,
    parse,
    parse_label,
)

IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=24)


def test_label_has_the_documented_shape():
    assert make_label("razor-3f9a1c", "m5x1k2ab-1", OrderRole.STOP_LOSS) == "tb:razor-3f9a1c:m5x1k2ab-1:sl"


def test_label_round_trips_strategy_trade_and_role():
    label = make_label("razor-3f9a1c", "m5x1k2ab-1", OrderRole.TAKE_PROFIT)
    assert parse_label(label) == ParsedLabel("razor-3f9a1c", "m5x1k2ab-1", OrderRole.TAKE_PROFIT)
    assert parse(label) == parse_label(label)


def test_role_may_be_given_as_its_string():
    assert make_label("s", "t", "entry") == "tb:s:t:entry"


@pytest.mark.parametrize(
    "label",
    ["", None, "my manual order", "tb:s:t", "tb:s:t:sl:x", "xx:s:t:sl", "tb:s:t:stop", "tb::t:sl", "tb:s:t t:sl",
     "tb:s:" + "t" * 70 + ":sl"],
)
def test_foreign_or_malformed_labels_parse_to_none(label):
    assert parse_label(label) is None


@pytest.mark.parametrize("bad", ["a:b", "a b", "", "é", "a/b"])
def test_ids_outside_the_charset_are_refused(bad):
    with pytest.raises(ValueError):
        make_label(bad, "t1", OrderRole.ENTRY)
    with pytest.raises(ValueError):
        make_label("s1", bad, OrderRole.ENTRY)


def test_too_long_label_raises_instead_of_truncating():
    with pytest.raises(ValueError, match="64"):
        make_label("s" * 40, "t" * 20, OrderRole.ENTRY)


def test_unknown_role_is_refused():
    with pytest.raises(ValueError):
        make_label("s", "t", "stop")


@given(IDS, IDS, st.sampled_from(list(OrderRole)))
def test_every_label_that_fits_round_trips(strategy_id, trade_id, role):
    try:
        label = make_label(strategy_id, trade_id, role)
    except ValueError:
        assert len(f"tb:{strategy_id}:{trade_id}:{role.value}") > MAX_LABEL_LENGTH
        return
    assert len(label) <= MAX_LABEL_LENGTH
    assert parse_label(label) == ParsedLabel(strategy_id, trade_id, role)


def test_strategy_id_is_a_short_slug_plus_random_suffix():
    sid = new_strategy_id("Razor")
    assert sid.startswith("razor-") and len(sid) == len("razor-") + 6
    assert new_strategy_id("Razor") != sid
    assert new_strategy_id("EMA Cross v2!", suffix="abc123") == "ema-cross-v2-abc123"
    assert new_strategy_id("!!!", suffix="x") == "strategy-x"
    assert len(new_strategy_id("a very long strategy name indeed")) <= 16 + 7


def test_trade_id_is_deterministic_short_and_ordered():
    ts = 1_738_000_000_000
    assert new_trade_id(ts, 7) == new_trade_id(ts, 7)
    assert new_trade_id(ts, 7) != new_trade_id(ts, 8)
    assert len(new_trade_id(ts, 123_456)) <= 13
    assert new_trade_id(ts, 0) < new_trade_id(ts + 60_000, 0)


def test_the_longest_realistic_label_fits():
    sid = new_strategy_id("a very long strategy name indeed")
    tid = new_trade_id(4_000_000_000_000, 36**6 - 1)
    assert len(make_label(sid, tid, OrderRole.ENTRY)) <= 50


def test_base36():
    assert base36(0) == "0"
    assert base36(35) == "z"
    assert base36(36) == "10"
    with pytest.raises(ValueError):
        base36(-1)
    with pytest.raises(ValueError):
        new_trade_id(-1, 0)
