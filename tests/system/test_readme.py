"""README's "Trying it", run as written against a real server, so the README cannot rot; and
what it teaches about TLS: curl trusts the certificate `init` made for 127.0.0.1 and
localhost with `--cacert` alone, no `-k`.

The commands are read from README.md between its `trying-it` markers and run with bash in a
directory holding the server's `var/` and a `.venv/bin/mailforge` that runs this checkout;
the only change made to them is the port numbers: the README's defaults become the test
server's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mailforge
from mailforge.config import SERVICE_PORTS

from .conftest import PASSWORD, USER

README = Path(__file__).parents[2] / "README.md"
BEGIN, END = "<!-- trying-it -->", "<!-- /trying-it -->"
# The test server's port for each README default, by the Server attribute that holds it.
PORT_ATTRIBUTES = {"smtp": "port", "submission": "submission_port", "smtps": "smtps_port",
                   "pop3": "pop3_port", "pop3s": "pop3s_port", "imap": "imap_port",
                   "imaps": "imaps_port"}

needs_clients = pytest.mark.skipif(not (shutil.which("swaks") and shutil.which("curl")),
                                   reason="swaks and curl come with `make test-debs`")


def trying_it_commands() -> list[str]:
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    return [line.strip() for line in block.splitlines() if line.startswith("    ")]


def on_test_ports(command: str, server) -> str:
    for service, attribute in PORT_ATTRIBUTES.items():
        command = command.replace(f"127.0.0.1:{SERVICE_PORTS[service]}",
                                  f"127.0.0.1:{getattr(server, attribute)}")
    return command


def fake_venv(root: Path) -> None:
    """`.venv/bin/mailforge` as the README has it, running the mailforge under test (found by
    an absolute path: the commands run elsewhere than the tests)."""
    source = Path(mailforge.__file__).parents[1]
    script = root / ".venv" / "bin" / "mailforge"
    script.parent.mkdir(parents=True)
    script.write_text(f'#!/bin/sh\nPYTHONPATH={source} exec {sys.executable} -m mailforge "$@"\n')
    script.chmod(0o755)


@needs_clients
def test_the_readme_trying_it_commands_work_as_written(make_server, tmp_path):
    commands = trying_it_commands()
    assert len(commands) >= 8, commands
    root = tmp_path / "checkout"
    server = make_server(tls_services=True, pop3_services=True, imap_services=True,
                         root=root, accounts=False)
    fake_venv(root)
    server.start()
    outputs: dict[str, str] = {}
    sent = 0
    for command in commands:
        result = subprocess.run(["bash", "-c", on_test_ports(command, server)], cwd=root,
                                capture_output=True, text=True, timeout=60, env=os.environ)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs[command] = result.stdout
        if command.startswith("swaks"):  # as a person would, before looking for it
            sent += 1
            server.wait_delivered(sent, "alice@example.test")

    def output_of(fragment: str) -> str:
        (output,) = [out for command, out in outputs.items() if fragment in command]
        return output

    assert sent == 2 and len(output_of("ls var/store").split()) == 2
    assert "* SEARCH 1 2" in output_of("INBOX?ALL")
    assert "From: bob@remote.test" in output_of("INBOX;UID=1")
    assert [line.split()[0] for line in output_of("pop3s://").splitlines()] == ["1", "2"]
    smtp_log = output_of("logs --service smtp").splitlines()
    assert smtp_log and all("service=smtp" in line for line in smtp_log)
    assert "smtp" in output_of("status")


@needs_clients
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_curl_trusts_the_init_certificate_for_loopback_over_imaps_and_pop3s(make_server, host):
    """The server's hostname is mx.example.test: only the loopback names let these verify."""
    server = make_server(pop3_services=True, imap_services=True)
    server.start()
    for url in (f"imaps://{host}:{server.imaps_port}/INBOX?ALL", f"pop3s://{host}:{server.pop3s_port}/"):
        result = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", server.ca_file,
                                 "-u", f"{USER}:{PASSWORD}", url],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{url}: {result.stderr}"
