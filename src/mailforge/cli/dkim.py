"""`mailforge dkim generate|list|remove`: the DKIM keys the delivery workers sign with."""

from __future__ import annotations

import argparse

from .accounts import group, leaf, print_table
from ..addresses import normalize_domain
from ..config import Config
from ..errors import EXIT_OK
from ..mailauth.keys import ALGORITHMS, DkimKey, KeyStore, default_selector
from ..process import permissions


def register(subparsers: argparse._SubParsersAction) -> None:
    dkim = group(subparsers, "dkim", "DKIM signing keys (RSA-2048, Ed25519) per domain and selector")
    generate = leaf(dkim, "generate", _generate,
                    "make a key (mode 0600) and print the DNS TXT record to publish; the newest "
                    "key of each algorithm signs from the next reload")
    generate.add_argument("domain", metavar="DOMAIN")
    generate.add_argument("--selector", metavar="S",
                          help="the DNS label naming the key (default: ALGORITHM-YYYYMM)")
    generate.add_argument("--algorithm", choices=ALGORITHMS, default="rsa")
    listing = leaf(dkim, "list", _list, "list the keys, which ones sign, and their DNS names")
    listing.add_argument("domain", metavar="DOMAIN", nargs="?")
    remove = leaf(dkim, "remove", _remove, "delete a key (after its selector's mail is delivered)")
    remove.add_argument("domain", metavar="DOMAIN")
    remove.add_argument("selector", metavar="SELECTOR")


def _generate(args: argparse.Namespace, config: Config) -> int:
    domain = normalize_domain(args.domain)
    selector = args.selector or default_selector(args.algorithm)
    key = KeyStore(config.dkim_dir).generate(domain, selector, args.algorithm)
    # Run as root for a server whose workers drop privileges: theirs to read, nobody else's.
    permissions.hand_to_service(config, config.data_dir, key.path.parent)
    print(f"{key.domain}: {key.algorithm} key {key.selector} written to {key.path}")
    print("publish this TXT record, then reload the server (SIGHUP) to sign with it:")
    print(_zone_line(key))
    return EXIT_OK


def _list(args: argparse.Namespace, config: Config) -> int:
    store = KeyStore(config.dkim_dir)
    domain = normalize_domain(args.domain) if args.domain else None
    keys = store.keys(domain)
    if not keys:
        print("no DKIM keys")
        return EXIT_OK
    signing = set(store.signing_keys(domain))
    rows = [("DOMAIN", "SELECTOR", "ALGORITHM", "SIGNS", "DNS NAME")]
    rows += [(k.domain, k.selector, k.algorithm, "yes" if k in signing else "no",
              k.record_name) for k in keys]
    print_table(rows)
    return EXIT_OK


def _remove(args: argparse.Namespace, config: Config) -> int:
    key = KeyStore(config.dkim_dir).remove(normalize_domain(args.domain), args.selector)
    print(f"{key.domain}: key {key.selector} removed; its TXT record {key.record_name} may go "
          "once the mail it signed is delivered")
    return EXIT_OK


def _zone_line(key: DkimKey) -> str:
    """The record as a zone file line: long data split into 255-octet strings (RFC 1035)."""
    record = key.dns_record()
    chunks = " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
    return f"{key.record_name}. IN TXT ( {chunks} )"
