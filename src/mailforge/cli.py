"""The `mailforge` command line: init, serve, check-config, status and the admin commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__, config as configuration, control, speedups, tls
from .auth import cli as accounts_cli
from .auth.accounts import Accounts
from .queue import cli as queue_cli
from .errors import EXIT_OK, MailforgeError, UsageError

# Directories `init` lays out under the data dir (DESIGN.md, data on disk).
DATA_SUBDIRS = ("queue", "store", "badmail", "log", "run", "tls", "backup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailforge", description="mailforge mail server")
    parser.add_argument("--version", action="version",
                        version=f"mailforge {__version__} ({speedups.IMPLEMENTATION})")
    parser.add_argument("-c", "--config", help="config file (default: $MAILFORGE_CONFIG, "
                        "then ./var/mailforge.toml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create a config, data directories and accounts DB")
    init.add_argument("--dir", default="var", help="data directory (default: ./var)")
    init.add_argument("--hostname", help="this server's host name (default: the FQDN)")
    init.set_defaults(handler=cmd_init, needs_config=False)

    serve = sub.add_parser("serve", help="run the supervisor in the foreground")
    serve.set_defaults(handler=cmd_serve)

    check = sub.add_parser("check-config", help="validate the config and the data directory")
    check.set_defaults(handler=cmd_check_config)

    control.register(sub)
    accounts_cli.register(sub)
    queue_cli.register(sub)
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
    data_dir = Path(args.dir)
    config_file = data_dir / configuration.DEFAULT_CONFIG_NAME
    if config_file.exists():
        raise UsageError(f"{config_file} already exists; not overwriting it")
    config = configuration.Config()
    if args.hostname:
        config.server.hostname = args.hostname
    for name in configuration.INIT_SERVICES:
        service = getattr(config, name)
        service.listen = service.listen or [f"127.0.0.1:{configuration.SERVICE_PORTS[name]}"]
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
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, config: configuration.Config) -> int:
    from .supervisor import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    warn_open_relay(config)
    return serve(config)


def warn_open_relay(config: configuration.Config) -> None:
    if config.relay.mode == "open":
        print("mailforge: WARNING: [relay] mode = \"open\": anyone on the internet can send mail "
              "through this server to any domain. Spammers find open relays within hours.",
              file=sys.stderr, flush=True)


def cmd_check_config(args: argparse.Namespace, config: configuration.Config) -> int:
    if not config.data_dir.is_dir():
        raise UsageError(f"{config.path}: [server] data_dir: {config.data_dir} is not a directory")
    Accounts(config.accounts_db).close()
    for warning in tls.check(config):
        print(f"mailforge: warning: {warning}", file=sys.stderr)
    warn_open_relay(config)
    services = ", ".join(f"{name} {' '.join(svc.listen)}" for name, svc in config.services().items())
    print(f"mailforge: {config.path} is valid ({services or 'no services enabled'})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
