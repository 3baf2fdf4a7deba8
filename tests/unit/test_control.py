"""The control socket server (driven by a select loop in a thread) and `mailforge status`."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import stat
import threading
import time
from types import SimpleNamespace

import pytest

from mailforge.errors import MailforgeError
from mailforge.process import control

STATUS = {
    "pid": 100, "uptime": 3725.0, "generation": 2, "stopping": False, "implementation": "python",
    "queue": {"length": 1, "flow": {
        "state": "delaying", "since": 75.0, "messages": 1, "bytes": 3 * 1024 * 1024,
        "max_messages": 100000, "max_bytes": 2 * 1024 ** 3, "in_flow_delay": 1.0,
        "in_flow_backlog": 1000}},
    "ratekeeper": {"state": "running", "pid": 101, "uptime": 3725.0, "abuse": None},
    "services": {"smtp": {
        "listen": [{"address": "127.0.0.1:2525", "fd": 5}],
        "workers": [{"pid": 102, "slot": 0, "generation": 2, "uptime": 12.0, "retiring": False},
                    {"pid": 99, "slot": 0, "generation": 1, "uptime": 3725.0, "retiring": True}],
        "connections": 3, "ips": 1, "refused": {"per_ip": 2},
    }},
    "delivery": [{"pid": 103, "slot": 0, "generation": 2, "uptime": 12.0, "retiring": False,
                  "storage_backoff": 8.0}],
}


@pytest.fixture
def served(tmp_path):
    """A ControlServer answering `status` with STATUS, its loop pumped by a thread."""
    path = tmp_path / "control.sock"
    selector = selectors.DefaultSelector()
    server = control.ControlServer(path, selector, {"status": lambda: dict(STATUS), "boom": lambda: 1 / 0})
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.02):
                key.data()
            server.expire(time.monotonic())

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(path=path, server=server, config=SimpleNamespace(control_socket=path))
    finally:
        stop.set()
        thread.join()
        server.close()
        selector.close()


def test_request_gets_the_handler_answer_on_a_private_socket(served):
    assert stat.S_IMODE(os.stat(served.path).st_mode) == 0o600
    answer = control.request(served.path, "status")
    assert answer == {"ok": True, **STATUS}


def test_unknown_command_and_failing_handler_answer_ok_false(served):
    unknown = control.request(served.path, "reboot")
    assert unknown["ok"] is False and "status" in unknown["error"]
    failed = control.request(served.path, "boom")
    assert failed["ok"] is False and "division by zero" in failed["error"]


def test_a_silent_client_blocks_nobody_and_is_dropped(served):
    with socket.socket(socket.AF_UNIX) as stuck:
        stuck.connect(str(served.path))
        started = time.monotonic()
        assert control.request(served.path, "status", timeout=0.5)["ok"]
        assert time.monotonic() - started < 0.5
        stuck.settimeout(control.REQUEST_TIMEOUT + 1.0)
        assert stuck.recv(100) == b""  # closed by the server once its time was up


def test_close_removes_the_socket_file(tmp_path):
    path = tmp_path / "control.sock"
    with selectors.DefaultSelector() as selector:
        control.ControlServer(path, selector, {}).close()
    assert not path.exists()


def test_status_prints_a_table(served, capsys):
    assert control.status(argparse.Namespace(json=False), served.config) == 0
    out = capsys.readouterr().out
    assert "supervisor   pid 100  up 1h02m  generation 2  implementation python" in out
    assert "queue        1 message" in out and "rate-keeper  running  pid 101" in out
    assert "smtp         127.0.0.1:2525  3 connections from 1 IP, 2 refused" in out
    assert "pid 102" in out and "pid 99" in out and "(retiring)" in out
    assert "delivery     1 worker\n" in out and "pid 103" in out
    assert ("queue flow   delaying each MAIL 1 s (queue growing) for 1m15s; limits 100000 "
            "messages, 2.0 GiB, 3.0 MiB queued") in out
    assert "storage error: paused 8 s" in out


def test_status_json_prints_the_raw_answer(served, capsys):
    assert control.status(argparse.Namespace(json=True), served.config) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, **STATUS}


def test_status_when_not_running_is_one_line_and_exit_1(tmp_path, capsys):
    config = SimpleNamespace(control_socket=tmp_path / "control.sock")
    with pytest.raises(MailforgeError, match="^not running") as failed:
        control.status(argparse.Namespace(json=False), config)
    assert failed.value.exit_code == 1 and "\n" not in str(failed.value)
    assert capsys.readouterr().out == ""


def test_format_status_without_rate_keeper_counters():
    answer = {**STATUS, "ratekeeper": {"state": "restarting", "pid": None, "uptime": None},
              "queue": {**STATUS["queue"], "length": None},
              "services": {"smtp": {**STATUS["services"]["smtp"], "connections": None, "ips": None}}}
    text = control.format_status(answer)
    assert "rate-keeper  restarting" in text and "connections unknown" in text and "? messages" in text


def test_register_adds_status_with_json_flag():
    parser = argparse.ArgumentParser()
    control.register(parser.add_subparsers())
    args = parser.parse_args(["status", "--json"])
    assert args.json is True and args.handler is control.status


def test_a_command_gets_its_arguments_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "control.sock"
    selector = selectors.DefaultSelector()

    def unblock(address: str | None = None) -> dict:
        if address == "192.0.2.9":
            raise control.CommandFailed("192.0.2.9 is busy")
        return {"lifted": [address]}

    server = control.ControlServer(path, selector, {"unblock": unblock})
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.02):
                key.data()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        assert control.request(path, "unblock", address="192.0.2.7") == {"ok": True, "lifted": ["192.0.2.7"]}
        assert control.request(path, "unblock") == {"ok": True, "lifted": [None]}
        wrong = control.request(path, "unblock", host="x")
        assert wrong["ok"] is False and "bad arguments" in wrong["error"]
        assert control.request(path, "unblock", address="192.0.2.9") == {"ok": False, "error": "192.0.2.9 is busy"}
    finally:
        stop.set()
        thread.join()
        server.close()
        selector.close()


def test_status_shows_how_many_addresses_are_blocked():
    answer = {**STATUS, "ratekeeper": {**STATUS["ratekeeper"], "abuse": {"blocked_now": 2, "blocks": 5}}}
    assert "abuse        2 addresses blocked now" in control.format_status(answer)
    assert "abuse " not in control.format_status(STATUS)  # the rate-keeper did not answer
