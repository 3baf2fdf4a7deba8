"""Extension vs twin on the hot paths, side by side in one run (compare ratios, not times).

    .venv/bin/pytest bench/test_bench_speedups.py --benchmark-group-by=group -s

Each workload runs on the twin, then on the extension; the extension's run prints the ratio
of the two medians (also kept in the JSON as extra_info["speedup"]). Targets from issue 3:
SMTP and IMAP command parsing ≥ 5×, CRAM-MD5 verify ≥ 2×, DATA unstuffing ≥ 5×.
"""

import hmac
import importlib

import pytest

IMPLEMENTATIONS = {"python": "", "cython": "_"}
_medians: dict[str, float] = {}

SMTP_LINES = [b"EHLO client.example.test", b"MAIL FROM:<alice@example.test> SIZE=1024 BODY=8BITMIME",
              b"RCPT TO:<bob@example.test>", b"RCPT TO:<carol@example.test> NOTIFY=NEVER",
              b"DATA", b"QUIT"]
IMAP_SESSION = (b"a1 LOGIN \"bob@example.test\" \"secret\"\r\na2 SELECT INBOX\r\n"
                b"a3 UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS "
                b"(From To Subject Date Message-ID)])\r\na4 UID STORE 5 +FLAGS.SILENT (\\Seen)\r\n"
                b"a5 APPEND Sent (\\Seen) {11+}\r\nhello world\r\na6 IDLE\r\n")
MESSAGE_LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
MESSAGE_1K = b"Subject: test\r\n\r\n" + MESSAGE_LINE * 13 + b"..stuffed\r\n.\r\n"
MESSAGE_256K = b"Subject: big\r\n\r\n" + MESSAGE_LINE * 3500 + b".\r\n"
CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def module(kind: str, name: str):
    try:
        return importlib.import_module(f"mailforge.speedups.{IMPLEMENTATIONS[kind]}{name}")
    except ImportError:
        pytest.skip("the Cython extensions are not built")


def measure(benchmark, group: str, kind: str, function) -> None:
    benchmark.group = group
    benchmark(function)
    median = benchmark.stats.stats.median
    _medians[f"{group}/{kind}"] = median
    twin = _medians.get(f"{group}/python")
    if kind == "cython" and twin:
        benchmark.extra_info["speedup"] = round(twin / median, 1)
        print(f"\n{group}: extension {twin / median:.1f}x the twin")


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_smtp_commands(benchmark, kind):
    parse = module(kind, "parse")

    def run():
        for line in SMTP_LINES:
            verb, arg = parse.split_command(line)
            if verb == "MAIL":
                parse.parse_path(arg, b"FROM")
            elif verb == "RCPT":
                parse.parse_path(arg, b"TO")
    measure(benchmark, "smtp-parse", kind, run)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_imap_commands(benchmark, kind):
    parse = module(kind, "parse")

    def run():
        parser = parse.CommandParser()
        data = IMAP_SESSION
        while data:
            _, used = parser.feed(data)
            data = data[used:]
    measure(benchmark, "imap-parse", kind, run)


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_crammd5_verify(benchmark, kind):
    crammd5 = module(kind, "crammd5")
    state = crammd5.cram_state(b"tanstaaftanstaaf")
    digest = hmac.new(b"tanstaaftanstaaf", CHALLENGE, "md5").hexdigest().encode()
    measure(benchmark, "crammd5-verify", kind, lambda: crammd5.cram_verify(state, CHALLENGE, digest))


@pytest.mark.parametrize("size", ["1k", "256k"])
@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_data_unstuffing(benchmark, kind, size):
    spool = module(kind, "spool")
    message = MESSAGE_1K if size == "1k" else MESSAGE_256K
    measure(benchmark, f"data-unstuff-{size}", kind, lambda: spool.DotUnstuffer().feed(message))
