"""`mailforge admin add|list|remove|passwd|role|token`: who may log in to the web console (admin/), and
API tokens for scripts."""

from __future__ import annotations

import argparse
import secrets
import time

from .accounts import group, leaf, print_table, read_password
from ..auth.accounts import open_accounts
from ..auth.api import ADMIN_ROLES
from ..config import Config
from ..errors import EXIT_OK

# 96 bits, typed from the terminal once and then kept in a password manager.
GENERATED_BYTES = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    admin = group(subparsers, "admin", "administrators of the web console")
    add = leaf(admin, "add", _add, "add an administrator")
    add.add_argument("name", metavar="NAME")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line from stdin")
    secret.add_argument("--generate", action="store_true",
                        help="make a random password and print it, once (`make run` does this)")
    add.add_argument("--role", choices=ADMIN_ROLES, default="system",
                     help="system: everything (default); domain: only the --domain ones")
    add.add_argument("--domain", action="append", default=[], metavar="DOMAIN",
                     help="a domain a domain administrator manages (repeat for more)")
    leaf(admin, "list", _list, "list administrators")
    leaf(admin, "remove", _remove, "remove an administrator, its logins and tokens"
         ).add_argument("name", metavar="NAME")
    passwd = leaf(admin, "passwd", _passwd, "set an administrator's password (ends its console logins)")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line from stdin")
    role = leaf(admin, "role", _role, "change an administrator's role and domains")
    role.add_argument("name", metavar="NAME")
    role.add_argument("--role", choices=ADMIN_ROLES, required=True)
    role.add_argument("--domain", action="append", default=[], metavar="DOMAIN",
                      help="a domain a domain administrator manages (repeat for more)")
    leaf(admin, "token", _token, "print a new API token for NAME (Authorization: Bearer ...)"
         ).add_argument("name", metavar="NAME")


def _add(args: argparse.Namespace, config: Config) -> int:
    password = secrets.token_urlsafe(GENERATED_BYTES) if args.generate else read_password(args)
    with open_accounts(config) as accounts:
        accounts.admins.admin_add(args.name, password, args.role, args.domain)
    print(f"added administrator {args.name.strip().lower()} ({args.role})")
    if args.generate:
        print(f"its password (shown this once): {password}")
    return EXIT_OK


def _list(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        admins = accounts.admins.admins()
    print_table([(admin.name, admin.role, ",".join(admin.domains) or "-",
                  time.strftime("%Y-%m-%d %H:%M", time.localtime(admin.created))) for admin in admins])
    return EXIT_OK


def _remove(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        accounts.admins.admin_remove(args.name)
    print(f"removed administrator {args.name.strip().lower()}")
    return EXIT_OK


def _passwd(args: argparse.Namespace, config: Config) -> int:
    password = read_password(args)
    with open_accounts(config) as accounts:
        accounts.admins.admin_passwd(args.name, password)
    print(f"new password for administrator {args.name.strip().lower()}")
    return EXIT_OK


def _role(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        accounts.admins.admin_set_role(args.name, args.role, args.domain)
    print(f"administrator {args.name.strip().lower()}: {args.role} {','.join(args.domain)}".rstrip())
    return EXIT_OK


def _token(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        print(accounts.admins.issue_token(args.name))
    return EXIT_OK
