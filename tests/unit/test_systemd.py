"""The systemd unit and the sd_notify protocol, checked without systemd (a real datagram socket stands in)."""

from __future__ import annotations

import socket
from pathlib import Path

from tradebaas.engine.process import systemd as service


def test_unit_restarts_always_with_watchdog_and_notify(tmp_path: Path) -> None:
    text = service.render_unit(python="/opt/venv/bin/python", home=tmp_path, exchange="sim", user_mode=True)
    assert "Type=notify" in text
    assert "Restart=always" in text
    assert f"WatchdogSec={service.WATCHDOG_SEC}" in text
    assert f"Environment=TRADEBAAS_HOME={tmp_path}" in text
    assert "ExecStart=/opt/venv/bin/python -m tradebaas.cli engine start --foreground --exchange sim" in text
    assert f"ReadWritePaths={tmp_path}" in text
    assert "NoNewPrivileges=true" in text
    assert "WantedBy=default.target" in text
    assert "User=" not in text


def test_system_unit_names_the_user_and_multi_user_target(tmp_path: Path) -> None:
    text = service.render_unit(python="/usr/bin/python3", home=tmp_path, exchange="deribit", user_mode=False, user="trader")
    assert "User=trader" in text
    assert "WantedBy=multi-user.target" in text


def test_install_writes_the_unit_where_asked(tmp_path: Path) -> None:
    target = service.install(home=tmp_path / "home", exchange="sim", user_mode=True, path=tmp_path / "unit.service")
    assert target.read_text().startswith("[Unit]")


def test_sd_notify_sends_the_state_to_the_notify_socket(tmp_path: Path, monkeypatch) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert service.sd_notify("READY=1")
        assert server.recv(64) == b"READY=1"


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.sd_notify("WATCHDOG=1") is False


def test_watchdog_interval_is_half_the_period(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert service.watchdog_interval_s() == 15.0
