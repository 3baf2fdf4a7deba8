"""The supervisor, run for real in a subprocess with stand-in children (supervisor_helpers)."""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailforge.process import control
from mailforge.config import from_dict, load
from mailforge.errors import ConfigError, MailforgeError
from mailforge.process.supervisor import raise_open_files_limit
from tests.ports import free_port
from tests.unit.supervisor_helpers import DRIVER, EVENTS

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, ports: list[int], workers: int = 2, worker_timeout: float = 30.0,
                 reuse_port: bool = False) -> None:
    listen = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    path.write_text(f"""
[server]
hostname = "mail.example.test"
data_dir = "data"
grace_period = 2.0
worker_timeout = {worker_timeout}

[smtp]
listen = [{listen}]
workers = {workers}
reuse_port = {str(reuse_port).lower()}

[delivery]
workers = 1

[metrics]
listen = ""
""")


def wait_for(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    return predicate()


class Running:
    """One supervisor subprocess; stdout/stderr go to files so no pipe can fill up."""

    def __init__(self, tmp_path: Path, worker: str, name: str = "supervisor") -> None:
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "mailforge.toml"
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        # REPO for `tests`; the caller's path first, so that a worktree runs its own mailforge
        # rather than the one an editable install points at.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
        with open(self.out, "w") as out, open(self.err, "w") as err:
            # cwd is the temp dir: a stray core file must not land in the repository.
            self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(self.config_path), worker],
                                         cwd=tmp_path, env=env, stdout=out, stderr=err)

    @functools.cached_property
    def config(self):
        # Read once: the tests rewrite the file (even break it) to exercise reloads.
        return load(self.config_path)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_ready(self, timeout: float = 10.0) -> None:
        if not wait_for(lambda: "mailforge: ready" in self.stdout() or self.proc.poll() is not None, timeout):
            raise AssertionError(f"supervisor not ready:\n{self.stderr()}")
        assert "mailforge: ready" in self.stdout(), self.stderr()

    def status(self) -> dict:
        return control.request(self.config.control_socket, "status")

    def worker_pids(self) -> set[int]:
        return {w["pid"] for w in self.status()["services"]["smtp"]["workers"] if not w["retiring"]}

    def events(self, kind: str | None = None) -> list[int]:
        """Pids that recorded `kind` (all of them by default), in order."""
        path = self.config.data_dir / EVENTS
        records = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
        return [int(pid) for what, pid in records if kind in (None, what)]

    def kill_all(self) -> None:
        """Kill the supervisor and every stand-in it started, by pid; only our own processes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pid in self.events():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"supervisor_helpers" in cmdline:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start(tmp_path):
    started: list[Running] = []

    def _start(worker: str = "echo", name: str = "supervisor") -> Running:
        running = Running(tmp_path, worker, name)
        started.append(running)
        return running

    try:
        yield _start
    finally:
        for running in started:
            running.kill_all()


def read_line(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        return sock.makefile().readline()


def listening_sockets(port: int) -> set[str]:
    """Inodes of the loopback sockets listening on `port` (one per worker with reuse_port)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            found.add(fields[9])
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serves_status_refuses_a_second_copy_and_stops_on_sigterm(tmp_path, start, capsys):
    port = free_port()
    write_config(tmp_path / "mailforge.toml", [port])
    sup = start()
    sup.wait_ready()
    assert f"mailforge: smtp listening on 127.0.0.1:{port} (2 workers)\n" in sup.stdout()
    assert f"mailforge: ready (pid {sup.proc.pid})\n" in sup.stdout()
    assert read_line(port).startswith("smtp ")
    assert stat.S_IMODE(os.stat(sup.config.control_socket).st_mode) == 0o600

    status = wait_for(lambda: len(sup.status()["delivery"]) == 1 and sup.status(), 2.0)
    assert status["ok"] and status["pid"] == sup.proc.pid and status["generation"] == 1
    assert status["queue"]["length"] == 7 and status["implementation"] in ("python", "cython")
    assert status["ratekeeper"]["pid"] in sup.events("ratekeeper")
    smtp = status["services"]["smtp"]
    assert [entry["address"] for entry in smtp["listen"]] == [f"127.0.0.1:{port}"]
    assert (smtp["connections"], smtp["ips"], smtp["refused"]) == (3, 2, {"per_ip": 1})
    assert sorted(w["slot"] for w in smtp["workers"]) == [0, 1]
    assert all(w["uptime"] >= 0 and w["pid"] in sup.events("worker") for w in smtp["workers"])
    assert sup.events("recover") == [sup.proc.pid]

    assert control.status(argparse.Namespace(json=False), sup.config) == 0
    table = capsys.readouterr().out
    assert f"127.0.0.1:{port}" in table and str(smtp["workers"][0]["pid"]) in table

    second = start(name="second")
    assert second.proc.wait(timeout=10) == 1
    assert "already running" in second.stderr()

    children = [w["pid"] for w in smtp["workers"]] + [status["ratekeeper"]["pid"]]
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(timeout=10) == 0
    assert not any(alive(pid) for pid in children)
    assert not sup.config.control_socket.exists()
    with pytest.raises(MailforgeError, match="not running"):
        control.status(argparse.Namespace(json=False), sup.config)


def test_killed_worker_is_replaced_within_a_second(tmp_path, start):
    write_config(tmp_path / "mailforge.toml", [free_port()])
    sup = start()
    sup.wait_ready()
    before = wait_for(lambda: len(sup.worker_pids()) == 2 and sup.worker_pids(), 2.0)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    after = wait_for(lambda: (pids := sup.worker_pids()) and len(pids) == 2 and victim not in pids and pids, 2.0)
    assert after and time.monotonic() - killed < 1.0
    assert after - before and before - after == {victim}


def test_worker_that_cannot_boot_is_retried_with_backoff(tmp_path, start):
    write_config(tmp_path / "mailforge.toml", [free_port()], workers=1)
    sup = start("boot_fail")
    sup.wait_ready()
    # Backoff 0.5, 1, 2 s: the third failure's line comes after three starts; a tight loop
    # would have made hundreds by then.
    assert wait_for(lambda: "next try in 2.0 s" in sup.stderr(), 10.0), sup.stderr()
    assert len(sup.events("worker")) == 3
    assert "could not boot (status 3); next try in 1.0 s" in sup.stderr()
    assert sup.proc.poll() is None


def test_a_service_whose_only_worker_dies_at_boot_retries_every_second(tmp_path, start):
    """Deaths before the first heartbeat back off, but a service with no worker left is never
    held off for longer than a second, unless its workers say they cannot boot (above)."""
    write_config(tmp_path / "mailforge.toml", [free_port()], workers=1)
    sup = start("crash_at_boot")
    sup.wait_ready()
    # Delays 0.5, 1, 1, 1 s, where doubling would have waited 2 s, then 4 s.
    assert wait_for(lambda: sup.stderr().count("restarting in 1.0 s") >= 3, 10.0), sup.stderr()
    err = sup.stderr()
    assert "exited with status 1 after" in err and "restarting in 0.5 s" in err
    assert "restarting in 2.0 s" not in err


def test_silent_worker_is_aborted_and_replaced(tmp_path, start):
    write_config(tmp_path / "mailforge.toml", [free_port()], workers=1, worker_timeout=1.0)
    sup = start("silent")
    sup.wait_ready()
    first = wait_for(lambda: sup.events("worker"), 2.0)[0]
    assert wait_for(lambda: len(sup.events("worker")) >= 2, 4.0)
    assert not alive(first)
    err = sup.stderr()
    assert f"(pid {first}) silent for" in err and f"(pid {first}) was killed by SIGABRT" in err


def test_sighup_replaces_workers_and_keeps_listening(tmp_path, start):
    port, new_port = free_port(), free_port()
    write_config(tmp_path / "mailforge.toml", [port])
    sup = start()
    sup.wait_ready()
    old_pids = wait_for(lambda: len(sup.worker_pids()) == 2 and sup.worker_pids(), 2.0)
    old_fd = sup.status()["services"]["smtp"]["listen"][0]["fd"]

    write_config(tmp_path / "mailforge.toml", [port, new_port])
    sup.proc.send_signal(signal.SIGHUP)
    answers = [read_line(port) for _ in range(40) if not time.sleep(0.02)]
    assert all(answer.startswith("smtp ") for answer in answers)

    status = wait_for(lambda: (s := sup.status())["generation"] == 2 and
                      len(s["services"]["smtp"]["workers"]) == 2 and s, 5.0)
    assert status, sup.stderr()
    new_pids = {w["pid"] for w in status["services"]["smtp"]["workers"]}
    assert not new_pids & old_pids and not any(alive(pid) for pid in old_pids)
    listen = {entry["address"]: entry["fd"] for entry in status["services"]["smtp"]["listen"]}
    assert listen[f"127.0.0.1:{port}"] == old_fd
    assert read_line(new_port).startswith("smtp ")

    (tmp_path / "mailforge.toml").write_text("[smtp\nbroken")
    sup.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed, still running the previous config" in sup.stderr(), 2.0)
    assert sup.status()["generation"] == 2 and read_line(port).startswith("smtp ")

    # A removed address stops listening: the new generation must not have inherited it.
    write_config(tmp_path / "mailforge.toml", [new_port])
    sup.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: sup.status()["generation"] == 3 and not listening_sockets(port), 5.0)
    assert read_line(new_port).startswith("smtp ")


def test_port_already_taken_exits_2_naming_service_and_address(tmp_path, start):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        write_config(tmp_path / "mailforge.toml", [port])
        sup = start()
        assert sup.proc.wait(timeout=10) == 2
    lines = sup.stderr().strip().splitlines()
    assert lines == [f"mailforge: cannot listen for smtp on 127.0.0.1:{port}: Address already in use"]
    assert sup.events("recover") == [] and sup.events("worker") == []


def test_open_files_soft_limit_is_raised_to_hard():
    import resource

    soft = raise_open_files_limit()
    assert (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]) == (soft, soft)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert soft == hard or hard == resource.RLIM_INFINITY


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drop_privileges_cannot_regain_root():
    script = (
        "import os, json; from mailforge.process import privileges\n"
        "privileges.drop('nobody')\n"
        "try:\n    os.setuid(0); regained = True\nexcept PermissionError:\n    regained = False\n"
        "print(json.dumps([os.getresuid(), os.getresgid(), os.getgroups(), regained]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=10)
    uids, gids, groups, regained = json.loads(out.stdout)
    assert 0 not in uids and 0 not in gids and groups in ([], [gids[0]]) and not regained


def test_children_exit_when_the_supervisor_is_killed(tmp_path, start):
    write_config(tmp_path / "mailforge.toml", [free_port()])
    sup = start()
    sup.wait_ready()
    assert wait_for(lambda: len(sup.events()) >= 5, 5.0)  # recover, rate-keeper, 2 workers, delivery
    children = [pid for pid in sup.events() if pid != sup.proc.pid]
    sup.proc.kill()
    sup.proc.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in children), 5.0)


# ---- reuse_port: each worker its own listening socket ----------------------------------------

def sockets_of(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` has open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def answers_of_a_burst(port: int, count: int) -> collections.Counter[int]:
    """Open `count` connections before reading any greeting: which worker pid greeted how many."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5.0) for _ in range(count)]
    try:
        lines = [conn.makefile().readline() for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert all(line.startswith("smtp ") for line in lines), lines
    return collections.Counter(int(line.split()[1]) for line in lines)


def ready_workers(sup: Running, count: int, generation: int = 1) -> dict[int, int] | None:
    """slot → pid of the serving workers, once `count` of `generation` are ready."""
    workers = [w for w in sup.status()["services"]["smtp"]["workers"]
               if not w["retiring"] and w["ready"] and w["generation"] == generation]
    return {w["slot"]: w["pid"] for w in workers} if len(workers) == count else None


def test_reuse_port_gives_each_worker_its_own_socket_and_spreads_a_burst(tmp_path, start, capsys):
    port = free_port()
    write_config(tmp_path / "mailforge.toml", [port], reuse_port=True)
    sup = start()
    sup.wait_ready()
    assert f"mailforge: smtp listening on 127.0.0.1:{port} (2 workers)\n" in sup.stdout()
    workers = wait_for(lambda: ready_workers(sup, 2), 5.0)
    assert workers, sup.stderr()
    listen = sup.status()["services"]["smtp"]["listen"]
    assert [entry["address"] for entry in listen] == [f"127.0.0.1:{port}"] * 2
    assert len({entry["fd"] for entry in listen}) == 2

    # Each worker holds exactly one of the two listening sockets, not the other's.
    sockets = listening_sockets(port)
    held = [sockets & sockets_of(workers[slot]) for slot in (0, 1)]
    assert len(sockets) == 2 and all(len(one) == 1 for one in held) and held[0] != held[1]

    greeted = answers_of_a_burst(port, 40)
    assert set(greeted) == set(workers.values()) and min(greeted.values()) >= 5, greeted

    assert control.status(argparse.Namespace(json=False), sup.config) == 0
    assert capsys.readouterr().out.count(f"127.0.0.1:{port}") == 1


def test_reuse_port_reload_keeps_each_socket_and_binds_new_slots(tmp_path, start):
    port = free_port()
    write_config(tmp_path / "mailforge.toml", [port], reuse_port=True)
    sup = start()
    sup.wait_ready()
    assert wait_for(lambda: ready_workers(sup, 2), 5.0), sup.stderr()
    before = listening_sockets(port)

    write_config(tmp_path / "mailforge.toml", [port], workers=3, reuse_port=True)
    sup.proc.send_signal(signal.SIGHUP)
    answers = [read_line(port) for _ in range(40) if not time.sleep(0.02)]
    assert all(answer.startswith("smtp ") for answer in answers)
    workers = wait_for(lambda: ready_workers(sup, 3, generation=2), 5.0)
    assert workers, sup.stderr()
    after = listening_sockets(port)
    assert before < after and len(after) == 3
    (third,) = after - before
    assert third in sockets_of(workers[2])
    assert wait_for(lambda: workers[2] in answers_of_a_burst(port, 30), 5.0)

    write_config(tmp_path / "mailforge.toml", [port], workers=2, reuse_port=True)
    sup.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: f"stopped listening on 127.0.0.1:{port} (worker #2's socket)" in sup.stderr(), 5.0)
    assert wait_for(lambda: ready_workers(sup, 2, generation=3), 5.0), sup.stderr()
    assert wait_for(lambda: listening_sockets(port) == before, 5.0)
    assert read_line(port).startswith("smtp ")

    write_config(tmp_path / "mailforge.toml", [port], workers=2)
    sup.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed, still running the previous config: "
                    f"[smtp] reuse_port changed for 127.0.0.1:{port}: that needs a restart"
                    in sup.stderr(), 5.0), sup.stderr()
    assert sup.status()["generation"] == 3 and listening_sockets(port) == before


@pytest.mark.parametrize("holder_reuses_port", [False, True])
def test_reuse_port_refuses_a_port_another_process_listens_on(tmp_path, start, holder_reuses_port):
    """With SO_REUSEPORT set by both, binding would succeed and split the port with a stranger."""
    with socket.socket() as taken:
        if holder_reuses_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        write_config(tmp_path / "mailforge.toml", [port], reuse_port=True)
        sup = start()
        assert sup.proc.wait(timeout=10) == 2
    lines = sup.stderr().strip().splitlines()
    assert lines == [f"mailforge: cannot listen for smtp on 127.0.0.1:{port}: Address already in use"]
    assert sup.events("worker") == []


def test_reuse_port_killed_worker_finds_its_share_waiting(tmp_path, start):
    port = free_port()
    write_config(tmp_path / "mailforge.toml", [port], reuse_port=True)
    sup = start()
    sup.wait_ready()
    workers = wait_for(lambda: ready_workers(sup, 2), 5.0)
    assert workers, sup.stderr()
    own = listening_sockets(port) & sockets_of(workers[0])
    os.kill(workers[0], signal.SIGKILL)
    # Opened while slot 0 has no worker: the kernel still queues its share on slot 0's socket,
    # held by the supervisor, and the replacement greets them.
    greeted = answers_of_a_burst(port, 20)
    replaced = wait_for(lambda: ready_workers(sup, 2), 5.0)
    assert replaced and replaced[0] != workers[0] and replaced[1] == workers[1]
    assert sum(greeted.values()) == 20 and workers[0] not in greeted
    assert sum(answers_of_a_burst(port, 20).values()) == 20
    assert own and own <= sockets_of(replaced[0])


def test_reuse_port_must_be_true_or_false():
    with pytest.raises(ConfigError, match=r"\[imap\] reuse_port.*expected true or false"):
        from_dict({"imap": {"reuse_port": "yes"}})
