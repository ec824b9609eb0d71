"""The journal's schema as an ordered list of migrations; ``PRAGMA user_version`` records how many were applied.

Rules that keep old journals readable:
- never edit a migration that has shipped; append a new one (``MIGRATIONS.append`` order == version number);
- ``events`` is append-only (triggers refuse UPDATE/DELETE); every other table is *derived* state written in the
  same transaction as the event that explains it, so a crash never leaves one without the other;
- times are Unix milliseconds: ``ts_ms`` is exchange/engine time (what strategies see), ``wall_ts_ms`` the
  machine's clock when the row was written; amounts/prices as in ``tradebaas.domain``.

v1 already holds what the live loop needs: strategies (desired vs actual state), decisions, orders (with the
label that ties them to a strategy/trade/role), fills (exchange trade_id unique: applying a fill twice is a
no-op via ``INSERT OR IGNORE``), trades (our round trips; an open trade *is* the strategy's position), daily
counters and per-strategy runtime state (cooldown) for the risk rules, and a ``meta`` key/value table.
"""

from __future__ import annotations

V1 = """
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms       INTEGER NOT NULL,              -- exchange/engine time of what happened
    wall_ts_ms  INTEGER NOT NULL,              -- machine clock when journaled
    kind        TEXT    NOT NULL,              -- e.g. engine.started, strategy.state, decision, order, fill
    strategy_id TEXT,
    payload     TEXT    NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX events_kind_id ON events(kind, id);
CREATE INDEX events_strategy_id ON events(strategy_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'journal events are append-only'); END;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                        -- JSON
);

CREATE TABLE strategies (
    id             TEXT PRIMARY KEY,
    name           TEXT    NOT NULL,           -- registry name, e.g. razor
    instrument     TEXT    NOT NULL,
    config         TEXT    NOT NULL DEFAULT '{}',
    desired_state  TEXT    NOT NULL DEFAULT 'stopped',   -- running | stopped: what the user asked for
    state          TEXT    NOT NULL DEFAULT 'stopped',   -- domain.StrategyState: what it is
    state_reason   TEXT    NOT NULL DEFAULT '',
    created_ts_ms  INTEGER NOT NULL,
    started_ts_ms  INTEGER,
    stopped_ts_ms  INTEGER,
    updated_ts_ms  INTEGER NOT NULL
);

CREATE TABLE decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       INTEGER REFERENCES events(id),
    strategy_id    TEXT    NOT NULL,
    ts_ms          INTEGER NOT NULL,           -- the candle/tick time the decision was made on
    signal         TEXT    NOT NULL DEFAULT 'none',      -- long | short | none
    action         TEXT    NOT NULL DEFAULT '',          -- intent taken (enter/move_stop/exit) or ''
    skipped        TEXT    NOT NULL DEFAULT '',          -- why no action despite a signal (cooldown, ...)
    indicators     TEXT    NOT NULL DEFAULT '{}',
    scores         TEXT    NOT NULL DEFAULT '{}',
    reasons        TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX decisions_strategy_ts ON decisions(strategy_id, ts_ms);

CREATE TABLE orders (
    order_id       TEXT PRIMARY KEY,           -- exchange order id
    strategy_id    TEXT,
    trade_id       TEXT,                       -- our trade (trades.trade_id)
    role           TEXT,                       -- domain.OrderRole
    label          TEXT    NOT NULL DEFAULT '',
    instrument     TEXT    NOT NULL,
    state          TEXT    NOT NULL,           -- domain.OrderState
    type           TEXT    NOT NULL,           -- domain.OrderType
    side           TEXT    NOT NULL,           -- buy | sell
    amount         REAL    NOT NULL,
    filled_amount  REAL    NOT NULL DEFAULT 0,
    price          REAL,
    trigger_price  REAL,
    average_price  REAL    NOT NULL DEFAULT 0,
    reduce_only    INTEGER NOT NULL DEFAULT 0,
    created_ts_ms  INTEGER NOT NULL,
    updated_ts_ms  INTEGER NOT NULL,
    raw            TEXT    NOT NULL DEFAULT '{}'  -- the exchange's last order object
);
CREATE INDEX orders_strategy ON orders(strategy_id, state);
CREATE INDEX orders_trade ON orders(trade_id);
CREATE INDEX orders_label ON orders(label);

CREATE TABLE fills (
    trade_id       TEXT PRIMARY KEY,           -- the exchange's trade id: unique, so applying twice is a no-op
    order_id       TEXT    NOT NULL,
    strategy_id    TEXT,
    strategy_trade_id TEXT,                    -- our trade this fill belongs to (trades.trade_id)
    role           TEXT,
    label          TEXT    NOT NULL DEFAULT '',
    instrument     TEXT    NOT NULL,
    side           TEXT    NOT NULL,
    amount         REAL    NOT NULL,
    price          REAL    NOT NULL,
    fee            REAL    NOT NULL DEFAULT 0,
    fee_currency   TEXT    NOT NULL DEFAULT '',
    liquidity      TEXT    NOT NULL DEFAULT 'T',
    reduce_only    INTEGER NOT NULL DEFAULT 0,
    trade_seq      INTEGER NOT NULL DEFAULT 0,
    ts_ms          INTEGER NOT NULL
);
CREATE INDEX fills_strategy_ts ON fills(strategy_id, ts_ms);
CREATE INDEX fills_order ON fills(order_id);
CREATE INDEX fills_instrument_ts ON fills(instrument, ts_ms);

CREATE TABLE trades (
    trade_id       TEXT PRIMARY KEY,           -- ours; appears in order labels
    strategy_id    TEXT    NOT NULL,
    instrument     TEXT    NOT NULL,
    direction      TEXT    NOT NULL,           -- long | short
    state          TEXT    NOT NULL,           -- pending_entry | open | closed | cancelled
    signal_ts_ms   INTEGER,                    -- the candle that triggered the entry: one entry per signal
    amount         REAL    NOT NULL DEFAULT 0,
    entry_price    REAL,
    entry_ts_ms    INTEGER,
    exit_price     REAL,
    exit_ts_ms     INTEGER,
    stop_price     REAL,
    take_price     REAL,
    break_even_done INTEGER NOT NULL DEFAULT 0,
    pnl            REAL    NOT NULL DEFAULT 0,  -- gross, settlement currency
    fees           REAL    NOT NULL DEFAULT 0,  -- positive = paid, settlement currency
    currency       TEXT    NOT NULL DEFAULT '',
    exit_reason    TEXT    NOT NULL DEFAULT '',
    created_ts_ms  INTEGER NOT NULL,
    updated_ts_ms  INTEGER NOT NULL
);
CREATE INDEX trades_strategy_state ON trades(strategy_id, state);
CREATE INDEX trades_exit_ts ON trades(exit_ts_ms);
CREATE UNIQUE INDEX trades_one_entry_per_signal ON trades(strategy_id, signal_ts_ms)
    WHERE signal_ts_ms IS NOT NULL;

CREATE TABLE daily_counters (
    strategy_id    TEXT    NOT NULL,
    utc_day        TEXT    NOT NULL,           -- YYYY-MM-DD of exchange time
    entries        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (strategy_id, utc_day)
);

CREATE TABLE strategy_runtime (
    strategy_id        TEXT PRIMARY KEY,
    cooldown_until_ms  INTEGER NOT NULL DEFAULT 0,
    last_candle_ts_ms  INTEGER NOT NULL DEFAULT 0,
    last_fill_ts_ms    INTEGER NOT NULL DEFAULT 0,
    state              TEXT    NOT NULL DEFAULT '{}',  -- strategy-private JSON the runner persists
    updated_ts_ms      INTEGER NOT NULL DEFAULT 0
);
"""

#: v2 (live loop): the whole ``tradebook.Trade`` as JSON beside the queryable columns, so the journal holds every
#: field recovery needs (applied fill ids, bracket order ids, sl/tp percent) without a column per field.
V2 = """
ALTER TABLE trades ADD COLUMN data TEXT NOT NULL DEFAULT '{}';
"""

#: v3 (reports, issue 7): one row per report run, derived from the ``report.run`` events (tradebaas.reports.execute).
V3_REPORT_RUNS = """
CREATE TABLE report_runs (
    run_id         TEXT PRIMARY KEY,           -- also the output directory name under reports/<name>/
    name           TEXT    NOT NULL,
    trigger        TEXT    NOT NULL DEFAULT 'manual',    -- schedule | catch_up | manual
    slot_ts_ms     INTEGER,                    -- the cron slot a scheduled run is for
    params         TEXT    NOT NULL DEFAULT '{}',
    status         TEXT    NOT NULL,           -- queued | running | ok | failed
    error          TEXT    NOT NULL DEFAULT '',
    queued_ts_ms   INTEGER NOT NULL,
    started_ts_ms  INTEGER,
    finished_ts_ms INTEGER,
    run_dir        TEXT    NOT NULL DEFAULT '',
    notebook_path  TEXT,                       -- the executed notebook (kept on failure too)
    html_path      TEXT                        -- HTML without code, on success
);
CREATE INDEX report_runs_name_queued ON report_runs(name, queued_ts_ms);
"""

#: v4 (strategies from notebooks, issue 11): code and config versions on strategies, trades and segments.
#: ``strategy_versions``: every version of a strategy's code the engine stored (deployed from a client, or taken from
#: a file in ``TRADEBAAS_HOME/strategies/``), content-addressed (``version`` = sha256 of the source, which lives in
#: ``strategies/versions/<version>.py``), with what vetting measured. ``strategy_segments``: which code and config a
#: strategy decided with from which candle on (``from_ts_ms``: the first candle, by its start, decided with them), so
#: a backtest can replay exactly what ran live.
V4_VERSIONS = """
ALTER TABLE strategies ADD COLUMN code_version TEXT NOT NULL DEFAULT '';
ALTER TABLE strategies ADD COLUMN config_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE strategies ADD COLUMN error TEXT;
ALTER TABLE trades ADD COLUMN code_version TEXT NOT NULL DEFAULT '';
ALTER TABLE trades ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE strategy_versions (
    version        TEXT PRIMARY KEY,           -- sha256 hex of the source
    name           TEXT    NOT NULL,           -- the strategy name it runs under
    class_name     TEXT    NOT NULL,
    source_kind    TEXT    NOT NULL,           -- deployed | file | builtin | entry_point
    origin         TEXT    NOT NULL DEFAULT '',
    warmup_candles INTEGER NOT NULL DEFAULT 0,
    vetting        TEXT    NOT NULL DEFAULT '{}',
    created_ts_ms  INTEGER NOT NULL
);
CREATE INDEX strategy_versions_name ON strategy_versions(name, created_ts_ms);
CREATE TABLE strategy_segments (
    strategy_id    TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    code_version   TEXT    NOT NULL,
    config_version INTEGER NOT NULL,
    config         TEXT    NOT NULL,
    apply_to_open  INTEGER NOT NULL DEFAULT 0,
    from_ts_ms     INTEGER NOT NULL,           -- start of the first candle decided with this code and config
    wall_ts_ms     INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, seq)
);
"""

#: Ordered migrations: index i holds the SQL that takes the schema from version i to i+1. Append only.
MIGRATIONS: list[str] = [V1, V2, V3_REPORT_RUNS, V4_VERSIONS]

#: The schema version this code writes and understands.
SCHEMA_VERSION: int = len(MIGRATIONS)
