"""RPC fuzzing against a real engine over a real socket while it trades: every frame gets exactly its answer (one,
or none only for a valid notification or a batch of only valid notifications), hostile or not, and the engine is
alive and answering afterwards.

Frames: hypothesis-generated JSON-RPC-ish frames (the engine's own method names with their parameter names and
hostile values, JSON values, batches, NaN/huge numbers, deep nesting, text, raw bytes; the oracle and the frame
shapes of ``tests/unit/test_rpc_server_frames.py``), then seeded raw bytes (random bytes, and valid requests with
bytes flipped). Two connections take turns: one with the full token, one with the read-only token, on which no
trade method may ever answer a result (token roles under fuzz).

The full-token connection never names two methods, so the run stays one engine and bounded in time:
``engine.shutdown`` (it would end the run; the read-only connection sends it, and it must be refused),
and ``strategy.deploy`` (a vetting child process per call); and no frame names a real strategy for ``strategy.start``
(each would start one more trading strategy; real strategy *ids* are drawn, so stop, resume, set and compare reach
their handlers). Everything else, ``risk.kill`` and ``engine.reconcile`` included, is fair.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.chaos import settings
from tests.chaos.report import emit
from tests.chaos.world import World
from tests.unit.test_rpc_server_frames import (
    _strict,
    check_answer,
    deep,
    expected_answers,
    json_values,
    numbers,
)
from tradebaas.connection import read_connection_file
from tradebaas.engine.api import METHODS
from tradebaas.rpc.protocol import MAX_NESTING, nested_deeper_than

TRADE_METHODS = {m.name for m in METHODS if m.access.value == "trade"}
NEVER_ON_FULL = {"engine.shutdown", "strategy.deploy"}


def frames_for(methods: list[str], ids: list[str]) -> st.SearchStrategy[str | bytes]:
    """JSON-RPC-ish frames aimed at ``methods``: their real parameter names with hostile values, real ids mixed
    in (so handlers get past "unknown id" now and then), plus the generic hostile shapes."""
    param_names = sorted({p for m in METHODS for p in m.params} | {"value", "channels"})
    values = json_values | st.sampled_from(ids + ["razor-000000", "", "x" * 300]) | st.sampled_from(
        ["*", "log", "strategy.*", "orders", "trades", "ticker.BTC-PERPETUAL", "engine"]).map(lambda c: [c])
    method = st.sampled_from(methods) | st.sampled_from(["nope", "", "rpc.x", "engine.", "ENGINE.PING"]) | json_values
    params = st.dictionaries(st.sampled_from(param_names), values, max_size=4) | json_values
    request = st.fixed_dictionaries({}, optional={
        "jsonrpc": st.just("2.0") | json_values, "id": st.integers() | st.text(max_size=10) | st.none() | json_values,
        "method": method, "params": params})
    well_formed = st.builds(lambda m, p, i: {"jsonrpc": "2.0", "id": i, "method": m, "params": p},
                            st.sampled_from(methods), st.dictionaries(st.sampled_from(param_names), values, max_size=4),
                            st.integers(0, 10**9))
    notification = st.builds(lambda m, p: {"jsonrpc": "2.0", "method": m, "params": p}, st.sampled_from(methods),
                             st.dictionaries(st.sampled_from(param_names), values, max_size=3))
    members = request | well_formed | notification | json_values
    templates = st.sampled_from([
        '{{"jsonrpc":"2.0","id":{n},"method":"engine.ping"}}',
        '{{"jsonrpc":"2.0","id":1,"method":"trades.list","params":{{"since":{n}}}}}',
        '{{"jsonrpc":"2.0","method":"engine.log","params":{{"message":"x","level":{n}}}}}',
        '[{{"jsonrpc":"2.0","id":{n},"method":"engine.status"}}]',
    ])
    return st.one_of(
        st.builds(lambda v: json.dumps(v, allow_nan=True), request | well_formed | notification),
        st.builds(lambda v: json.dumps(v, allow_nan=True), st.lists(members, max_size=4)),
        st.builds(lambda v: json.dumps(v, allow_nan=True), json_values),
        st.builds(lambda t, n: t.format(n=n), templates, numbers),
        st.builds(deep, st.integers(MAX_NESTING - 4, MAX_NESTING + 4) | st.integers(1, 6000), st.booleans(),
                  st.booleans()),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
        st.binary(max_size=64),
        st.builds(lambda v: json.dumps(v).encode(), well_formed),
    )


class Fuzzer:
    """Sends frames one at a time on one connection and checks each gets exactly its answers."""

    def __init__(self, url: str, token: str, read_only: bool) -> None:
        self.ws: ClientConnection = ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                               proxy=None, max_size=None, legacy=True)
        self.read_only = read_only
        self.sent = 0
        self.answers = 0
        self.events = 0
        self.results = 0
        self.codes: collections.Counter[int] = collections.Counter()
        self._sentinels = itertools.count(1)

    def exchange(self, frame: str | bytes) -> None:
        """Send ``frame`` and a sentinel ping; read until the sentinel is answered and ``frame`` got what it is
        owed. More answers than owed (now or in a later round), or none within 60 s, fails the test."""
        expected = expected_answers(frame)
        sentinel = f"chaos-sentinel-{next(self._sentinels)}"
        self.ws.send(frame)
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "engine.ping"}))
        self.sent += 1
        got: list[str] = []
        seen_sentinel = False
        while not (seen_sentinel and len(got) >= expected):
            try:
                raw = self.ws.recv(timeout=60)
            except TimeoutError:
                pytest.fail(f"no answer within 60 s to frame {frame[:300]!r} (owed {expected}, got {len(got)})")
            assert isinstance(raw, str), raw
            decoded = json.loads(raw)
            if isinstance(decoded, dict) and decoded.get("id") == sentinel:
                assert decoded.get("result") == "pong", decoded
                seen_sentinel = True
            elif isinstance(decoded, dict) and "id" not in decoded and decoded.get("method") == "event":
                self.events += 1  # a pushed event (the fuzz subscribed to channels): not an answer
            else:
                got.append(raw)
        assert len(got) == expected, (frame[:300], got)
        for answer in got:
            _check(frame, answer)
            self.answers += 1
            for item in (lambda d: d if isinstance(d, list) else [d])(json.loads(answer)):
                if "error" in item:
                    self.codes[int(item["error"]["code"])] += 1
                else:
                    self.results += 1
            if self.read_only:
                self._check_refused(frame, answer)

    @staticmethod
    def _check_refused(frame: str | bytes, answer: str) -> None:
        try:
            msg = _strict(frame)
        except (ValueError, RecursionError):
            return
        if isinstance(msg, dict) and isinstance(msg.get("method"), str) and msg["method"] in TRADE_METHODS:
            assert "result" not in json.loads(answer), f"read-only token ran {msg.get('method')}: {answer[:300]}"

    def close(self) -> None:
        self.ws.close()


def _check(frame: str | bytes, answer: str) -> None:
    """``check_answer`` of the unit test, with one allowance the real engine needs: a request nested deeper than
    ``MAX_NESTING`` may come back with ``id: null``. The engine decodes inside its event loop, deeper in the stack
    than this thread, so Python's JSON decoder can give up (RecursionError) on a frame this thread still reads; the
    id could not be read there, and docs/rpc.md promises it only "when it could be read". The answer must still be
    the one invalid-request error."""
    try:
        msg = _strict(frame)
    except (ValueError, RecursionError):
        msg = None
    if isinstance(msg, dict) and nested_deeper_than(msg, MAX_NESTING):
        decoded = json.loads(answer)
        if isinstance(decoded, dict) and decoded.get("id") is None:
            assert decoded["error"]["code"] == -32600, decoded
            return
    check_answer(frame, answer)


def raw_frames(rng: random.Random, n: int) -> list[str | bytes]:
    """Seeded raw bytes: random byte strings, and valid requests with some bytes flipped (binary and, when still
    UTF-8, text frames)."""
    valid = [json.dumps({"jsonrpc": "2.0", "id": i, "method": m.name, "params": {}}).encode()
             for i, m in enumerate(METHODS) if m.name not in NEVER_ON_FULL | {"strategy.start"}]
    out: list[str | bytes] = []
    for i in range(n):
        if i % 2 == 0:
            out.append(rng.randbytes(rng.randint(0, 200)))
            continue
        frame = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        try:
            out.append(frame.decode("utf-8") if rng.random() < 0.5 else bytes(frame))
        except UnicodeDecodeError:
            out.append(bytes(frame))
    return out


@pytest.mark.timeout(settings.timeout_for(settings.FUZZ_FRAMES, 0.1, base_s=300))
def test_every_fuzzed_frame_is_answered_and_the_engine_lives_on(make_world: Callable[..., World],
                                                                rng: random.Random) -> None:
    world = make_world()
    world.start_strategies()
    info = read_connection_file(world.home)
    assert info is not None and info.readonly_token
    ids = [s.sid for s in world.slots]
    full = Fuzzer(info.url, info.token, read_only=False)
    readonly = Fuzzer(info.url, info.readonly_token, read_only=True)
    full_methods = [m.name for m in METHODS if m.name not in NEVER_ON_FULL]
    all_methods = [m.name for m in METHODS]
    n_hypothesis = settings.FUZZ_FRAMES * 4 // 5
    n_raw = settings.FUZZ_FRAMES - n_hypothesis
    full_frames, readonly_frames = frames_for(full_methods, ids), frames_for(all_methods, ids)

    @hsettings(max_examples=n_hypothesis, deadline=None, database=None, derandomize=False,
               suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        on_full = data.draw(st.integers(0, 2), label="connection") != 0  # two frames in three on the full token
        frame = data.draw(full_frames if on_full else readonly_frames)
        (full if on_full else readonly).exchange(frame)

    try:
        for f in (full, readonly):  # events flow between the answers the whole time
            f.exchange('{"jsonrpc":"2.0","id":"subscribe-all","method":"subscribe","params":{"channels":["*"]}}')
        fuzz()
        for i, frame in enumerate(raw_frames(rng, n_raw)):
            (full if i % 3 else readonly).exchange(frame)
        sent = full.sent + readonly.sent
        for f in (full, readonly):  # nothing owed arrives late: one last sentinel each, nothing before it
            f.exchange('{"jsonrpc":"2.0","method":"engine.ping"}')
    finally:
        full.close()
        readonly.close()

    assert world.eng is not None and world.eng.alive(), "the engine died under fuzzing"
    status = world.client.call("engine.status")
    assert status["health"] == "ok" and world.client.call("engine.ping") == "pong"
    log = (world.home.logs_dir / "engine.log").read_text(errors="replace")
    assert "RPC dispatch failed" not in log, "dispatch raised (the client got an internal error instead of a bug fix)"
    codes = full.codes + readonly.codes
    emit("fuzz", frames=sent, hypothesis=n_hypothesis, raw=n_raw, answers=full.answers + readonly.answers,
         results=full.results + readonly.results,
         events=full.events + readonly.events, error_codes=dict(sorted(codes.items())),
         read_only_frames=readonly.sent - 1, engine_alive=True)
    assert sent >= settings.FUZZ_FRAMES * 0.95, f"only {sent} frames were sent"

