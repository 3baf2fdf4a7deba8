"""Delivery worker: queue/active → local Maildirs or remote MTAs, with retries; at-least-once.

Each worker takes the entries whose id hashes to its slot and holds an flock on the .env
while it works, so the two generations that overlap during a reload never deliver one entry
twice at once, and a killed worker's locks vanish with it so its entries are retried.
Copies are written to tmp/, synced as a batch (each file's own fdatasync, overlapped on a few
threads: a syncfs would wait for every other worker's writes too), renamed into new/, the new/
directories fsynced; only then does the entry leave the queue. A message for
one mailbox needs no copy: the queue keeps it in Maildir form, already durable, so it is
renamed from the queue into new/ (one atomic step, so never delivered twice).

Recipients of other domains are relayed (outbound.py) while the local copies are written.
A permanent failure, or a temporary one past max_queue_time, is reported to the sender in
one DSN per message (notices.py), queued beside the message before it leaves the queue; a
message from the null sender is never reported on: it goes to badmail/ instead. Those are
the Settler's part (settle.py); this module claims entries, places copies and retries.
"""

from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import metrics
from ..addresses import AddressError, normalize_address, with_subaddress
from ..auth.accounts import open_accounts
from ..auth.routing import owners_to_ask
from ..auth.api import (AccountsUnavailable, OwnerResolver, QuotaSource, RecipientResolver,
                        RecipientStatus)
from ..config import Config
from ..durable import fsync_dir, unlink_quietly
from ..errors import EXIT_WORKER_BOOT
from ..mailauth.keys import KeyStore
from ..mailauth.sealing import Sealer
from ..mailauth.signing import Signer
from ..process import allocator, board, sandbox
from ..store import quota
from ..tlspolicy.tlsrpt import DailyReports
from ..store.filenames import message_base
from ..store.specialuse import junk_folder
from ..store.maildir import (TmpMessage, delivered_bases, delivered_path, ensure_maildir_durable,
                             mailbox_path, publish, subaddress_folder, write_tmp)
from . import dsn, retry
from .backoff import StorageBackoff, storage_error
from .commit import SYNC_FSYNC, FileSyncer
from .entry import Copy, Entry
from .envelope import Envelope, EnvelopeError, decode, encode
from .forwarding import expand_forwards
from .lookups import BatchLookups
from .outbound import OutboundRunner, shared_runner
from .routing import owner_destination
from .segment import SEALED_SUFFIX, SegmentError, read_records, seal_orphans
from .settle import Settler
from .spool import ACTIVE, CORRUPT, ENV_SUFFIX, MSG_SUFFIX, write_entry_file

log = logging.getLogger("mailforge.delivery")

SCAN_INTERVAL = 0.1  # seconds between scans of an idle queue
# A segment or entry whose settling failed for a reason of its own waits this long before it
# is tried again, rather than at every scan, ten times a second, each time with a log record.
# A storage error (a full disk) pauses the whole worker instead: backoff.py.
TROUBLE_PAUSE = 5.0
BATCH_ENTRIES = 50  # queue entries per sync: amortises it as the spool's group commit does
MAX_OPEN_COPIES = 256  # sync early rather than run out of file descriptors on a big fan-out
# Threads that overlap a batch's fdatasyncs and directory fsyncs: concurrent syncs share the
# file system's journal commits (ext4 groups them), where one after another each waits for its own.
SYNC_THREADS = 8
# When every connection a destination may have is in use by other workers, or the accounts
# database does not answer: try again after this long, without counting an attempt.
BUSY_RETRY = 5.0
# Failures worth a retry: the disk (full, EIO) or the accounts DB (locked, busy, down).
TEMPORARY_ERRORS = (OSError, AccountsUnavailable)


class CopyBatch:
    """Copies waiting for one shared sync, then renamed into place."""

    def __init__(self, syncer: FileSyncer) -> None:
        self._syncer = syncer
        self._copies: list[Copy] = []

    def add(self, copy: Copy) -> None:
        copy.entry.pending[copy.rcpt] = copy.entry.pending.get(copy.rcpt, 0) + 1
        self._copies.append(copy)
        if len(self._copies) >= MAX_OPEN_COPIES:
            self.flush()

    def flush(self) -> None:
        copies, self._copies = self._copies, []
        try:
            self._syncer.sync([fd for c in copies for fd in c.fds])
        except OSError as exc:
            for c in copies:
                self._fail(c, exc)
            return
        finally:
            for c in copies:
                for fd in c.fds:
                    os.close(fd)
        placed = [c for c in copies if self._place(c)]
        failed = self._syncer.sync_directories({c.directory for c in placed})
        for c in placed:
            if c.directory in failed:
                self._fail(c, failed[c.directory])
        placed = [c for c in placed if c.directory not in failed]
        now = time.time()
        for c in placed:
            c.entry.pending[c.rcpt] -= 1
            _count_placed(c, now)
            if c.log_line:
                log.info(*c.log_line)

    def discard(self) -> None:
        """Drop unsynced copies when the batch is abandoned; their entries stay queued."""
        copies, self._copies = self._copies, []
        for c in copies:
            for fd in c.fds:
                os.close(fd)
            for path in c.paths:
                unlink_quietly(path)

    def _place(self, copy: Copy) -> bool:
        try:
            if copy.move is not None:
                os.rename(*copy.move)
            elif copy.maildir_tmp is not None:
                publish(copy.maildir_tmp)
        except OSError as exc:
            self._fail(copy, exc)
            return False
        return True

    @staticmethod
    def _fail(copy: Copy, exc: OSError) -> None:
        copy.entry.failed[copy.rcpt] = str(exc)
        for path in copy.paths:
            unlink_quietly(path)


def _count_placed(copy: Copy, now: float) -> None:
    """A copy in a mailbox is delivered; one in badmail failed for good (bounces come later)."""
    if copy.maildir_tmp is None and copy.move is None:
        metrics.inc("messages_bounced_total", via="local")
        return
    metrics.inc("messages_delivered_total", via="local")
    metrics.observe("delivery_latency_seconds", max(0.0, now - copy.entry.envelope.received_at),
                    via="local")


class DeliveryAgent:
    """The loop body of a delivery worker, testable without forking."""

    def __init__(self, config: Config, recipients: RecipientResolver, quotas: QuotaSource,
                 slot: int = 0, slots: int = 1, sync_mode: str = SYNC_FSYNC,
                 clock: Callable[[], float] = time.time,
                 outbound: OutboundRunner | None = None,
                 owners: OwnerResolver | None = None) -> None:
        """`owners`: mailbox routing, the nodes that own mailboxes (None: every mailbox is
        stored here)."""
        self.config = config
        self.recipients = recipients
        self.quotas = quotas
        self.owners = owners
        self.node = config.node_name
        self.slot, self.slots = slot, slots
        self.clock = clock
        self.active = config.queue_dir / ACTIVE
        # Config.store_dir resolves the data dir's path each time: once per copy was a sixth
        # of this worker's CPU time.
        self.store_dir = config.store_dir
        self._sync_threads = concurrent.futures.ThreadPoolExecutor(
            SYNC_THREADS, thread_name_prefix="delivery-sync")
        self._syncer = FileSyncer(sync_mode, self._sync_threads)
        # id → (next_attempt, inode of its .env): skips re-reading an entry not yet due,
        # unless the .env was replaced (`queue flush` or `queue retry`).
        self._deferred: dict[str, tuple[float, int]] = {}
        self._outbound = outbound or OutboundRunner(config)
        keys = KeyStore(config.dkim_dir)
        self._settler = Settler(config, self._outbound, clock, Signer(keys),
                                Sealer(keys, config.authserv_id))
        for directory in (config.badmail_dir, self.store_dir):
            os.makedirs(directory, mode=0o750, exist_ok=True)
        # Entries queued before this worker started may have been cut short by a predecessor
        # killed between placing copies and removing the entry: for those only, look first.
        self._inherited = self._queued_ids()
        self._troubled: dict[str, float] = {}  # segment name or entry id → when to try again
        self._storage = StorageBackoff(clock)
        self._placed: dict[Path, set[str]] = {}
        self._can_move: bool | None = None  # known once the queue exists

    def close(self) -> None:
        """Let go of the outbound event loop (its connections are closed after each batch) and
        of the sync threads."""
        self._outbound.close()
        self._sync_threads.shutdown()

    def _queued_ids(self) -> set[str]:
        """Entry ids and segment names in the queue now."""
        try:
            names = os.listdir(self.active)
        except FileNotFoundError:
            return set()
        return {name[:-len(ENV_SUFFIX)] if name.endswith(ENV_SUFFIX) else name
                for name in names if name.endswith((ENV_SUFFIX, SEALED_SUFFIX))}

    def step(self, heartbeat: Callable[[], None] = lambda: None,
             stopping: Callable[[], bool] = lambda: False) -> int:
        """One scan: deliver or defer every ready entry of this slot; how many were handled."""
        if self._storage.paused():
            return 0
        errors = self._storage.errors
        seal_orphans(self.config.queue_dir)
        ids, segments = self._ready_ids()
        handled = 0
        for name in segments:
            if stopping() or self._storage.paused():
                return handled
            handled += self._deliver_segment(name, heartbeat)
        for start in range(0, len(ids), BATCH_ENTRIES):
            if stopping() or self._storage.paused():
                break
            handled += self._deliver_batch(ids[start:start + BATCH_ENTRIES], heartbeat)
        if handled and self._storage.errors == errors and self._storage.succeeded():
            self._publish_storage_pause()
            log.info("delivery worker #%d: storage usable again, delivering", self.slot)
        return handled

    def _ready_ids(self) -> tuple[list[str], list[str]]:
        """This slot's entries due now, and its sealed segments."""
        now = self.clock()
        self._troubled = {name: until for name, until in self._troubled.items() if until > now}
        seen, ready, segments = set(), [], []
        with os.scandir(self.active) as entries:
            for dirent in entries:
                if dirent.name.endswith(SEALED_SUFFIX):
                    if (zlib.crc32(dirent.name.encode()) % self.slots == self.slot
                            and dirent.name not in self._troubled):
                        segments.append(dirent.name)
                    continue
                if not dirent.name.endswith(ENV_SUFFIX):
                    continue
                entry_id = dirent.name[:-len(ENV_SUFFIX)]
                if (zlib.crc32(entry_id.encode()) % self.slots != self.slot
                        or entry_id in self._troubled):
                    continue
                seen.add(entry_id)
                due, inode = self._deferred.get(entry_id, (0.0, 0))
                if due <= now or inode != dirent.inode():
                    ready.append(entry_id)
        self._deferred = {k: v for k, v in self._deferred.items() if k in seen}
        return sorted(ready), sorted(segments)

    def _deliver_batch(self, ids: list[str], heartbeat: Callable[[], None]) -> int:
        entries = []
        try:
            for entry_id in ids:
                heartbeat()
                entry = self._claim(entry_id)
                if entry is not None:
                    entries.append(entry)
            self._place_copies(entries, heartbeat)
            for entry in entries:
                try:
                    self._finish(entry)
                except OSError as exc:  # left in the queue: retried later, at-least-once
                    self._pause_after_trouble(entry.id, f"update queue entry {entry.id}", exc)
            if entries:
                fsync_dir(self.active)
        finally:
            for entry in entries:
                if entry.lock_fd is not None:
                    os.close(entry.lock_fd)
        return len(entries)

    def _deliver_segment(self, name: str, heartbeat: Callable[[], None]) -> int:
        """Deliver every record of a sealed segment, requeue what must wait, drop the segment."""
        path = self.active / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            entries = self._segment_entries(fd, path)
            if entries is None:
                return 0
            for start in range(0, len(entries), BATCH_ENTRIES):
                heartbeat()
                self._place_copies(entries[start:start + BATCH_ENTRIES], heartbeat)
            for entry in entries:
                self._finish(entry)
            os.unlink(path)
            fsync_dir(self.active)
            self._inherited.difference_update({name, *(e.id for e in entries)})
            return len(entries)
        except TEMPORARY_ERRORS as exc:
            # Retried whole; the copies placed this time must then be recognised.
            self._pause_after_trouble(name, f"deliver queue segment {name}", exc)
            self._inherited.add(name)
            return 0
        finally:
            os.close(fd)

    def _pause_after_trouble(self, name: str, what: str, exc: BaseException) -> None:
        """`name` is tried again after TROUBLE_PAUSE, with its traceback logged; after a
        storage error the whole worker pauses instead."""
        if storage_error(exc):
            self.storage_trouble(what, exc)
            return
        self._troubled[name] = self.clock() + TROUBLE_PAUSE
        log.error("cannot %s; next try in %.0f s", what, TROUBLE_PAUSE, exc_info=exc)

    def storage_trouble(self, what: str, exc: BaseException) -> None:
        """A full disk, a quota or EIO: the worker pauses, longer each time (backoff.py); one
        line per pause, no traceback (it passes once space is freed)."""
        code = getattr(exc, "errno", None)
        metrics.inc("delivery_storage_errors_total", error=errno.errorcode.get(code, str(code)))
        if self._storage.failed():
            self._publish_storage_pause()
            log.warning("cannot %s: %s; delivery worker #%d pauses %.0f s", what, exc,
                        self.slot, self._storage.pause)

    def _publish_storage_pause(self) -> None:
        board.report_storage_backoff(self.slot, self._storage.pause)
        metrics.set_value("delivery_storage_backoff_seconds", self._storage.pause,
                          slot=str(self.slot))

    def _segment_entries(self, fd: int, path: Path) -> list[Entry] | None:
        """Lock the segment and read its records; None when it is not ours to deliver now."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None
        except (BlockingIOError, FileNotFoundError):
            return None
        try:
            entries = [Entry(env.id, None, env, None, body) for env, body in read_records(path)]
        except SegmentError as exc:
            log.error("queue segment %s is corrupt (%s); moved to %s", path.name, exc, CORRUPT)
            os.replace(path, self.config.queue_dir / CORRUPT / path.name)
            return None
        if path.name in self._inherited:
            self._inherited.update(e.id for e in entries)
        return entries

    def _place_copies(self, entries: list[Entry], heartbeat: Callable[[], None]) -> None:
        batch = CopyBatch(self._syncer)
        lookups = BatchLookups(self.recipients, self.quotas, self.owners)
        try:
            for entry in entries:
                self._write_copies(entry, batch, lookups)
            self._settler.relay([e for e in entries if e.remote], heartbeat)
            for entry in entries:
                self._settler.expire_or_report(entry, batch)
            batch.flush()
        finally:
            batch.discard()

    def _claim(self, entry_id: str) -> Entry | None:
        env_path = self.active / (entry_id + ENV_SUFFIX)
        try:
            fd = os.open(env_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # delivered by the other generation since the scan
        try:
            envelope = self._lock_and_read(fd, env_path)
        except BaseException:
            os.close(fd)
            raise
        msg_path = self.active / (entry_id + MSG_SUFFIX)
        if envelope is not None and not msg_path.exists():
            # Only a move into a mailbox takes the message away: its holder was stopped
            # before it could remove the envelope.
            log.info("already delivered id=%s (moved)", entry_id)
            unlink_quietly(env_path)
            envelope = None
        if envelope is None or envelope.next_attempt > self.clock():
            if envelope is not None:
                self._deferred[entry_id] = (envelope.next_attempt, os.fstat(fd).st_ino)
            os.close(fd)
            return None
        return Entry(entry_id, fd, envelope, msg_path)

    def _lock_and_read(self, fd: int, env_path: Path) -> Envelope | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another worker (the other generation) has it in hand
        # Its holder may have finished and unlinked it, or rewritten it, before we locked.
        try:
            if os.stat(env_path).st_ino != os.fstat(fd).st_ino:
                return None
        except FileNotFoundError:
            return None
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read()
        try:
            return decode(data)
        except EnvelopeError as exc:
            self._quarantine(env_path.name[:-len(ENV_SUFFIX)], str(exc))
            return None

    def _quarantine(self, entry_id: str, reason: str) -> None:
        log.error("queue entry %s is corrupt (%s); moved to %s", entry_id, reason, CORRUPT)
        for suffix in (MSG_SUFFIX, ENV_SUFFIX):
            try:
                os.replace(self.active / (entry_id + suffix),
                           self.config.queue_dir / CORRUPT / (entry_id + suffix))
            except FileNotFoundError:
                pass

    def _write_copies(self, entry: Entry, batch: CopyBatch, lookups: BatchLookups) -> None:
        entry.expanded = expand_forwards(entry.envelope, lookups)
        for rcpt in entry.envelope.recipients:
            try:
                self._write_recipient(entry, rcpt, batch, lookups)
            except TEMPORARY_ERRORS as exc:
                entry.failed[rcpt] = str(exc)
                if isinstance(exc, AccountsUnavailable):
                    # Our own database was down, not the mailbox: no attempt, so the message
                    # goes in BUSY_RETRY after it returns, not at the schedule's next step.
                    entry.untried.add(rcpt)

    def _write_recipient(self, entry: Entry, rcpt: str, batch: CopyBatch,
                         lookups: BatchLookups) -> None:
        try:
            lookup = lookups.lookup_recipient(rcpt)
        except AddressError as exc:
            self._settler.refuse(entry, rcpt, batch, "5.1.3", f"invalid address: {exc}")
            return
        if lookup.status is RecipientStatus.NOT_LOCAL:
            entry.remote.append(rcpt)
            return
        if lookup.status is not RecipientStatus.OK or not lookup.mailboxes:
            status = "5.2.1" if lookup.status is RecipientStatus.DISABLED else "5.1.1"
            self._settler.refuse(entry, rcpt, batch, status, f"mailbox {lookup.status}")
            return
        # A success notice quotes the message, so it must stay in the queue until then.
        movable = (self._moves_possible() and len(lookup.mailboxes) == 1 and entry.movable(rcpt)
                   and not dsn.wants(entry.envelope.notify.get(rcpt, ""), "SUCCESS"))
        for mailbox in lookup.mailboxes:
            if mailbox in entry.mailboxes:
                continue
            owner = lookups.owner(mailbox)
            if owner is not None and owner.name != self.node:
                # Under the mailbox (the owner must not expand an alias again), with the
                # subaddress: the owner files it into the folder a delivery here would.
                relayed = with_subaddress(mailbox, normalize_address(rcpt), lookup.detail)
                entry.relay_to_owner(rcpt, mailbox, relayed, owner_destination(owner))
                continue
            if not quota.admit(self.store_dir, lookups, mailbox, entry.envelope.size):
                # Deferred: it may free up. A delay notice takes its Status from the code
                # that starts the text (notices.py): RFC 3463's "mailbox full".
                entry.failed[rcpt] = "4.2.2 mailbox full (over quota)"
                entry.over_quota.add(rcpt)
                continue
            maildir = ensure_maildir_durable(self.store_dir, mailbox_path(self.store_dir, mailbox))
            if entry.envelope.junk:
                maildir = junk_folder(self.store_dir, maildir)
            elif lookup.detail:
                maildir = subaddress_folder(maildir, lookup.detail)
            entry.mailboxes.add(mailbox)
            base = message_base(entry.envelope.received_at, entry.id, mailbox)
            if self._already_placed(entry.id, maildir, base):
                log.info("already delivered id=%s mailbox=%s", entry.id, mailbox)
                continue
            if movable:
                batch.add(self._maildir_move(entry, rcpt, mailbox, maildir, base))
                continue
            tmp = write_tmp(maildir, base, self._maildir_chunks(entry, rcpt))
            batch.add(self._maildir_copy(entry, rcpt, mailbox, tmp))

    def _moves_possible(self) -> bool:
        """A rename cannot cross file systems: then every delivery is a copy."""
        if self._can_move is None:
            self._can_move = os.stat(self.active).st_dev == os.stat(self.store_dir).st_dev
        return self._can_move

    def _already_placed(self, entry_id: str, maildir: Path, base: str) -> bool:
        if entry_id not in self._inherited:
            return False
        if maildir not in self._placed:
            self._placed[maildir] = delivered_bases(maildir)
        return base in self._placed[maildir]

    def _maildir_copy(self, entry: Entry, rcpt: str, mailbox: str, tmp: TmpMessage) -> Copy:
        log_line = ("delivered id=%s from=<%s> to=<%s> mailbox=%s size=%d", entry.id,
                    entry.envelope.sender, rcpt, mailbox, tmp.size)
        return Copy(entry, rcpt, [tmp.fd], [tmp.tmp_path], tmp, tmp.new_path.parent, log_line)

    def _maildir_move(self, entry: Entry, rcpt: str, mailbox: str, maildir: Path,
                      base: str) -> Copy:
        size = entry.envelope.size
        log_line = ("delivered id=%s from=<%s> to=<%s> mailbox=%s size=%d", entry.id,
                    entry.envelope.sender, rcpt, mailbox, size)
        target = delivered_path(maildir, base, size)
        return Copy(entry, rcpt, [], [], None, target.parent, log_line, (entry.msg_path, target))

    def _maildir_chunks(self, entry: Entry, rcpt: str) -> Iterator[bytes]:
        """The queued message with this recipient's delivery headers in place of its own."""
        yield f"Return-Path: <{entry.envelope.sender}>\nDelivered-To: {rcpt}\n".encode()
        yield from entry.chunks(entry.envelope.prefix_size)

    def _finish(self, entry: Entry) -> None:
        remaining = entry.remaining()
        self._settler.send_notices(entry, remaining)
        if entry.msg_path is None:  # a segment record: its segment goes once all are done
            if remaining:
                self._requeue(entry, remaining)
            return
        if not remaining:
            os.unlink(self.active / (entry.id + ENV_SUFFIX))
            unlink_quietly(entry.msg_path)  # gone already when it was moved into a mailbox
            self._inherited.discard(entry.id)
            if not self._inherited:
                self._placed.clear()
            return
        self._defer(entry, remaining)

    def _schedule_retry(self, entry: Entry, remaining: list[str]) -> Envelope:
        env = entry.envelope
        config = self.config.delivery
        env.recipients = remaining
        env.errors = {r: entry.failed.get(r, "not placed") for r in remaining}
        env.last_error = "; ".join(f"<{r}>: {why}" for r, why in env.errors.items())
        # Never tried at all is no attempt: soon again, and the retry schedule stays where it is.
        attempted = not entry.untried.issuperset(remaining)
        schedule, step = (config.retry_schedule, env.attempts) if attempted else ([BUSY_RETRY], 0)
        # A full mailbox is tried once more when its wait is up, so that it bounces on time.
        expiry = min(self._settler.give_up_after(entry, rcpt) for rcpt in remaining)
        env.next_attempt = retry.next_attempt(self.clock(), env.received_at, schedule, step,
                                              expiry)
        if attempted:
            env.attempts += 1
        metrics.inc("messages_deferred_total", via="local")
        return env

    def _requeue(self, entry: Entry, remaining: list[str]) -> None:
        """A segment record with recipients left becomes an entry of its own, named by its id
        so that a retry of the whole segment finds it made already."""
        if (self.active / (entry.id + ENV_SUFFIX)).exists():
            return
        env = self._schedule_retry(entry, remaining)
        queue_dir = self.config.queue_dir
        write_entry_file(queue_dir, entry.id, MSG_SUFFIX, entry.body)
        inode = write_entry_file(queue_dir, entry.id, ENV_SUFFIX, encode(env))
        self._deferred[entry.id] = (env.next_attempt, inode)
        log.warning("deferred id=%s attempt=%d next_in=%ds rcpts=%d error=%s", entry.id,
                    env.attempts, env.next_attempt - self.clock(), len(remaining), env.last_error)

    def _defer(self, entry: Entry, remaining: list[str]) -> None:
        env = self._schedule_retry(entry, remaining)
        inode = write_entry_file(self.config.queue_dir, entry.id, ENV_SUFFIX, encode(env))
        self._deferred[entry.id] = (env.next_attempt, inode)
        log.warning("deferred id=%s attempt=%d next_in=%ds rcpts=%d error=%s", entry.id,
                    env.attempts, env.next_attempt - self.clock(), len(remaining), env.last_error)


def serve(config: Config, slot: int, slots: int, heartbeat: Callable[[], None],
          stopping: Callable[[], bool]) -> None:
    """A delivery worker process: locked in like the protocol workers (no program, writes only
    in the data dir), then `run`. Its outbound SMTP connects stay free: the sandbox's Landlock
    ruleset handles file access only, never ABI 4's TCP connect/bind rights."""
    allocator.return_large_buffers()
    try:
        state = sandbox.confine(config.data_dir, metrics.directory())
    except OSError as exc:
        log.error("delivery worker cannot enter its sandbox: %s", exc)
        raise SystemExit(EXIT_WORKER_BOOT) from None
    log.debug("delivery worker sandbox: %s", state.describe())  # as the protocol workers'
    run(config, slot, slots, heartbeat, stopping)


def run(config: Config, slot: int, slots: int, heartbeat: Callable[[], None],
        stopping: Callable[[], bool]) -> None:
    """Body of a delivery worker process: returns once `stopping()` says so."""
    with open_accounts(config) as accounts:
        agent = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, slot, slots,
                              outbound=shared_runner(config),
                              owners=owners_to_ask(config, accounts.nodes))
        # One worker sends the TLS-RPT reports, as one would be enough.
        reports = DailyReports(config) if slot == 0 and config.outbound_tls.tlsrpt else None
        try:
            _loop(agent, heartbeat, stopping, reports)
        finally:
            agent.close()


def _loop(agent: DeliveryAgent, heartbeat: Callable[[], None],
          stopping: Callable[[], bool], reports: DailyReports | None = None) -> None:
    while not stopping():
        heartbeat()
        if reports is not None:
            reports.tick()
        try:
            handled = agent.step(heartbeat, stopping)
        except OSError as exc:  # the queue itself is unreadable: keep the worker, retry later
            if storage_error(exc):
                agent.storage_trouble("scan the queue", exc)
            else:
                log.exception("delivery scan failed")
            handled = 0
        if not handled:
            time.sleep(SCAN_INTERVAL)
