"""What an administrator can do, for the pages and the API alike: each action checks the
administrator's scope, calls what the command line calls (the accounts repositories,
cli.accounts.add_mailbox, cli.store.parse_size, the supervisor's control commands), and
leaves an audit record. Blocking: the web layer runs these in its thread pool.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

from .. import tuning_report
from ..addresses import normalize_address, normalize_alias_source, normalize_domain
from ..auth.accounts import Accounts
from ..auth.api import AdminInfo, AuditEntry, SendLimit, UserPage
from ..cli.accounts import add_mailbox
from ..cli.queue import duration, last_error, next_try
from ..cli.store import parse_count, parse_size
from ..config import Config
from ..config_edit import form_value
from ..errors import UsageError
from ..queue.admin import Badmail, QueueAdmin
from . import link

audit_log = logging.getLogger("mailforge.admin.audit")

PAGE_SIZE = 50
AUDIT_SHOWN = 200


def _send_limit(scope: str, name: str, fields: dict[str, str]) -> SendLimit:
    try:
        messages, interval = int(fields.get("messages", "")), float(fields.get("interval", ""))
    except ValueError:
        raise UsageError("a limit needs a number of messages and an interval in seconds") from None
    return SendLimit(scope, name, messages, interval, fields.get("at_limit") or "throttle")


class Forbidden(Exception):
    """The administrator may not see or touch this (another domain, a system page)."""


@dataclass(frozen=True)
class Actor:
    """Who asks, and from where: every action is checked against and recorded with it."""

    admin: AdminInfo
    client: str


class Operations:
    def __init__(self, config: Config, accounts: Accounts) -> None:
        self.config = config
        self.accounts = accounts

    # -- scope

    def require_system(self, actor: Actor) -> None:
        if not actor.admin.is_system:
            raise Forbidden("only a system administrator may do that")

    def require_domain(self, actor: Actor, domain: str) -> str:
        domain = normalize_domain(domain)
        if not actor.admin.manages(domain):
            raise Forbidden(f"{domain} is not one of your domains")
        return domain

    def _record(self, actor: Actor, action: str, detail: str) -> None:
        self.accounts.admins.record(actor.admin.name, actor.client, action, detail)
        audit_log.info("admin %s from %s: %s %s", actor.admin.name, actor.client, action, detail)

    # -- domains

    def domains(self, actor: Actor) -> list[str]:
        return [d for d in self.accounts.directory.domains() if actor.admin.manages(d)]

    def domain_add(self, actor: Actor, name: str) -> str:
        self.require_system(actor)
        domain = normalize_domain(name)
        self.accounts.directory.domain_add(domain)
        self._record(actor, "domain add", domain)
        return f"added domain {domain}"

    def domain_remove(self, actor: Actor, name: str) -> str:
        self.require_system(actor)
        domain = normalize_domain(name)
        self.accounts.directory.domain_remove(domain)
        self._record(actor, "domain remove", domain)
        return f"removed domain {domain}"

    # -- mailboxes

    def users(self, actor: Actor, domain: str, search: str, page: int) -> UserPage:
        domains = [self.require_domain(actor, domain)] if domain else (
            None if actor.admin.is_system else list(actor.admin.domains))
        return self.accounts.directory.users_page(domains, search, max(page, 0) * PAGE_SIZE, PAGE_SIZE)

    def _mailbox(self, actor: Actor, address: str) -> str:
        address = normalize_address(address)
        self.require_domain(actor, address.rpartition("@")[2])
        return address

    def user_add(self, actor: Actor, address: str, password: str) -> str:
        address = self._mailbox(actor, address)
        add_mailbox(self.config, self.accounts, address, password)
        self._record(actor, "user add", address)
        return f"added mailbox {address}"

    def user_action(self, actor: Actor, address: str, action: str, fields: dict[str, str]) -> str:
        """disable, enable, remove, password (fields["password"]), apop (fields["secret"], ""
        for none), quota (fields["size"], "messages"), limit (fields "messages", "interval",
        "at_limit": throttle or disable)."""
        address = self._mailbox(actor, address)
        directory, accounts = self.accounts.directory, self.accounts
        if action == "disable":
            directory.user_disable(address)
        elif action == "enable":
            # A limit's "disable" action is lifted by a system administrator only, as limits
            # are set: a domain's own would undo it for the spamming account it stopped.
            directory.user_enable(address, sending=actor.admin.is_system)
        elif action == "remove":
            directory.user_remove(address)
        elif action == "password":
            accounts.credentials.user_passwd(address, fields.get("password", ""))
        elif action == "apop":
            accounts.credentials.set_apop_secret(address, fields.get("secret") or None)
        elif action == "limit":
            # System administrators only: the narrowest limit applies, so a user's own would
            # lift the system's and the domain's.
            self.require_system(actor)
            accounts.send_limits.limit_set(_send_limit("user", address, fields))
        elif action == "quota":
            size, messages = fields.get("size") or "none", fields.get("messages") or "none"
            accounts.mailbox_settings.set_quota(address, parse_size(size), parse_count(messages))
            action = f"quota {size}/{messages}"
        else:
            raise UsageError(f"unknown action {action!r}")
        self._record(actor, f"user {action}", address)
        return f"{action}: {address}"

    def domain_settings(self, actor: Actor, domain: str, fields: dict[str, str]) -> str:
        """Public folders on or off (fields["public"]), and with fields["messages"] the domain's
        outbound limit (system administrators only)."""
        domain = self.require_domain(actor, domain)
        settings = self.accounts.mailbox_settings
        if "public" in fields:
            # As `public set` takes them: anything else (a typo, "yes") must not mean "off".
            if fields["public"] not in ("on", "off"):
                raise UsageError(f"public folders are on or off, not {fields['public']!r}")
            settings.set_public_folders(domain, fields["public"] == "on")
            detail = f"public folders {fields['public']}"
        else:
            self.require_system(actor)
            self.accounts.send_limits.limit_set(_send_limit("domain", domain, fields))
            detail = f"outbound limit {fields.get('messages')}/{fields.get('interval')} s"
        self._record(actor, "domain settings", f"{domain}: {detail}")
        return f"{domain}: {detail}"

    def send_limits(self, actor: Actor) -> list[SendLimit]:
        self.require_system(actor)
        return self.accounts.send_limits.limits()

    # -- aliases

    def aliases(self, actor: Actor, domain: str) -> list[tuple[str, str]]:
        if domain:
            return self.accounts.directory.aliases(self.require_domain(actor, domain))
        return [row for row in self.accounts.directory.aliases()
                if actor.admin.manages(row[0].rpartition("@")[2])]

    def alias_add(self, actor: Actor, source: str, target: str) -> str:
        # As the alias stores them: the audit entry and the answer name what was added.
        source, target = normalize_alias_source(source), normalize_address(target)
        self.require_domain(actor, source.rpartition("@")[2])
        # A domain administrator's target in a domain not its own is taken on trust, as one
        # outside our domains is: checked, the answer would tell whether an address of another
        # customer exists.
        self.accounts.directory.alias_add(source, target,
                                          check_target=actor.admin.manages(target.rpartition("@")[2]))
        self._record(actor, "alias add", f"{source} -> {target}")
        return f"added alias {source} -> {target}"

    def alias_remove(self, actor: Actor, source: str, target: str) -> str:
        source = normalize_alias_source(source)
        # As stored: the audit entry names the target removed, not the spelling typed.
        target = normalize_address(target) if target else ""
        self.require_domain(actor, source.rpartition("@")[2])
        self.accounts.directory.alias_remove(source, target or None)
        self._record(actor, "alias remove", f"{source} -> {target or '*'}")
        return f"removed alias {source}" + (f" -> {target}" if target else "")

    # -- the running server (system administrators)

    def status(self, actor: Actor) -> dict[str, Any]:
        self.require_system(actor)
        return link.ask(self.config, "status")

    def blocks(self, actor: Actor) -> list[dict[str, Any]]:
        self.require_system(actor)
        return link.ask(self.config, "abuse-list")["blocks"]

    def limited_senders(self, actor: Actor) -> list[str]:
        self.require_system(actor)
        return link.ask(self.config, "outbound-limited")["senders"]

    def unblock(self, actor: Actor, address: str) -> str:
        self.require_system(actor)
        try:
            address = str(ipaddress.ip_network(address.strip(), strict=False)
                          if "/" in address else ipaddress.ip_address(address.strip()))
        except ValueError:
            raise UsageError(f"not an IP address: {address!r}") from None
        lifted = link.ask(self.config, "abuse-unblock", address=address)["lifted"]
        if not lifted:
            raise UsageError(f"{address} is not blocked")
        self._record(actor, "unblock", ", ".join(lifted))
        return f"lifted the block on {', '.join(lifted)}"

    def configure(self, actor: Actor, section: str, fields: dict[str, str]) -> str:
        """The services form: the fields' text made TOML values, then the supervisor checks,
        writes and reloads (config_edit.py); a refusal is check-config's line."""
        self.require_system(actor)
        if not fields:
            return f"[{section}]: nothing changed"
        try:
            values = {key: form_value(section, key, text) for key, text in fields.items()}
        except (AttributeError, KeyError):
            raise UsageError(f"[{section}]: not a section or key the console may change") from None
        link.ask(self.config, "config-set", section=section, values=values)
        detail = ", ".join(f"{key} = {value!r}" for key, value in values.items())
        self._record(actor, f"config [{section}]", detail)
        return f"[{section}] saved; the server is reloading"

    # -- the queue (system administrators), through `mailforge queue`'s QueueAdmin

    def _queue(self) -> QueueAdmin:
        return QueueAdmin(self.config.queue_dir, self.config.badmail_dir)

    def queue(self, actor: Actor, sender: str, recipient: str, state: str) -> list[dict[str, Any]]:
        """Queued messages, oldest first, whose sender and any recipient contain the filters'
        text and whose state is `state` ("" for any)."""
        self.require_system(actor)
        now, sender, recipient = time.time(), sender.lower(), recipient.lower()
        return [{"id": e.envelope.id, "age": duration(now - e.envelope.received_at),
                 "sender": e.envelope.sender, "recipients": e.envelope.recipients, "state": e.state,
                 "next_try": next_try(e, now), "last_error": last_error(e)}
                for e in self._queue().entries()
                if sender in e.envelope.sender.lower() and (not state or e.state == state)
                and any(recipient in r.lower() for r in e.envelope.recipients)]

    def queue_message(self, actor: Actor, entry_id: str) -> dict[str, Any]:
        """One message's envelope and headers, as `queue show` prints them."""
        self.require_system(actor)
        admin = self._queue()
        entry = admin.find(entry_id)
        message = admin.message(entry)[entry.envelope.prefix_size:]
        return {"id": entry.envelope.id, "state": entry.state, "sender": entry.envelope.sender,
                "recipients": entry.envelope.recipients, "errors": entry.envelope.errors,
                "attempts": entry.envelope.attempts,
                "headers": message.split(b"\n\n", 1)[0].decode("utf-8", "replace")}

    def queue_action(self, actor: Actor, action: str, entry_id: str) -> str:
        """flush (every deferred message), retry or delete one."""
        self.require_system(actor)
        admin = self._queue()
        if action == "flush":
            done = f"{admin.flush()} deferred message(s) due now"
        elif action == "retry":
            admin.retry(entry_id)
            done = f"{entry_id} due now"
        elif action == "delete":
            admin.delete(entry_id)
            done = f"deleted {entry_id}, unsent"
        else:
            raise UsageError(f"unknown action {action!r}")
        self._record(actor, f"queue {action}", entry_id)
        return done

    def badmail(self, actor: Actor) -> list[Badmail]:
        self.require_system(actor)
        return self._queue().badmail()

    def badmail_requeue(self, actor: Actor, badmail_id: str) -> str:
        self.require_system(actor)
        queue_id = self._queue().requeue(badmail_id)
        self._record(actor, "badmail requeue", f"{badmail_id} as {queue_id}")
        return f"{badmail_id} queued again as {queue_id}"

    # -- administrators (system administrators), as `mailforge admin` changes them

    def admins(self, actor: Actor) -> list[AdminInfo]:
        self.require_system(actor)
        return self.accounts.admins.admins()

    def admin_action(self, actor: Actor, name: str, action: str, fields: dict[str, str]) -> str:
        """password (fields["password"]), role (fields["role"], fields["domains"]: a comma
        list), remove. The console never removes or demotes the last system administrator
        (the command line still can)."""
        self.require_system(actor)
        admins = self.accounts.admins
        if action == "password":
            admins.admin_passwd(name, fields.get("password", ""))
            detail = name
        elif action == "role":
            role = fields.get("role", "")
            domains = [d.strip() for d in fields.get("domains", "").split(",") if d.strip()]
            admins.admin_set_role(name, role, domains, keep_a_system_admin=True)
            detail = f"{name}: {role} {','.join(domains)}".rstrip()
        elif action == "remove":
            admins.admin_remove(name, keep_a_system_admin=True)
            detail = name
        else:
            raise UsageError(f"unknown action {action!r}")
        self._record(actor, f"admin {action}", detail)
        return f"{action}: {detail}"

    # -- the machine's tuning report (bench.tune), read-only

    def tuning_report(self, actor: Actor) -> tuning_report.TuningReport | None:
        self.require_system(actor)
        return tuning_report.load(tuning_report.report_dir(self.config))

    def tuning_plot(self, actor: Actor) -> bytes | None:
        self.require_system(actor)
        return tuning_report.plot_bytes(tuning_report.report_dir(self.config))

    def audit(self, actor: Actor) -> list[AuditEntry]:
        return self.accounts.admins.recent(AUDIT_SHOWN, None if actor.admin.is_system else actor.admin)
