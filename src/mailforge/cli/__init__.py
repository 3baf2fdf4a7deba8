"""The `mailforge` command line: init, serve, check-config, status and the admin commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__, config as configuration, speedups, tls
from . import abuse as abuse_cli, accounts as accounts_cli, accountsdb as accountsdb_cli
from . import acl as acl_cli, admin as admin_cli, backup as backup_cli, dkim as dkim_cli
from . import limits as limits_cli, logs as logs_cli, nodes as nodes_cli
from . import queue as queue_cli, store as store_cli, tlsrpt as tlsrpt_cli
from ..auth.accounts import Accounts, open_accounts
from ..auth.proxylogin import read_secret
from ..errors import EXIT_OK, EXIT_USAGE, MailforgeError, UsageError
from ..process import control, permissions, privileges, sandbox

# Directories `init` lays out under the data dir (DESIGN.md, data on disk).
DATA_SUBDIRS = ("queue", "store", "badmail", "log", "run", "tls", "backup")
# `init --system`: where a packaged server keeps its data, and the ports clients expect.
SYSTEM_DATA_DIR = Path("/var/lib/mailforge")
SYSTEM_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "pop3": 110, "pop3s": 995,
                "imap": 143, "imaps": 993}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailforge", description="mailforge mail server")
    parser.add_argument("--version", action="version",
                        version=f"mailforge {__version__} ({speedups.IMPLEMENTATION})")
    parser.add_argument("-c", "--config", help="config file (default: $MAILFORGE_CONFIG, "
                        "then ./var/mailforge.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create a config, data directories and accounts DB")
    init.add_argument("--dir", help=f"data directory (default: ./var; {SYSTEM_DATA_DIR} with --system)")
    init.add_argument("--hostname", help="this server's host name (default: the FQDN)")
    init.add_argument("--system", action="store_true",
                      help="as root: create the service account and store group and hand them the "
                           "data dir (also on an existing one); a new config listens on the standard ports")
    init.add_argument("--user", default=privileges.DEFAULT_USER,
                      help=f"service account for --system (default: {privileges.DEFAULT_USER})")
    init.add_argument("--group", default=privileges.DEFAULT_GROUP,
                      help=f"store group for --system (default: {privileges.DEFAULT_GROUP})")
    init.set_defaults(handler=cmd_init, needs_config=False)

    serve = sub.add_parser("serve", help="run the supervisor in the foreground")
    serve.set_defaults(handler=cmd_serve)

    check = sub.add_parser("check-config", help="validate the config and the data directory")
    check.set_defaults(handler=cmd_check_config)

    control.register(sub)
    accounts_cli.register(sub)
    nodes_cli.register(sub)
    accountsdb_cli.register(sub)
    limits_cli.register(sub)
    queue_cli.register(sub)
    store_cli.register(sub)
    acl_cli.register(sub)
    backup_cli.register(sub)
    abuse_cli.register(sub)
    logs_cli.register(sub)
    dkim_cli.register(sub)
    admin_cli.register(sub)
    tlsrpt_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if not getattr(args, "needs_config", True):
            return args.handler(args, None)
        config = configuration.load(configuration.config_path(args.config))
        return args.handler(args, config)
    except MailforgeError as exc:
        print(f"mailforge: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_init(args: argparse.Namespace, _: None) -> int:
    data_dir = Path(args.dir or (SYSTEM_DATA_DIR if args.system else "var"))
    config_file = data_dir / configuration.DEFAULT_CONFIG_NAME
    if config_file.exists() and not args.system:
        raise UsageError(f"{config_file} already exists; not overwriting it")
    # First, so that without root nothing is written.
    ids = privileges.ensure_account(args.user, args.group, data_dir.absolute()) if args.system else None
    if not config_file.exists():
        _create(data_dir, config_file, args)
    if ids:
        _hand_over(config_file, args.user, args.group, ids)
    return EXIT_OK


def _create(data_dir: Path, config_file: Path, args: argparse.Namespace) -> None:
    config = configuration.Config()
    if args.hostname:
        config.server.hostname = args.hostname
    for name in configuration.INIT_SERVICES:
        service = getattr(config, name)
        if args.system:
            service.listen = [f"*:{SYSTEM_PORTS[name]}"]
        else:
            service.listen = service.listen or [f"127.0.0.1:{configuration.SERVICE_PORTS[name]}"]
    # The console stays on loopback, also with --system: an operator reaches it through an SSH
    # tunnel or a reverse proxy, never straight from the internet.
    config.admin.listen = [f"127.0.0.1:{configuration.SERVICE_PORTS['admin']}"]
    if not args.system:
        # A server started by hand is watched from its terminal, and `mailforge logs` reads the
        # file; --system's writes to stderr, which its unit file hands to the journal.
        config.log.target = "stderr+file"
    # Check what we are about to write with the same rules `load` applies.
    configuration.from_dict({"server": {"hostname": config.server.hostname}}, "--hostname")
    for sub in DATA_SUBDIRS:
        os.makedirs(data_dir / sub, mode=0o750, exist_ok=True)
    Accounts(data_dir / "accounts.sqlite3", create=True).close()
    config.path = config_file.absolute()  # cert paths are relative to the new data dir
    if tls.ensure_self_signed(config):
        print(f"mailforge: made a self-signed certificate for {config.server.hostname} "
              f"({config.data_dir / config.tls.cert})")
    config_file.write_text(configuration.render_toml(config))
    os.chmod(config_file, 0o640)
    print(f"mailforge: initialised {data_dir.resolve()} (config {config_file})")


def _hand_over(config_file: Path, user: str, group: str, ids: tuple[int, int]) -> None:
    """`init --system`: workers run as `user`; what they write belongs to it and `group`."""
    config = configuration.load(config_file)
    config.server.user, config.server.group = user, group
    config_file.write_text(configuration.render_toml(config))
    permissions.apply(config, *ids)
    print(f"mailforge: workers run as {user}:{group}; {config.data_dir} is owned accordingly")


def cmd_serve(args: argparse.Namespace, config: configuration.Config) -> int:
    from ..process.supervisor import serve

    from .. import logging as logs

    owner = privileges.resolve(config.server.user, config.server.group) if config.server.user else None
    logs.configure(config.log.format, config.log.target, config.log.level, config.log_dir, owner)
    warn_open_relay(config)
    warn_sandbox()
    read_secret(config)  # its workers would read it; a fault is one line now, not a boot loop
    return serve(config)


def warn_open_relay(config: configuration.Config) -> None:
    if config.relay.mode == "open":
        print("mailforge: WARNING: [relay] mode = \"open\": anyone on the internet can send mail "
              "through this server to any domain. Spammers find open relays within hours.",
              file=sys.stderr, flush=True)


def warn_sandbox() -> None:
    state = sandbox.support()
    if not state.complete:
        print(f"mailforge: WARNING: {sandbox.warning(state)}", file=sys.stderr, flush=True)


def cmd_check_config(args: argparse.Namespace, config: configuration.Config) -> int:
    if not config.data_dir.is_dir():
        raise UsageError(f"{config.path}: [server] data_dir: {config.data_dir} is not a directory")
    with open_accounts(config) as accounts:
        accounts.database.ready()
    read_secret(config)
    for warning in tls.check(config):
        print(f"mailforge: warning: {warning}", file=sys.stderr)
    warn_open_relay(config)
    warn_sandbox()
    problems = permissions.check(config)
    for problem in problems:
        print(f"mailforge: permission problem: {problem}", file=sys.stderr)
    services = ", ".join(f"{name} {' '.join(svc.listen)}" for name, svc in config.services().items())
    if problems:
        print(f"mailforge: {config.path} is valid but the data dir has {len(problems)} permission "
              "problem(s)", file=sys.stderr)
        return EXIT_USAGE
    print(f"mailforge: {config.path} is valid ({services or 'no services enabled'})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
