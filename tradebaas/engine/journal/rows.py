"""The journal's rows the live loop works with, typed: a strategy, a stored version of strategy code, a segment
(from which candle on which code and config decided). ``Store`` reads and writes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tradebaas.domain import StrategyState


@dataclass(slots=True)
class StrategyRow:
    id: str
    name: str
    instrument: str
    config: dict[str, Any]
    desired_state: StrategyState
    state: StrategyState
    state_reason: str
    created_ts_ms: int
    started_ts_ms: int | None
    stopped_ts_ms: int | None
    code_version: str = ""
    config_version: int = 1
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StrategyRow:
        return cls(
            id=row["id"], name=row["name"], instrument=row["instrument"], config=json.loads(row["config"]),
            desired_state=StrategyState(row["desired_state"]), state=StrategyState(row["state"]),
            state_reason=row["state_reason"], created_ts_ms=row["created_ts_ms"],
            started_ts_ms=row["started_ts_ms"], stopped_ts_ms=row["stopped_ts_ms"],
            code_version=row.get("code_version") or "", config_version=int(row.get("config_version") or 1),
            error=row.get("error"),
        )


@dataclass(slots=True, frozen=True)
class VersionRow:
    """A stored version of a strategy's code (``strategy_versions``)."""

    version: str
    name: str
    class_name: str
    source_kind: str
    origin: str
    warmup_candles: int
    vetting: dict[str, Any]
    created_ts_ms: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VersionRow:
        return cls(row["version"], row["name"], row["class_name"], row["source_kind"], row["origin"],
                   int(row["warmup_candles"]), json.loads(row["vetting"] or "{}"), int(row["created_ts_ms"]))


@dataclass(slots=True, frozen=True)
class Segment:
    """From ``from_ts_ms`` (a candle's start) on, the strategy decided with this code and config."""

    seq: int
    code_version: str
    config_version: int
    config: dict[str, Any]
    apply_to_open: bool
    from_ts_ms: int
