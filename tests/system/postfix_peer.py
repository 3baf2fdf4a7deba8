"""Debian's Postfix as a peer MX on loopback: an independent MTA that receives what we relay
and stores it in a Maildir, for interop tests (after /work/shared/anchors/setup_postfix.sh).

Its own config, queue and mail in a temp directory, SMTP on a high port, nothing relayed
onward; stopped by the master's pid. Postfix's `postfix start` is reserved for the superuser
and its daemons run as the `postfix` account, so `start` raises PostfixUnavailable elsewhere
(the tests skip).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import free_port

POSTFIX = "/usr/sbin/postfix"
START_TIMEOUT = 20.0

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix is not installed, or cannot be started by this user."""


class PostfixPeer:
    """Postfix accepting mail for `domain` on 127.0.0.1:`port` into one Maildir."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to the test user, and Postfix's
        # daemons (the `postfix` account) must reach their queue and the Maildir.
        self.root = Path(tempfile.mkdtemp(prefix="mailforge-postfix-"))
        self.root.chmod(0o755)
        self.maildir = self.root / "vmail" / "inbox"
        self._conf = self.root / "conf"

    @property
    def address(self) -> str:
        """What [delivery] mx_override takes."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if not os.path.exists(POSTFIX):
            raise PostfixUnavailable("postfix is not installed")
        if os.getuid() != 0:
            raise PostfixUnavailable("postfix start is reserved for the superuser")
        self._configure()
        started = subprocess.run([POSTFIX, "-c", str(self._conf), "start"],
                                 capture_output=True, text=True, timeout=60)
        if started.returncode != 0:
            raise PostfixUnavailable(started.stderr.strip() or started.stdout.strip())
        deadline = time.monotonic() + START_TIMEOUT
        while self._master_pid() is None:
            if time.monotonic() > deadline:
                raise PostfixUnavailable("postfix master did not write its pid")
            time.sleep(0.1)

    def stored(self) -> list[bytes]:
        """The messages Postfix delivered, as stored."""
        new = self.maildir / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.is_dir() else []

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        pid = self._master_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the master stops its daemons
            deadline = time.monotonic() + START_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def _master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _configure(self) -> None:
        owner = pwd.getpwnam("postfix")
        for name in ("conf", "queue", "data", "vmail"):
            (self.root / name).mkdir(mode=0o755)
        for name in ("data", "vmail"):
            os.chown(self.root / name, owner.pw_uid, owner.pw_gid)
        (self._conf / "main.cf").write_text(_main_cf(self.root, self.domain, owner))
        (self._conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self._conf / "vmailbox").write_text(f"@{self.domain} inbox/\n")
        subprocess.run(["postmap", "-c", str(self._conf), str(self._conf / "vmailbox")],
                       check=True, capture_output=True, timeout=60)


def _main_cf(root: Path, domain: str, owner: pwd.struct_passwd) -> str:
    return f"""\
compatibility_level = 3.6
myhostname = peer.{domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
queue_directory = {root}/queue
data_directory = {root}/data
meta_directory = /etc/postfix
maillog_file_prefixes = {root}
maillog_file = {root}/postfix.log
default_transport = error:nothing leaves this test instance
relay_transport = error:nothing leaves this test instance
disable_dns_lookups = yes
smtp_host_lookup = native
biff = no
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/vmail
virtual_mailbox_maps = hash:{root}/conf/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
