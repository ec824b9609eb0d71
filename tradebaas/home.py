"""TRADEBAAS_HOME: the one directory an instance owns, and the paths inside it.

Everything an instance writes lives under its home, so two instances with different homes never interfere (the
tests start many engines side by side this way). The home comes from ``TRADEBAAS_HOME`` or defaults to the
platform's user data dir (``~/.local/share/tradebaas`` on Linux).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "TRADEBAAS_HOME"


def default_root() -> Path:
    """The platform's user data dir for tradebaas (used when TRADEBAAS_HOME is unset)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("tradebaas", appauthor=False))


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """An explicit root wins, then ``TRADEBAAS_HOME``, then the platform default; always absolute."""
    if root is None:
        env = os.environ.get(ENV_VAR, "").strip()
        root = env or default_root()
    return Path(root).expanduser().resolve()


@dataclass(frozen=True, slots=True)
class Home:
    """The paths of one TRADEBAAS_HOME. Creating the directories is explicit (``ensure``): reading never writes."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "tradebaas.toml"

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.sqlite"

    @property
    def engine_json(self) -> Path:
        """The connection file (pid, port, token, version, started_ts_ms), mode 0600, present while running."""
        return self.root / "engine.json"

    @property
    def engine_lock(self) -> Path:
        """Held (fcntl.flock, exclusive) by the running engine for its whole life: one engine per home."""
        return self.root / "engine.lock"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def engine_log(self) -> Path:
        return self.logs_dir / "engine.log"

    @property
    def engine_stdio_log(self) -> Path:
        """Where a detached engine's stdout/stderr go (stray prints, faulthandler dumps); logging uses engine_log."""
        return self.logs_dir / "engine.stdio.log"

    @property
    def sim_log(self) -> Path:
        return self.logs_dir / "sim.log"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def sim_dir(self) -> Path:
        return self.root / "sim"

    @property
    def sim_pid_file(self) -> Path:
        """Written by ``tradebaas up`` when it starts the simulator detached; read by ``tradebaas down``."""
        return self.sim_dir / "sim.pid"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def ensure(self) -> Home:
        """Create the home and its sub-directories (private to the user: the home holds tokens and secrets)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.logs_dir, self.reports_dir, self.sim_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def get_home(root: str | os.PathLike[str] | Home | None = None) -> Home:
    """The Home for ``root`` (or TRADEBAAS_HOME, or the default). Does not create anything."""
    if isinstance(root, Home):
        return root
    return Home(resolve_root(root))
