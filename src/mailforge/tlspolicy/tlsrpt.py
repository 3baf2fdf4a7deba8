"""TLS-RPT (RFC 8460): each outbound TLS session's outcome kept per policy domain and day,
and the daily aggregate reports to the domains that publish `_smtp._tls`.

Delivery workers append one JSON line per outcome group to tls-policy/tlsrpt/<day>/<domain>
(O_APPEND, synced after each delivery batch: several workers share the file). A report for a
finished day is built from those lines, gzipped as application/tlsrpt+gzip in a
multipart/report (5.3), and queued as mail to each `rua=mailto:` address, through our own
queue like any other message, or POSTed to each `rua=https:` URI (report_post.py); the day's
file is then renamed *.sent, so each is sent once (kept for the next run when every POST
failed and nothing else took the report).
"""

from __future__ import annotations

import collections
import datetime
import email.message
import email.policy
import email.utils
import gzip
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..addresses import AddressError, normalize_address
from ..config import Config
from ..durable import fsync_dir
from ..queue.envelope import Envelope, encode
from ..queue.spool import ACTIVE, ENV_SUFFIX, MSG_SUFFIX, new_id, write_entry_file
from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError
from .policy import HostSecurity, verifying_context
from .report_post import PostError, post_report

log = logging.getLogger("mailforge.delivery")  # the delivery worker sends them

SENT_SUFFIX = ".sent"
# "<domain>.reached": the URIs that domain's report of the day reached, one a line, so that a
# run after a partial failure sends to the others only (never twice to one address).
REACHED_SUFFIX = ".reached"
# A report an https: URI refused is offered again at each run for this many days after its
# day, then given up (RFC 8460 leaves retries to the sender).
RETRY_DAYS = 3
# RFC 8460 3: at most this many report addresses are honoured per domain; more is abuse.
MAX_RUA = 5


@dataclass(frozen=True)
class Outcome:
    """One group of sessions alike: a policy, and success or one kind of failure."""

    domain: str
    policy_type: str  # "sts", "tlsa" or "no-policy-found"
    policy_string: tuple[str, ...]
    mx_host: tuple[str, ...]
    result: str  # "success" or a TLS-RPT result type
    receiving_mx: str = ""
    receiving_ip: str = ""
    reason: str = ""


def outcome(security: HostSecurity | None, domain: str, result: str, mx: str = "", ip: str = "",
            reason: str = "") -> Outcome:
    if security is None or not security.kind:
        return Outcome(domain, "no-policy-found", (), (), result, mx, ip, reason)
    if security.kind == "dane":
        strings = tuple(f"{t.usage} {t.selector} {t.mtype} {t.data.hex()}" for t in security.tlsa)
        return Outcome(domain, "tlsa", strings, (), result, mx, ip, reason)
    assert security.policy is not None
    return Outcome(domain, "sts", tuple(security.policy.text.splitlines()),
                   tuple(security.policy.mx), result, mx, ip, reason)


class Recorder:
    """Outcomes counted in memory during a delivery batch, written out by flush()."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self._counts: collections.Counter[Outcome] = collections.Counter()

    def add(self, item: Outcome) -> None:
        self._counts[item] += 1

    def flush(self) -> None:
        counts, self._counts = self._counts, collections.Counter()
        if not counts:
            return
        day = self.directory / _day(self.clock())
        day.mkdir(parents=True, exist_ok=True)
        by_domain: dict[str, list[str]] = collections.defaultdict(list)
        for item, count in counts.items():
            by_domain[item.domain].append(json.dumps({**item.__dict__, "count": count}) + "\n")
        for domain, lines in by_domain.items():
            fd = os.open(day / domain, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, "".join(lines).encode())
                os.fdatasync(fd)
            finally:
                os.close(fd)
        fsync_dir(day)


def _day(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d")


def _reached(path: Path) -> set[str]:
    try:
        return set(path.read_text("utf-8").splitlines())
    except FileNotFoundError:
        return set()


def _write_down(path: Path, uri: str) -> None:
    """One more URI reached, on disk before the next is tried (a crash then sends it again
    to none that got it)."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(uri + "\n")
        out.flush()
        os.fsync(out.fileno())


def _results(path: Path) -> list[dict]:
    """A domain's result lines. A crash or a full disk in the middle of an append leaves a
    partial one: skipped, or the day's report would never go (and the delivery worker that
    sends the reports would fail at each start)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            log.warning("TLS-RPT: skipping an unreadable line of %s: %r", path, line[:80])
    return found


def build_report(domain: str, day: str, lines: list[dict], submitter: str, contact: str) -> dict:
    """The aggregate report of one domain's day (RFC 8460 4.4)."""
    policies: dict[tuple, dict] = {}
    for line in lines:
        key = (line["policy_type"], tuple(line["policy_string"]), tuple(line["mx_host"]))
        entry = policies.setdefault(key, {
            "policy": {"policy-type": key[0], "policy-string": list(key[1]),
                       "policy-domain": domain, **({"mx-host": list(key[2])} if key[2] else {})},
            "summary": {"total-successful-session-count": 0, "total-failure-session-count": 0},
            "failure-details": []})
        if line["result"] == "success":
            entry["summary"]["total-successful-session-count"] += line["count"]
            continue
        entry["summary"]["total-failure-session-count"] += line["count"]
        detail = {"result-type": line["result"], "receiving-mx-hostname": line["receiving_mx"],
                  "receiving-ip": line["receiving_ip"], "failure-reason-code": line["reason"]}
        for known in entry["failure-details"]:
            if {k: v for k, v in known.items() if k != "failed-session-count"} == detail:
                known["failed-session-count"] += line["count"]
                break
        else:
            entry["failure-details"].append({**detail, "failed-session-count": line["count"]})
    return {"organization-name": submitter,
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": contact, "report-id": f"{day}.{domain}@{submitter}",
            "policies": list(policies.values())}


def rua_uris(records: list[str]) -> list[str]:
    """The mailto: and https: URIs of the one TLSRPTv1 record (RFC 8460 3); a mailto: URI
    as "mailto:" and its one address, canonical, or left out when it has none."""
    found = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return []
    fields = dict(p.strip().partition("=")[::2] for p in found[0].split(";") if p.strip())
    uris = [u.strip() for u in fields.get("rua", "").split(",")]
    usable = [u if u.lower().startswith("https:") else _mailto(u) for u in uris]
    return [u for u in usable if u][:MAX_RUA]


def _mailto(uri: str) -> str:
    """RFC 6068: the address percent-decoded, its ?header fields dropped; "" for what is not
    one address (the record is the destination's: a line break in it would be a header of
    the report, and an envelope recipient that is no address)."""
    if not uri.lower().startswith("mailto:"):
        return ""
    try:
        return "mailto:" + normalize_address(urllib.parse.unquote(uri[len("mailto:"):].partition("?")[0]))
    except AddressError:
        return ""


def report_body(report: dict) -> bytes:
    """application/tlsrpt+gzip (RFC 8460 5.3): the JSON report, gzipped."""
    return gzip.compress(json.dumps(report).encode())


def report_message(report: dict, domain: str, day: str, sender: str, recipient: str,
                   submitter: str) -> bytes:
    """The report as mail (RFC 8460 5.3), LF line ends as the queue keeps messages."""
    message = email.message.EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain=submitter)
    message["Subject"] = (f"Report Domain: {domain} Submitter: {submitter} "
                          f"Report-ID: <{report['report-id']}>")
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message.set_content(f"TLS report of {submitter} for {domain}, {day} (RFC 8460).\n")
    start = int(datetime.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp())
    message.add_attachment(
        report_body(report), maintype="application", subtype="tlsrpt+gzip",
        filename=f"{submitter}!{domain}!{start}!{start + 86399}.json.gz")
    message.set_type("multipart/report")  # keeps the boundary
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes().replace(b"\r\n", b"\n")


class Sender:
    """Turns finished days' results into queued report messages."""

    def __init__(self, config: Config, resolver: Resolver,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.resolver = resolver
        self.clock = clock
        self.directory = config.tls_policy_dir / "tlsrpt"
        self.submitter = config.server.hostname
        self.sender = config.outbound_tls.tlsrpt_sender or f"postmaster@{self.submitter}"
        self.https = verifying_context(config.outbound_tls.ca_file)

    def due_days(self) -> list[str]:
        """Days before today (UTC) with results not yet sent."""
        today = _day(self.clock())
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        return [d for d in names if d < today and any(not f.endswith((SENT_SUFFIX, REACHED_SUFFIX))
                                                      for f in os.listdir(self.directory / d))]

    def send_day(self, day: str) -> list[str]:
        """Queue the reports of `day`; one line per domain saying what became of it."""
        folder = self.directory / day
        done = []
        for domain in sorted(os.listdir(folder) if folder.is_dir() else []):
            if domain.endswith((SENT_SUFFIX, REACHED_SUFFIX)):
                continue
            try:
                rua = rua_uris(self.resolver.txt_blocking(f"_smtp._tls.{domain}"))
            except NoSuchDomain:
                rua = []
            except TemporaryDnsError as exc:
                done.append(f"{domain}: not sent, DNS failed ({exc}); tried again later")
                continue
            if rua:
                reached = folder / (domain + REACHED_SUFFIX)
                before = _reached(reached)
                report = build_report(domain, day, _results(folder / domain), self.submitter,
                                      self.sender)
                sent, failed = self._deliver(report, domain, day,
                                             [uri for uri in rua if uri not in before], reached)
                if failed and _day(self.clock() - RETRY_DAYS * 86400) <= day:
                    done.append(f"{domain}: report {', '.join(sent + failed)}; "
                                "the failed ones tried again later")
                    continue
                if failed:
                    log.warning("TLS report of %s for %s given up after %d days: %s",
                                domain, day, RETRY_DAYS, "; ".join(failed))
                done.append(f"{domain}: report {', '.join(sent + failed) or 'sent before'}")
                reached.unlink(missing_ok=True)
            else:
                done.append(f"{domain}: publishes no _smtp._tls mailto: or https: URI; nothing sent")
            os.rename(folder / domain, folder / (domain + SENT_SUFFIX))
            fsync_dir(folder)
        return done

    def _deliver(self, report: dict, domain: str, day: str, rua: list[str],
                 reached: Path) -> tuple[list[str], list[str]]:
        """The report to each URI, each one reached written down in `reached` at once: what
        was done, and what failed."""
        sent, failed = [], []
        for uri in rua:
            if uri.lower().startswith("mailto:"):
                to = uri[len("mailto:"):]
                queue_id = self._queue(report_message(report, domain, day, self.sender, to,
                                                      self.submitter), to)
                sent.append(f"queued to {to} ({queue_id})")
            else:
                try:
                    post_report(uri, report_body(report), self.https, self.resolver)
                except PostError as exc:
                    log.warning("TLS report of %s not posted: %s", domain, exc)
                    failed.append(f"not posted: {exc}")
                    continue
                log.info("TLS report of %s posted to %s", domain, uri)
                sent.append(f"posted to {uri}")
            _write_down(reached, uri)
        return sent, failed

    def _queue(self, message: bytes, recipient: str) -> str:
        queue_id = new_id()
        prefix = f"Return-Path: <{self.sender}>\nDelivered-To: {recipient}\n".encode()
        env = Envelope(id=queue_id, sender=self.sender, recipients=[recipient],
                       received_at=self.clock(), client_ip="", helo="",
                       size=len(prefix) + len(message), prefix_size=len(prefix),
                       delivered_to=recipient, sign=True)
        write_entry_file(self.config.queue_dir, queue_id, MSG_SUFFIX, prefix + message)
        write_entry_file(self.config.queue_dir, queue_id, ENV_SUFFIX, encode(env))
        fsync_dir(self.config.queue_dir / ACTIVE)
        log.info("TLS report queued id=%s to=<%s>", queue_id, recipient)
        return queue_id


class DailyReports:
    """The delivery worker's periodic hook: every REPORT_INTERVAL, send what is due."""

    # Reports of a day go out within this long after it ends (RFC 8460 asks for daily ones).
    REPORT_INTERVAL = 3600.0

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.sender = Sender(config, Resolver(config.dns))
        self.clock = clock
        self._next = clock()

    def tick(self) -> None:
        if self.clock() < self._next:
            return
        self._next = self.clock() + self.REPORT_INTERVAL
        try:
            for day in self.sender.due_days():
                for line in self.sender.send_day(day):
                    log.info("TLS-RPT %s %s", day, line)
        except OSError as exc:
            log.error("TLS-RPT reports not sent: %s", exc)
