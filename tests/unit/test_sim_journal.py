"""The simulator's journal, pure parts and files: change records replay to exactly the acknowledged state, the
journal file survives torn tails, ids are reserved durably, and recovery = snapshot + journal (no processes here;
``tests/integration/test_sim_crash.py`` SIGKILLs a real simulator)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_sim_properties import World, actions
from tradebaas.exchange.sim import durable
from tradebaas.exchange.sim.changes import Replay, drain
from tradebaas.exchange.sim.clock import SimClock
from tradebaas.exchange.sim.journal import MAGIC, AppendLog, JournalCorrupt, read_log
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN = "BTC_USDC-PERPETUAL"


def journaled_world(instrument: str, history: int) -> World:
    world = World(instrument)
    world.ex = SimExchange.from_state(world.ex.to_state(), DEFAULT_INSTRUMENTS, history=history)
    world.ex.track_changes()
    return world


# ------------------------------------------------------------------------------------------- changes -> replay


@pytest.mark.parametrize("instrument", ["BTC_USDC-PERPETUAL", "BTC-PERPETUAL"])
@pytest.mark.parametrize("history", [1, 3, 2000])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(actions, min_size=1, max_size=40))
def test_records_replay_to_exactly_the_state_after_the_last_record(instrument, history, steps):
    """Every record is drained after its call (as the server commits), through JSON; replaying them on the start
    state gives the core's state at the last record, which restores to a core that behaves the same."""
    world = journaled_world(instrument, history)
    replay = Replay(json.loads(json.dumps(world.ex.to_state())), history)
    acked = world.ex.to_state()
    for action in steps:
        world.step(action)
        record = drain(world.ex.core)
        if record is not None:
            replay.apply(json.loads(json.dumps(record)))
            acked = world.ex.to_state()
    assert replay.state() == acked
    restored = SimExchange.from_state(replay.state(), DEFAULT_INSTRUMENTS, history=history)
    assert restored.to_state() == acked


def test_a_tick_that_changes_nothing_but_prices_writes_no_record_and_a_fill_records_everything():
    world = journaled_world(LIN, 5)
    drain(world.ex.core)
    world.step(("tick", 1, 1, 0))
    assert drain(world.ex.core) is None
    world.step(("limit", "buy", -2, 1, False, False))
    world.step(("tick", -12, 1, 0))  # the market falls through the limit: it fills
    record = drain(world.ex.core)
    assert record is not None
    [order] = record["orders"]
    assert order["state"] == "filled"
    [[aid, inst, trade]] = record["trades"]
    assert (aid, inst, trade["order_id"]) == ("a", LIN, order["order_id"])
    assert record["closed"] == [["a", LIN, order["order_id"]]]
    assert record["accounts"]["a"]["positions"][LIN]["size"] > 0
    assert record["next_trade"] == world.ex.core.ids.next_trade and record["markets"][LIN]["ts_ms"] == world.now


def test_a_new_account_is_recorded():
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.track_changes()
    base = ex.to_state()
    ex.create_account("b", {"USDC": 5.0}, now_ms=7)
    replay = Replay(base, 10)
    replay.apply(json.loads(json.dumps(drain(ex.core))))
    assert replay.state() == ex.to_state()


# ------------------------------------------------------------------------------------------- the journal file


def test_records_read_back_in_order_and_every_torn_tail_is_dropped(tmp_path: Path):
    path = tmp_path / "j.log"
    log = AppendLog(path)
    payloads = [json.dumps({"seq": i, "pad": "x" * i}).encode() for i in range(1, 30)]
    for p in payloads:
        log.append(p)
    log.close()
    data = path.read_bytes()
    assert read_log(path).records == payloads
    ends = [len(MAGIC)]
    for p in payloads:
        ends.append(ends[-1] + 8 + len(p))
    for cut in range(len(data) + 1):  # a crash can stop a write anywhere
        path.write_bytes(data[:cut])
        got = read_log(path)
        whole = sum(1 for e in ends[1:] if e <= cut)
        assert got.records == payloads[:whole]
        assert got.good_bytes + got.torn_bytes == cut
    # Appending after a torn tail cuts it off first: the new record follows the last whole one.
    path.write_bytes(data[: ends[5] + 3])
    log = AppendLog(path)
    log.append(b'{"seq":99}')
    log.close()
    assert read_log(path).records == [*payloads[:5], b'{"seq":99}']


def test_zeros_after_a_power_cut_are_a_torn_tail_but_damage_in_the_middle_is_refused(tmp_path: Path):
    path = tmp_path / "j.log"
    log = AppendLog(path)
    for i in range(3):
        log.append(b'{"seq":%d}' % i)
    log.close()
    data = path.read_bytes()
    path.write_bytes(data + bytes(4096))
    assert len(read_log(path).records) == 3
    damaged = bytearray(data)
    damaged[len(MAGIC) + 8] ^= 0xFF  # first record's payload
    path.write_bytes(bytes(damaged))
    with pytest.raises(JournalCorrupt):
        read_log(path)
    last = bytearray(data)
    last[-1] ^= 0xFF  # only the last record is damaged: a torn write
    path.write_bytes(bytes(last))
    assert len(read_log(path).records) == 2
    path.write_bytes(b"not a journal at all")
    with pytest.raises(JournalCorrupt):
        read_log(path)
    path.write_bytes(struct.pack("<II", 5, 0))  # no magic: some other file
    with pytest.raises(JournalCorrupt):
        read_log(path)


# ------------------------------------------------------------------------------------------- ids


def test_reservations_cover_every_counter_and_lifting_never_goes_back():
    ids = {"next_order": 10, "next_trade": 20, "next_seq": 3, "next_oco": 1, "trade_seq": {LIN: 5, "X": 0}}
    assert durable.exceeds(ids, None)
    held = durable.reservation(ids, 100)
    assert not durable.exceeds(ids, held)
    for key in ("next_order", "next_trade", "next_seq", "next_oco"):
        assert durable.exceeds({**ids, key: held[key] + 1}, held)
    assert durable.exceeds({**ids, "trade_seq": {LIN: 106, "X": 0}}, held)
    assert durable.exceeds({**ids, "trade_seq": {LIN: 5, "X": 0, "NEW": 1}}, held)
    state = {**ids, "trade_seq": dict(ids["trade_seq"])}
    durable.lift(state, held)
    assert state["next_order"] == 110 and state["trade_seq"] == {LIN: 105, "X": 100}
    bigger = {**ids, "next_order": 500, "trade_seq": {LIN: 1}}
    top = durable.highest(held, bigger)
    assert top is not None and top["next_order"] == 500 and top["trade_seq"][LIN] == 105
    durable.lift(state, bigger)
    assert state["next_order"] == 500 and state["trade_seq"][LIN] == 105


# ------------------------------------------------------------------------------------------- store + recover


def _store(tmp_path: Path, history: int = 2000) -> tuple[durable.SimStore, World]:
    world = World(LIN)
    recovered = durable.recover(tmp_path, history)
    if recovered.saved is not None:
        world.ex = SimExchange.from_state(recovered.saved.exchange, DEFAULT_INSTRUMENTS, history)
    store = durable.SimStore(tmp_path, world.ex, SimClock(1_000, 1.0), "test-data", recovered)
    return store, world


def trade_a_little(world: World, store: durable.SimStore, n: int) -> list[dict]:
    out = []
    for i in range(n):
        world.step(("market", "buy" if i % 2 else "sell", 1 + i % 3, False))
        world.step(("limit", "buy", -1 - i % 4, 1, False, False))
        world.step(("tick", -2 if i % 2 else 2, 1, 0))
        store.commit()
        out.append(world.ex.to_state())
    return out


def test_a_crash_keeps_every_committed_change_and_later_ids_never_repeat(tmp_path: Path):
    store, world = _store(tmp_path)
    acked = trade_a_little(world, store, 20)[-1]
    assert store.records > 0 and (tmp_path / durable.JOURNAL_FILE).stat().st_size > len(MAGIC)
    used = {o["order_id"] for o in acked["accounts"]["a"]["orders"]}
    # Crash: no close(), no snapshot. Restart from the files alone.
    again = durable.recover(tmp_path, 2000)
    assert again.saved is not None and again.replayed == store.records
    state = again.saved.exchange
    orders = {o["order_id"]: o for o in state["accounts"]["a"]["orders"]}
    assert orders == {o["order_id"]: o for o in acked["accounts"]["a"]["orders"]}
    assert state["accounts"]["a"]["balances"] == acked["accounts"]["a"]["balances"]
    assert state["accounts"]["a"]["positions"] == acked["accounts"]["a"]["positions"]
    assert state["accounts"]["a"]["trades"] == acked["accounts"]["a"]["trades"]
    # Counters resume at the durable reservation, past everything handed out (and past what a lost tail used).
    assert state["next_order"] >= acked["next_order"] + durable.ID_BLOCK - 100
    store2, world2 = _store(tmp_path)
    world2.now = world.now
    later = trade_a_little(world2, store2, 5)[-1]
    new_ids = {o["order_id"] for o in later["accounts"]["a"]["orders"]} - used
    assert new_ids and all(int(i.split("-")[-1]) >= state["next_order"] for i in new_ids)
    store2.close()


def test_a_clean_close_folds_the_journal_into_the_snapshot_without_an_id_gap(tmp_path: Path):
    store, world = _store(tmp_path)
    acked = trade_a_little(world, store, 5)[-1]
    store.close()
    assert read_log(tmp_path / durable.JOURNAL_FILE).records == []
    again = durable.recover(tmp_path, 2000)
    assert again.saved is not None and again.replayed == 0
    assert again.saved.exchange == acked  # exact counters: no gap after a clean shutdown


def test_a_crash_between_snapshot_and_emptying_the_journal_applies_nothing_twice(tmp_path: Path):
    store, world = _store(tmp_path)
    trade_a_little(world, store, 3)
    journal = (tmp_path / durable.JOURNAL_FILE).read_bytes()
    acked = world.ex.to_state()
    store.snapshot()
    (tmp_path / durable.JOURNAL_FILE).write_bytes(journal)  # as if the process died before the journal emptied
    again = durable.recover(tmp_path, 2000)
    assert again.saved is not None and again.replayed == 0
    lifted = dict(acked)
    durable.lift(lifted, again.saved.reserved)
    assert again.saved.exchange == lifted


def test_the_journal_is_bounded_by_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(durable, "SNAPSHOT_MIN_BYTES", 20_000)
    store, world = _store(tmp_path)
    trade_a_little(world, store, 60)
    assert store.snapshots >= 3
    assert (tmp_path / durable.JOURNAL_FILE).stat().st_size < store.snapshot_at + 10_000  # + one record at most
    acked = world.ex.to_state()
    again = durable.recover(tmp_path, 2000)
    assert again.saved is not None
    lifted = json.loads(json.dumps(acked))
    durable.lift(lifted, again.saved.reserved)
    assert again.saved.exchange == lifted


def test_a_journal_without_its_snapshot_is_refused(tmp_path: Path):
    store, world = _store(tmp_path)
    trade_a_little(world, store, 2)
    (tmp_path / durable.STATE_FILE).unlink()
    with pytest.raises(ValueError, match="move both away"):
        durable.recover(tmp_path, 2000)


def test_market_tick_constructor_is_what_the_feed_uses():
    # guard for the test helpers above: World drives the core with MarketTick like the feed does
    assert MarketTick(LIN, 1, 1.0, 1.0, 1.0, None, None).continuous is False


# ------------------------------------------------------------------------------------------- the feed and a restart


class ManualClock(SimClock):
    """The simulated clock at whatever time the test sets (``at``)."""

    def __init__(self, start_ms: int) -> None:
        self.t = 0.0
        super().__init__(start_ms, 1.0, monotonic=lambda: self.t)

    def at(self, ts_ms: int) -> None:
        self.t = (ts_ms - self._anchor_ms) / 1000.0


def in_process_sim(sim_dir: Path, data, clock: SimClock):  # type: ignore[no-untyped-def]
    """The simulator's parts as ``cli.run`` wires them, without sockets: exchange, journal, server (feed)."""
    from tradebaas.exchange.sim.auth import AuthStore
    from tradebaas.exchange.sim.faults import Faults
    from tradebaas.exchange.sim.ratelimit import RateLimitConfig, RateLimiter
    from tradebaas.exchange.sim.server import ServerConfig, SimServer

    recovered = durable.recover(sim_dir, 2000)
    if recovered.saved is not None:
        ex = SimExchange.from_state(recovered.saved.exchange, DEFAULT_INSTRUMENTS)
        clock.at(recovered.saved.clock_ms)
    else:
        ex = SimExchange(DEFAULT_INSTRUMENTS)
        ex.create_account("a", {"USDC": 1_000_000.0, "BTC": 10.0})
    store = durable.SimStore(sim_dir, ex, clock, data.name, recovered)
    server = SimServer(ex, data, clock, AuthStore([]), RateLimiter(RateLimitConfig.parse("off")), Faults(),
                       dict(DEFAULT_INSTRUMENTS), ServerConfig(), store)
    server.prime()
    return ex, server


def test_a_fill_caused_by_a_tick_is_journaled_with_every_market_at_that_tick_and_never_replayed_twice(tmp_path):
    from tradebaas.exchange.sim import marketdata

    data = marketdata.synthetic(3, minutes=600)
    start = data.default_start_ms()
    clock = ManualClock(start)
    ex, server = in_process_sim(tmp_path, data, clock)
    price = ex.markets[LIN].last_price
    ticks = [t for t in data.ticks_from(start + 1)][:3000]
    low = min(t.price for t in ticks[:1500])
    level = float(int(low) + 1)  # a level the market reaches within the first ticks
    placed = server._private("buy", {"instrument_name": LIN, "amount": 0.01, "type": "limit", "price": level}, None, "a")
    assert placed["order"]["order_state"] == "open" and level < price
    oid = placed["order"]["order_id"]
    fill_at = None
    for tick in ticks:
        clock.at(tick.ts_ms)
        server.feed.apply_tick(tick, publish=False)
        if fill_at is None and ex.accounts["a"].orders[oid].state == "filled":
            fill_at = tick.ts_ms
        elif fill_at is not None and tick.ts_ms > fill_at + 60_000:
            break  # a minute of price-only ticks after the fill: not journaled
    assert fill_at is not None
    records = [json.loads(p) for p in read_log(tmp_path / durable.JOURNAL_FILE).records]
    changes = [r for r in records if r["kind"] == "change"]
    assert changes and all(len({m["ts_ms"] for m in r["markets"].values()}) == 1 for r in changes)
    assert changes[-1]["markets"][LIN]["ts_ms"] == fill_at
    acked = ex.to_state()
    trades = list(ex.accounts["a"].trades[LIN])
    # SIGKILL now (no close): the restart replays the price-only ticks after the fill to the core, not the fill.
    ex2, _ = in_process_sim(tmp_path, data, ManualClock(start))
    assert list(ex2.accounts["a"].trades[LIN]) == trades
    assert ex2.accounts["a"].orders[oid].to_state() == ex.accounts["a"].orders[oid].to_state()
    assert ex2.accounts["a"].balances == acked["accounts"]["a"]["balances"]
    assert ex2.markets[LIN].ts_ms >= fill_at
