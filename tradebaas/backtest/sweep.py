"""Parameter sweeps: one backtest per point of a grid, in parallel, with a progress bar.

A local ``ProcessPoolExecutor`` by default; a ``dask.distributed.Client`` when given (the same worker function
and the same data, scattered once to every worker), so the results are identical either way. Every config is
validated in the calling process first: a typo fails at once, not in 1,000 workers.

Strategies with an array fast path (``ema_cross``) or declared series (an ``ArrayStrategy``: Razor) share their
per-candle work across parameter sets: each worker keeps one ``vectorized.ArrayCache`` for the data set, so an EMA
period (a declared series) is computed once per worker, not once per parameter set (a 1,000-point fast x slow grid
needs ~60 EMAs, not 2,000; a Razor grid that leaves ``pullbackPercent`` alone computes its 8 series once).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from tradebaas.errors import UserError
from tradebaas.strategies.arrays import ArrayStrategy
from tradebaas.strategies.params import validate_config
from tradebaas.strategies.registry import resolve

from .data import load_candles

_WORKER_DATA: pd.DataFrame | None = None
#: The worker's ArrayCache: (token of the data set, cache). One data set at a time bounds the memory.
_WORKER_CACHE: tuple[str, Any] | None = None


def grid_points(grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` as a list of configs, in a stable order (first key varies slowest)."""
    keys = list(grid)
    values = [list(grid[k]) for k in keys]
    for k, v in zip(keys, values, strict=True):
        if not v:
            raise UserError(f"sweep grid: {k!r} has no values")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def _cache_for(token: str, data: pd.DataFrame) -> Any:
    """This process's ArrayCache of ``data`` (identified by ``token``: Dask may hand over an equal copy)."""
    global _WORKER_CACHE
    if _WORKER_CACHE is None or _WORKER_CACHE[0] != token or _WORKER_CACHE[1].frame is not data:
        from .vectorized import ArrayCache

        _WORKER_CACHE = (token, ArrayCache.for_frame(data))
    return _WORKER_CACHE[1]


def _run_one(strategy: Any, data: pd.DataFrame, config: dict[str, Any], kwargs: dict[str, Any],
             cache: Any = None) -> dict[str, Any]:
    from .backtester import backtest

    result = backtest(strategy, data, config=config, decisions="none", cache=cache, **kwargs)
    return {k: v for k, v in result.stats.items()}


def _init_worker(data: pd.DataFrame) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data


def _pool_task(i: int, strategy: Any, config: dict[str, Any], kwargs: dict[str, Any],
               token: str = "") -> tuple[int, dict[str, Any]]:
    assert _WORKER_DATA is not None
    return i, _run_one(strategy, _WORKER_DATA, config, kwargs, _cache_for(token, _WORKER_DATA) if token else None)


def _dask_task(i: int, strategy: Any, config: dict[str, Any], kwargs: dict[str, Any],
               data: pd.DataFrame, token: str = "") -> tuple[int, dict[str, Any]]:
    return i, _run_one(strategy, data, config, kwargs, _cache_for(token, data) if token else None)


def sweep(
    strategy: str | type,
    data: str | Path | pd.DataFrame,
    grid: dict[str, list[Any]],
    client: Any = None,
    processes: int | None = None,
    *,
    base_config: dict[str, Any] | None = None,
    progress: bool = True,
    **backtest_kwargs: Any,
) -> pd.DataFrame:
    """Backtest ``strategy`` (a name or an importable class) for every point of ``grid``.

    Returns one row per point, in grid order: the swept parameters, then the stats columns
    (``tradebaas.analytics.stats.STAT_NAMES``). ``base_config`` holds fixed settings; ``backtest_kwargs`` go to
    ``backtest`` (``instrument``, ``fees``, ``slippage``, ``capital``, ``intrabar``: ``"path"`` by default, or
    ``"pessimistic"``, see ``backtest``). ``processes`` caps the local pool (default: all CPUs); ignored with a
    Dask ``client``.
    """
    from .backtester import check_intrabar

    if "intrabar" in backtest_kwargs:
        check_intrabar(backtest_kwargs["intrabar"])  # here, not once per worker
    cls = resolve(strategy)
    target = strategy if isinstance(strategy, str) else cls
    points = grid_points(grid)
    configs = [{**(base_config or {}), **p} for p in points]
    for cfg in configs:
        validate_config(cls, cfg)
    df = load_candles(data)
    # a fresh token per sweep: worker caches never outlive (or get confused with) another sweep's data
    token = uuid.uuid4().hex if hasattr(cls, "vectorized") or issubclass(cls, ArrayStrategy) else ""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(configs), desc=f"sweep {getattr(cls, 'name', cls.__name__)}", disable=not progress)
    results: dict[int, dict[str, Any]] = {}
    try:
        if client is not None:
            from distributed import as_completed as dask_completed

            # hash=False: a key of its own, so a sweep right after another on the same data never finds the key
            # its predecessor is releasing ("lost dependencies")
            [data_future] = client.scatter([df], broadcast=True, hash=False)
            futures = [client.submit(_dask_task, i, target, cfg, backtest_kwargs, data_future, token, pure=False)
                       for i, cfg in enumerate(configs)]
            for fut in dask_completed(futures):
                i, row = fut.result()
                results[i] = row
                bar.update(1)
        elif processes == 1 or len(configs) == 1:
            from .vectorized import ArrayCache

            cache = ArrayCache.for_frame(df) if token else None  # local: freed when the sweep returns
            for i, cfg in enumerate(configs):
                results[i] = _run_one(target, df, cfg, backtest_kwargs, cache)
                bar.update(1)
        else:
            workers = min(processes or os.cpu_count() or 1, len(configs))
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(df,)) as pool:
                futs = [pool.submit(_pool_task, i, target, cfg, backtest_kwargs, token)
                        for i, cfg in enumerate(configs)]
                for fut in as_completed(futs):
                    i, row = fut.result()
                    results[i] = row
                    bar.update(1)
    finally:
        bar.close()
    rows = [{**points[i], **results[i]} for i in range(len(configs))]
    return pd.DataFrame(rows)
