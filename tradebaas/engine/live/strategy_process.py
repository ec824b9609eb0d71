"""A strategy that is not built into tradebaas decides in a process of its own (issue 15: one slow strategy does
not raise the others' latency).

Why a process and not a thread: a strategy computing in pure Python holds the interpreter's lock, and every time
the engine's loop wants it back it waits up to the switch interval; with a deployed strategy spinning 300 ms per
candle in a thread, the other strategies' tick-to-decision p99 went from ~20 ms to 78-157 ms. In a process of its
own the strategy shares nothing with the engine but a pipe, runs at a lower CPU priority (``NICENESS``: on a
loaded machine the engine's order path goes first), and a decision over its hard budget ends with the process
killed — a thread could only be abandoned, still computing.

The two sides speak length-prefixed pickles over the child's stdin and a copy of its stdout (whatever the strategy
prints goes to stderr, which the child shares with the engine). One request, one answer, in order:

``("start", class_ref, config, candles, context)``
    a new instance of the class, warmed up on ``candles`` (``context.warming_up`` set), then ``on_start``;
``("decide", candle, context)``
    ``on_candle``; the answer is its return value.

Answers are ``("ok", value)`` or ``("raised", type name, message, traceback)``. ``context`` is the engine's
``StrategyContext``, sent as it is at the moment of the request: what the strategy does to it stays in the child,
as with the copy a thread decided on before. The child exits when its stdin closes and is killed with the engine
(``PR_SET_PDEATHSIG``), so an engine killed with SIGKILL leaves no strategy process behind. A child lost for any
reason (killed at its budget, crashed, a request cancelled half-way) is replaced by a fresh one that is warmed up
on the runner's history before its next decision, the way a restart of the engine warms a strategy up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import Any, BinaryIO

from tradebaas.processes import kill_group
from tradebaas.strategies.base import started_instance
from tradebaas.strategies.loader import load_class

#: Added to the child's nice value: the engine (order path, protection, other strategies) goes first when the CPU
#: is short; on an idle core it makes no difference.
NICENESS = 10
#: An answer larger than this is refused (a decision is a few kB; a runaway strategy must not fill the engine).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1

ClassRef = tuple[str, ...]


class ProcessLost(Exception):
    """The strategy's process ended or broke the protocol; ``reason`` says how, for the strategy's error."""


class StrategyRaised(Exception):
    """The strategy's code raised in its process; carries the exception's type name, message and traceback."""

    def __init__(self, type_name: str, message: str, details: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.details = details


def class_ref(cls: type) -> ClassRef:
    """How the child gets ``cls``: from the source it was loaded from (deployed and home-folder strategies,
    ``loader.load_class`` keeps it on the class) or by importing its module (installed packages)."""
    source = getattr(cls, "__tradebaas_source__", None)
    if source is not None:
        return ("source", *source)
    return ("import", cls.__module__, cls.__qualname__)


def resolve_class(ref: ClassRef) -> type:
    if ref[0] == "source":
        _, source, module_name, filename, class_name = ref
        return load_class(source, module_name, filename, class_name)
    _, module_name, qualname = ref
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# --- the engine's side ----------------------------------------------------------------------------------------------
class StrategyProcess:
    """The child process of one strategy runner. ``call`` is not re-entrant: the runner asks one thing at a time."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._proc: asyncio.subprocess.Process | None = None
        self._reaping: set[asyncio.Task[int]] = set()
        #: Whether the current child holds a started instance (after a successful ``start``).
        self.started = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self, ref: ClassRef, config: dict[str, Any], candles: list[Any], context: Any) -> None:
        """A new instance, warmed up on ``candles``: in the running child (it replaces the one it had: a swap of
        code or config costs no process start in the decision's path), or in a fresh child when there is none."""
        self.started = False
        await self._call(("start", ref, config, candles, context))
        self.started = True

    async def prepare(self) -> None:
        """Start the child now if there is none (a Python start: ~0.1-0.3 s), so that a later ``start`` finds it
        running; a failure here is left for that ``start`` to report."""
        if self._proc is None:
            with contextlib.suppress(ProcessLost):
                await self._spawn()

    async def decide(self, candle: Any, context: Any) -> Any:
        return await self._call(("decide", candle, context))

    async def _call(self, request: tuple[Any, ...]) -> Any:
        """Send ``request`` and read its answer. Any failure on the way (cancellation and timeouts included) kills
        the child: its answer would otherwise arrive as the answer to the next request."""
        try:
            proc = await self._spawn() if self._proc is None else self._proc
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(frame(request))
            await proc.stdin.drain()
            size = _LENGTH.unpack(await proc.stdout.readexactly(_LENGTH.size))[0]
            if size > MAX_ANSWER_BYTES:
                raise ProcessLost(f"its answer of {size} bytes is over the limit of {MAX_ANSWER_BYTES}")
            answer = pickle.loads(await proc.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError) as exc:
            status = await self._ended()
            raise ProcessLost(f"its process {status}") from exc
        except BaseException:
            self.kill()
            raise
        if answer[0] == "ok":
            return answer[1]
        if answer[0] == "raised":
            raise StrategyRaised(*answer[1:])
        self.kill()
        raise ProcessLost(str(answer[1]))

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.started = False
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradebaas.engine.live.strategy_process", self.label,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
                limit=MAX_ANSWER_BYTES)
        except OSError as exc:
            raise ProcessLost(f"it could not be started: {exc}") from exc
        return self._proc

    async def _ended(self) -> str:
        """How the child ended (it is reaped; killed if it still runs)."""
        proc, self._proc, self.started = self._proc, None, False
        if proc is None:
            return "is gone"
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                await proc.wait()
        if proc.returncode is None:
            kill_group(proc.pid)
            await proc.wait()
        rc = proc.returncode
        return f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with status {rc}"

    def kill(self) -> None:
        """End the child now (its process group: whatever the strategy started goes with it); it is reaped in the
        background (``aclose`` waits for that). The next call starts a fresh child."""
        proc, self._proc, self.started = self._proc, None, False
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.returncode is None:
                kill_group(proc.pid)
            reaper = asyncio.get_running_loop().create_task(proc.wait(), name=f"reap strategy {self.label}")
            self._reaping.add(reaper)
            reaper.add_done_callback(self._reaping.discard)

    async def aclose(self) -> None:
        """End the child and wait until every child this object started is reaped (at the engine's stop)."""
        self.kill()
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


# --- the child's side -----------------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """SIGKILL when the engine ends, however it ends (Linux; elsewhere the closed stdin ends the child)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the engine died before the line above ran
        os._exit(0)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until ``requests`` ends."""
    strategy: Any = None
    while (head := _read_exactly(requests, _LENGTH.size)) is not None:
        body = _read_exactly(requests, _LENGTH.unpack(head)[0])
        if body is None:
            return
        try:
            request = pickle.loads(body)
            if request[0] == "start":
                _, ref, config, candles, context = request
                strategy = started_instance(resolve_class(ref), config, candles, context)
                answer: tuple[Any, ...] = ("ok", None)
            elif strategy is None:
                answer = ("lost", "a decision was asked before the strategy was started")
            else:
                answer = ("ok", strategy.on_candle(request[1], request[2]))
            data = frame(answer)
        except Exception as exc:
            data = frame(("raised", type(exc).__name__, str(exc), "".join(traceback.format_exception(exc))))
        answers.write(data)
        answers.flush()


def main() -> int:
    """``python -m tradebaas.engine.live.strategy_process <label>`` (started by ``StrategyProcess``)."""
    _die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the strategy's prints, even from C code, go to stderr
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the engine; the engine ends the child
    serve(sys.stdin.buffer, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
