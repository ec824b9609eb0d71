"""The simulator's append-only journal file: checksummed records, written in groups with one ``write(2)``.

Why a plain file and not SQLite: the simulator only ever appends and reads everything back at start; a record is
``length | crc32 | payload``. ``append`` only buffers; ``flush`` writes everything buffered with one ``os.write``
(a few µs however many records: group commit), and what ``write`` returned is in the kernel's page cache, so it
survives a SIGKILL of the process. ``sync`` (``fsync``) makes it survive a power cut as well. The caller
(``durable``) decides when to flush (before anything reporting a record leaves) and when to pay for a sync.

Reading (``read_log``) stops at a torn tail: a last record cut short, or one whose checksum fails and that reaches
the end of the file (what a crash during its ``write`` or a power cut leaves). Such a record was never
acknowledged (``durable`` answers only after ``flush`` returned), so dropping it loses nothing; ``AppendLog``
cuts it off before appending. A bad record followed by more data is corruption, reported, never skipped.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"TBSJRNL1"
_HEAD = struct.Struct("<II")  # payload length, crc32 of the payload
MAX_RECORD = 1 << 30


class JournalCorrupt(ValueError):
    """The journal has a damaged record in its middle (not a torn tail): refuse rather than guess."""


@dataclass(slots=True)
class LogContents:
    records: list[bytes]
    #: bytes of valid data (magic + whole records); the torn tail, if any, starts here
    good_bytes: int
    torn_bytes: int


def read_log(path: Path) -> LogContents:
    """The records of ``path`` in order (none when it does not exist or is empty), and where a torn tail starts."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LogContents([], 0, 0)
    if not data:
        return LogContents([], 0, 0)
    if not data.startswith(MAGIC):
        if len(data) < len(MAGIC) and MAGIC.startswith(data):  # the magic itself torn
            return LogContents([], 0, len(data))
        raise JournalCorrupt(f"{path} is not a simulator journal")
    records: list[bytes] = []
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        if end - pos < _HEAD.size:
            break
        length, crc = _HEAD.unpack_from(data, pos)
        stop = pos + _HEAD.size + length
        if length == 0 and not any(data[pos:]):  # zeros after a power cut: the file grew, the data never came
            break
        if stop > end:
            break
        payload = data[pos + _HEAD.size:stop]
        if length > MAX_RECORD or zlib.crc32(payload) != crc:
            if stop >= end:
                break
            raise JournalCorrupt(f"{path}: damaged record at byte {pos} followed by {end - stop} more bytes")
        records.append(payload)
        pos = stop
    return LogContents(records, pos, end - pos)


class AppendLog:
    """Appends records to a journal file (0600), after cutting off a torn tail found by ``read_log``."""

    def __init__(self, path: Path, good_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if good_bytes is None:
            good_bytes = read_log(path).good_bytes
        if os.fstat(self._fd).st_size != good_bytes:
            os.ftruncate(self._fd, good_bytes)
        self.size = good_bytes  # bytes in the file, and buffered for it
        self._buf: list[bytes] = []
        if good_bytes == 0:
            self._buf.append(MAGIC)
            self.size += len(MAGIC)
            self.flush()

    @property
    def buffered(self) -> bool:
        """Records appended but not yet written (lost if the process dies now: nothing may report them yet)."""
        return bool(self._buf)

    def append(self, payload: bytes) -> None:
        """Buffer one record (``flush`` writes it)."""
        self._buf.append(_HEAD.pack(len(payload), zlib.crc32(payload)))
        self._buf.append(payload)
        self.size += _HEAD.size + len(payload)

    def flush(self) -> None:
        """Write every buffered record; on return they survive the death of this process (not a power cut)."""
        if not self._buf:
            return
        view = memoryview(b"".join(self._buf))
        self._buf.clear()
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def sync(self) -> None:
        """``flush``, then ``fsync``: what was appended survives a power cut too."""
        self.flush()
        os.fsync(self._fd)

    def reset(self) -> None:
        """Empty the journal (its records, buffered ones included, are in a durable snapshot now)."""
        self._buf.clear()
        os.ftruncate(self._fd, 0)
        self._buf.append(MAGIC)
        self.size = len(MAGIC)
        self.flush()

    @property
    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1
