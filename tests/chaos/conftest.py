"""Chaos fixtures: ``world`` (a trading simulator + engine in a fresh TRADEBAAS_HOME, torn down after the test) and
``rng`` (seeded from ``CHAOS_SEED``, printed, so a failing run can be repeated)."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chaos import settings
from tests.chaos.report import emit
from tests.chaos.world import World
from tradebaas.home import Home


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    seed = settings.SEED ^ zlib.crc32(request.node.name.encode())  # (str hash() differs per process)
    emit("start", test=request.node.name, seed=settings.SEED, full=settings.FULL)
    return random.Random(seed)


@pytest.fixture
def make_world(make_home: Callable[[str], Home]) -> Iterator[Callable[..., World]]:
    """Factory: ``world = make_world(speed=300)`` -> a World whose strategies are not started yet."""
    worlds: list[World] = []

    def make(speed: float = settings.SPEED, **kwargs: Any) -> World:
        world = World(make_home(f"w{len(worlds)}"), speed, **kwargs)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    """A world trading: Razor on one perpetual, ema_cross on the other."""
    w = make_world()
    w.start_strategies()
    w.wait_trading(fills=2, timeout=120)
    return w


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "chaos: chaos, fault, fuzz and soak runs (tests/chaos; full counts: make chaos)")
