"""The simulator's durability: every state change it acknowledges is in its journal before the answer or the
``user.*`` notification that reports it leaves; a restart loads the snapshot and replays the journal.

Why, like the engine's journal: a client that was told of an order or a fill must find it after the simulator
crashed, and must never see its id again for something else (reconciliation matches by id).

Files under ``TRADEBAAS_HOME/sim``: ``state.json`` (the snapshot, ``state.py``) and ``journal.log`` (records after
it, ``journal.py``). Parts:
- ``recover``: snapshot + the journal's records after it (``changes.Replay``) -> the state as acknowledged, its
  clock, and the id counters lifted to the last durable reservation;
- ``SimStore``: the writer. ``commit()`` after every call into the core (server, feed) appends one record per
  call that changed something (``changes.drain``) to a buffer; ``flush()`` writes the buffer with one
  ``write(2)`` (group commit) and runs before every socket write and HTTP answer (the server's barrier), and at
  the end of the event-loop iteration anyway; snapshots empty the journal once it outgrows a few snapshots;
  ``close()`` at a clean shutdown.

What is guaranteed (the fsync policy, chosen for a simulator that must stay fast):
- a crash of the process (SIGKILL, OOM, an exception) loses nothing acknowledged: a record is written before
  anything reports it, and what ``write`` returned stays in the kernel when the process dies (a record still in
  the buffer was reported to nobody: the barrier writes it before any bytes go out);
- a power cut or kernel crash may lose the last ``SYNC_INTERVAL_S`` or so of acknowledged changes: the journal is
  fsync'd that long after a record, in a thread (fsync per answer would cost milliseconds per order);
- ids never repeat, even then: before a record carries an id (order, trade, trade_seq, OCO, placement seq) beyond
  the durable reservation, a reservation of ``ID_BLOCK`` more is appended *and fsync'd*; after a crash every counter
  resumes at the reservation (ids jump by up to ``ID_BLOCK``; a clean shutdown reserves exactly, no jump).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import state as state_mod
from .changes import Replay, drain
from .clock import SimClock
from .codec import dumpb, loads
from .journal import AppendLog, read_log
from .persistence import ids_state

log = logging.getLogger("tradebaas.sim")

STATE_FILE = "state.json"
JOURNAL_FILE = "journal.log"
#: ids reserved ahead per fsync'd reservation (and skipped after a crash)
ID_BLOCK = 10_000
#: the journal is fsync'd at most this long after a record (what a power cut can lose)
SYNC_INTERVAL_S = 1.0
#: a snapshot empties the journal once it is this big, or SNAPSHOT_FACTOR times the last snapshot (so snapshots
#: cost at most about 1/SNAPSHOT_FACTOR of the journal's writing, and a restart replays a bounded journal)
SNAPSHOT_MIN_BYTES = 4 << 20
SNAPSHOT_FACTOR = 4
_COUNTERS = ("next_order", "next_trade", "next_seq", "next_oco")


# ------------------------------------------------------------------------------------------- id reservations


def exceeds(ids: dict[str, Any], reserved: dict[str, Any] | None) -> bool:
    """Whether counters (``persistence.ids_state`` shape) went past ``reserved`` (ids not yet durably reserved)."""
    if reserved is None:
        return True
    if (ids["next_order"] > reserved["next_order"] or ids["next_trade"] > reserved["next_trade"]
            or ids["next_seq"] > reserved["next_seq"] or ids["next_oco"] > reserved["next_oco"]):
        return True
    held = reserved["trade_seq"]
    return any(v > held.get(inst, 0) for inst, v in ids["trade_seq"].items())


def reservation(ids: dict[str, Any], block: int = ID_BLOCK) -> dict[str, Any]:
    """Counters ``block`` ahead of ``ids``: ids up to these may be handed out before the next reservation."""
    out: dict[str, Any] = {k: ids[k] + block for k in _COUNTERS}
    out["trade_seq"] = {inst: v + block for inst, v in ids["trade_seq"].items()}
    return out


def highest(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The larger of two reservations, counter by counter."""
    if a is None or b is None:
        return a or b
    out: dict[str, Any] = {k: max(a.get(k, 0), b.get(k, 0)) for k in _COUNTERS}
    seqs = dict(a.get("trade_seq", {}))
    for inst, v in b.get("trade_seq", {}).items():
        seqs[inst] = max(seqs.get(inst, 0), v)
    out["trade_seq"] = seqs
    return out


def lift(exchange: dict[str, Any], reserved: dict[str, Any] | None) -> None:
    """Start every counter of a saved exchange state at the reservation (ids of a lost tail are never reused)."""
    if reserved is None:
        return
    for k in _COUNTERS:
        exchange[k] = max(exchange[k], reserved.get(k, 0))
    seqs = exchange["trade_seq"]
    for inst, v in reserved.get("trade_seq", {}).items():
        seqs[inst] = max(seqs.get(inst, 0), v)


# ------------------------------------------------------------------------------------------- recovery


@dataclass(slots=True)
class Recovered:
    """What a start finds on disk. ``saved``: the snapshot with the journal applied (None: a fresh simulator)."""

    saved: state_mod.SavedState | None
    seq: int = 0  # the last record's sequence number (the next record is seq + 1)
    replayed: int = 0  # change records applied on top of the snapshot
    good_bytes: int = 0  # where the journal's valid part ends (a torn tail after it is cut off)
    torn_bytes: int = 0


def recover(sim_dir: Path, history: int) -> Recovered:
    """The acknowledged state: the snapshot, every journal record after it, counters lifted past reservations.

    Raises ``ValueError`` (with what to do) for a corrupt snapshot or journal, or a journal without its snapshot.
    """
    snap = state_mod.load(sim_dir / STATE_FILE)
    contents = read_log(sim_dir / JOURNAL_FILE)
    if contents.torn_bytes:
        log.warning("simulator journal: dropping a torn last record (%d bytes, never acknowledged)",
                    contents.torn_bytes)
    if snap is None:
        if contents.records:
            raise ValueError(f"simulator journal {sim_dir / JOURNAL_FILE} has records but {sim_dir / STATE_FILE} is "
                             "missing; move both away to start fresh")
        return Recovered(None, 0, 0, contents.good_bytes, contents.torn_bytes)
    seq, reserved, clock_ms = snap.journal_seq, snap.reserved, snap.clock_ms
    replay: Replay | None = None
    replayed = 0
    for payload in contents.records:
        record = loads(payload)
        if record["kind"] == "reserve":
            reserved = highest(reserved, record["ids"])
        elif record["seq"] > snap.journal_seq:  # older ones are in the snapshot (a crash before the journal emptied)
            if replay is None:
                replay = Replay(snap.exchange, history)
            replay.apply(record)
            clock_ms = max(clock_ms, int(record["clock_ms"]))
            replayed += 1
        seq = max(seq, int(record["seq"]))
    exchange = replay.state() if replay is not None else snap.exchange
    if exchange:
        lift(exchange, reserved)
    saved = state_mod.SavedState(clock_ms, snap.data_name, exchange, snap.extra, seq, reserved)
    return Recovered(saved, seq, replayed, contents.good_bytes, contents.torn_bytes)


# ------------------------------------------------------------------------------------------- writing


class SimStore:
    """Journals a ``SimExchange`` (it calls ``track_changes``) under ``sim_dir``; starts with a snapshot, so the
    journal always has one to apply to (and a long journal found at start is folded into it)."""

    def __init__(self, sim_dir: Path, exchange: Any, clock: SimClock, data_name: str, recovered: Recovered,
                 extra: dict[str, Any] | None = None) -> None:
        self.state_path = sim_dir / STATE_FILE
        self.exchange = exchange
        self.core = exchange.core
        self.clock = clock
        self.data_name = data_name
        self.extra = dict(extra or {})
        exchange.track_changes()
        self.seq = recovered.seq
        saved = recovered.saved
        self.reserved = saved.reserved if saved is not None else None
        self.log = AppendLog(sim_dir / JOURNAL_FILE, recovered.good_bytes)
        self.records = 0  # change records written by this process
        self.snapshots = 0
        self.closed = False
        self.snapshot_at = SNAPSHOT_MIN_BYTES  # the journal size at which the next snapshot empties it
        self._sync_handle: asyncio.TimerHandle | None = None
        self._sync_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sync_future: concurrent.futures.Future[None] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self.snapshot()

    @property
    def pending(self) -> bool:
        """Changes made but not yet written to the journal file."""
        return bool(self.core.changes) or self.log.buffered

    def commit(self) -> bool:
        """Journal what the core changed since the last commit (one buffered record); False when nothing changed.

        Call it after every call into the core; ``flush`` before anything reporting the change is sent."""
        if not self._append_changes():
            return False
        self._schedule_flush()
        if self.log.size >= self.snapshot_at:
            self.snapshot()
        return True

    def barrier(self) -> None:
        """``commit`` + ``flush``: call it right before bytes leave for a client."""
        self.commit()
        self.flush()

    def flush(self) -> None:
        """Write the buffered records (one ``write``): from now on they survive a crash of the process."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.log.buffered and not self.closed:
            self.log.flush()
            self._schedule_sync()

    def _schedule_flush(self) -> None:
        """Flush at the end of this event-loop iteration at the latest (now when no loop runs)."""
        if self._flush_handle is not None:
            return
        try:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def _append_changes(self) -> bool:
        record = drain(self.core)
        if record is None:
            return False
        if self.closed:
            log.warning("simulator journal closed: a change after shutdown is not kept")
            return False
        if exceeds(record, self.reserved):
            self._reserve(record)
        self.seq += 1
        self.log.append(dumpb({"seq": self.seq, "kind": "change", "clock_ms": self.clock.now_ms(), **record}))
        self.records += 1
        return True

    def _reserve(self, ids: dict[str, Any]) -> None:
        """Durably reserve ids ahead of ``ids`` (fsync: this must survive what may lose the records after it)."""
        self.reserved = reservation(ids)
        self.seq += 1
        self.log.append(dumpb({"seq": self.seq, "kind": "reserve", "ids": self.reserved}))
        self.log.sync()  # flushes the records buffered before it too

    def snapshot(self, exact_ids: bool = False) -> None:
        """Write ``state.json`` (atomic, fsync'd) with everything journaled so far, then empty the journal.

        ``exact_ids`` (a clean shutdown): reserve exactly the current counters, so the next start has no id gap."""
        self._append_changes()
        exchange = self.exchange.to_state()
        if exact_ids or self.reserved is None:
            self.reserved = ids_state(self.core)
        saved = state_mod.SavedState(self.clock.now_ms(), self.data_name, exchange, self.extra, self.seq,
                                     self.reserved)
        size = state_mod.save(self.state_path, saved)
        self.log.reset()
        self.snapshot_at = max(SNAPSHOT_MIN_BYTES, SNAPSHOT_FACTOR * size)
        self.snapshots += 1

    # ---- fsync, off the event loop ------------------------------------------------------------------------

    def _schedule_sync(self) -> None:
        if self._sync_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the server runs (start-up replay): sync now
            self.log.sync()
            return
        self._sync_handle = loop.call_later(SYNC_INTERVAL_S, self._sync)

    def _sync(self) -> None:
        self._sync_handle = None
        if self.closed:
            return
        if self._sync_future is not None and not self._sync_future.done():
            self._schedule_sync()  # the previous fsync still runs: try again later
            return
        if self._sync_pool is None:
            self._sync_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sim-fsync")
        self.log.flush()  # here, on the loop's thread: the buffer is not thread-safe; only the fsync runs there
        self._sync_future = self._sync_pool.submit(os.fsync, self.log.fileno)

    def close(self) -> None:
        """Clean shutdown: a final snapshot with exact id reservations, everything fsync'd, files closed."""
        if self.closed:
            return
        for handle in (self._sync_handle, self._flush_handle):
            if handle is not None:
                handle.cancel()
        self._sync_handle = self._flush_handle = None
        if self._sync_future is not None:
            concurrent.futures.wait([self._sync_future])
        self.snapshot(exact_ids=True)
        self.closed = True
        self.log.sync()
        self.log.close()
        if self._sync_pool is not None:
            self._sync_pool.shutdown()

    def status(self) -> dict[str, Any]:
        return {"seq": self.seq, "records": self.records, "snapshots": self.snapshots, "bytes": self.log.size}
