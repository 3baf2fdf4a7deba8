"""Smoke tests for the bench tools: mostly the pieces that need no real server, and one tiny
POP3 load against a real mailforge (a few seconds)."""

import asyncio
import contextlib
import os
import ssl
import sys
import time
from pathlib import Path

import pytest

from bench import cluster, fsrate, imaptest, latency, load, peers, remote, tune


def test_body_has_the_asked_size_and_ends_the_data():
    body = load.Body(1024, "bench1@bench.test")
    message = body.message()
    assert message.endswith(b"\r\n.\r\n")
    assert abs(len(message) - 1024) < 80
    assert b"\r\n." not in message[:-5]  # nothing that would need dot-stuffing
    assert body.message() != message


def test_set_toml_keys_keeps_comments_and_adds_missing_keys(tmp_path):
    conf = tmp_path / "mailforge.toml"
    conf.write_text('# top\n[smtp]\nlisten = ["127.0.0.1:2525"]  # old\nworkers = 2\n[metrics]\n')
    peers.set_toml_keys(conf, {"smtp": {"listen": ["127.0.0.1:3000"], "max_connections": 9},
                               "metrics": {"listen": ""}})
    text = conf.read_text()
    assert "# top" in text and 'listen = ["127.0.0.1:3000"]' in text
    assert "max_connections = 9" in text and 'listen = ""' in text


async def _fake_smtp(reader, writer):
    """Just enough SMTP for the load client: pipelining, one message per connection."""
    writer.write(b"220 fake\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb == b"EHLO":
            writer.write(b"250-fake\r\n250 PIPELINING\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go\r\n")
            while await reader.readline() != b".\r\n":
                pass
            writer.write(b"250 queued\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 ok\r\n")
    writer.close()


def _against(handler, driver, opts, users=()):
    async def run():
        server = await asyncio.start_server(handler, peers.LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        target = peers.Target("fake", peers.LOOPBACK, port, "u@bench.test", 0, None,
                              users=users, password="pw")
        async with server:
            return await driver(target, opts, time.monotonic() + 30)

    return asyncio.run(run())


def test_load_against_a_fake_server():
    opts = load.parse_args(["smtp", "--clients", "4", "--messages", "40", "--reuse", "3"])
    stats = _against(_fake_smtp, load.load, opts)
    assert (stats.accepted, stats.errors, stats.timed_out) == (40, 0, False)
    assert len(stats.latencies) == 40


def test_maildir_messages_have_the_exact_size_and_lf_ends():
    for size in (1, 200, 1024, 1025, 4096):
        message = load.maildir_message(7, size)
        assert len(message) == max(size, len(load.maildir_message(7, 1)))
        assert b"\r" not in message and message.endswith(b"\n")
        assert b"\n." not in message  # the server has nothing to dot-stuff
    assert load.mailbox(3, 512)[0] != load.mailbox(3, 512)[1]


def _fake_pop3(box, stat_count=None):
    """A POP3 server holding `box` (LF messages); `stat_count` makes STAT lie about the count."""
    crlf = [m.replace(b"\n", b"\r\n") for m in box]

    async def serve(reader, writer):
        writer.write(b"+OK fake\r\n")
        while line := await reader.readline():
            verb, _, arg = line.strip().partition(b" ")
            if verb == b"STAT":
                count = len(crlf) if stat_count is None else stat_count
                writer.write(b"+OK %d %d\r\n" % (count, sum(map(len, crlf))))
            elif verb == b"RETR":
                writer.write(b"+OK\r\n" + crlf[int(arg) - 1] + b".\r\n")
            else:
                writer.write(b"+OK\r\n")
                if verb == b"QUIT":
                    break
        writer.close()

    return serve


def test_pop3_load_against_a_fake_server():
    opts = load.parse_args(["pop3", "--clients", "3", "--sessions", "12", "--messages", "5",
                            "--size", "700"])
    users = ("a@bench.test", "b@bench.test", "c@bench.test")
    stats = _against(_fake_pop3(load.mailbox(5, 700)), load.load_pop3, opts, users)
    assert (stats.accepted, stats.errors, stats.timed_out) == (12, 0, False)


def test_pop3_load_counts_a_wrong_mailbox_as_an_error():
    opts = load.parse_args(["pop3", "--clients", "1", "--sessions", "2", "--messages", "5"])
    stats = _against(_fake_pop3(load.mailbox(5, 300), stat_count=4), load.load_pop3, opts,
                     ("a@bench.test",))
    assert (stats.accepted, stats.errors) == (0, 2)
    assert stats.error_kinds == {"STAT 4 messages, not 5": 2}


def test_pop3_clients_are_capped_by_the_dovecot_users():
    with pytest.raises(SystemExit):
        load.parse_args(["pop3", "--clients", str(peers.DOVECOT_USERS + 1)])


def test_pop3_table_has_no_delivery_columns():
    stats = load.Stats(accepted=4, latencies=[0.1, 0.2, 0.3, 0.4], wall=2.0, cpu=0.1)
    results = [load.PeerResult("mailforge", stats, server_cpu=0.2), load.PeerResult("dovecot")]
    rows = load.table_rows(results, delivery=False)
    assert [len(row) for row in rows] == [len(load.headers("session", False))] * 2
    assert rows[0][3] == "2" and rows[0][-2] == "50.00"


def test_fill_maildir_puts_every_message_in_new(tmp_path):
    box = load.mailbox(4, 256)
    peers.fill_maildir(tmp_path / "Maildir", box)
    files = sorted((tmp_path / "Maildir" / "new").iterdir())
    assert sorted(f.read_bytes() for f in files) == sorted(box)
    assert (tmp_path / "Maildir" / "cur").is_dir() and (tmp_path / "Maildir" / "tmp").is_dir()


def test_pop3_load_against_mailforge():
    """Two sessions against a real mailforge: config, users, Maildir fill and plaintext login."""
    opts = load.parse_args(["pop3", "--clients", "2", "--sessions", "2", "--messages", "3",
                            "--peers", "mailforge", "--timeout", "60"])
    result = load.measure("mailforge", load.runners(opts)["mailforge"], opts,
                          time.monotonic() + opts.timeout)
    if result.note.startswith("skipped"):
        pytest.skip(result.note)
    assert result.stats is not None, result.note
    assert (result.stats.accepted, result.stats.errors) == (2, 0)


def test_relay_load_against_mailforge():
    """Twenty messages through a real mailforge to the counting sink, all counted there."""
    opts = load.parse_args(["relay", "--clients", "4", "--messages", "20", "--peers", "mailforge",
                            "--timeout", "90", "--deliver-timeout", "60"])
    result = load.measure("mailforge", load.runners(opts)["mailforge"], opts,
                          time.monotonic() + opts.timeout)
    if result.note.startswith("skipped"):
        pytest.skip(result.note)
    assert result.stats is not None, result.note
    assert (result.stats.accepted, result.stats.errors) == (20, 0)
    assert result.delivered == 20 and "delivery workers: 2" in result.info


@pytest.mark.skipif(not peers.DOVEADM.exists(), reason="doveadm (dovecot-core) is not installed")
def test_dovecot_anchor_passwords_are_hashed_with_their_own_salts(tmp_path, monkeypatch):
    users = tmp_path / "users"
    users.write_text("bench1@bench.test:{PLAIN}pass::::::\nbench2@bench.test:{PLAIN}pass::::::\n")
    monkeypatch.setattr(peers, "DOVECOT_USERS_FILE", users)
    peers.hash_dovecot_passwords(["-s", "SHA512-CRYPT", "-r", "6000"])
    lines = users.read_text().splitlines()
    hashes = [line.split(":")[1] for line in lines]
    assert all(h.startswith("{SHA512-CRYPT}$6$rounds=6000$") for h in hashes)
    assert hashes[0] != hashes[1]
    assert all(line.endswith("::::::") for line in lines)


def test_percentiles_are_nearest_rank():
    values = [i / 1000 for i in range(100, 0, -1)]  # 0.001 .. 0.100, unsorted
    assert latency.percentile(values, 0.50) == 0.050
    assert latency.percentile(values, 0.99) == 0.099  # the 99th of 100, not the largest
    assert latency.percentile(values, 1.0) == 0.100
    assert latency.percentile([7.0], 0.9) == 7.0
    assert latency.summary(values) == {"p50": 0.050, "p90": 0.090, "p99": 0.099, "max": 0.100}
    assert latency.summary([]) == {}
    with pytest.raises(ValueError):
        latency.percentile([], 0.5)


def test_smtp_table_has_every_percentile_and_max():
    stats = load.Stats(accepted=100, latencies=[i / 1000 for i in range(1, 101)], wall=1.0)
    row = load.table_rows([load.PeerResult("mailforge", stats)])[0]
    columns = load.headers("msg", True)
    cells = dict(zip(columns, row))
    assert (cells["p50 ms"], cells["p90 ms"], cells["p99 ms"], cells["max ms"]) == (
        "50.0", "90.0", "99.0", "100.0")


def test_tune_options_parse_lists_and_quick_bounds():
    opts = tune.parse_args(["--workers", "1,2,4,8", "--threads", "2,16"])
    assert (opts.worker_counts, opts.thread_counts) == ([1, 2, 4, 8], [2, 16])
    quick = tune.parse_args(["--quick"])
    assert quick.worker_counts == [1, 2] and quick.timeout <= 60
    for bad in (["--workers", "1,x"], ["--threads", "0"], ["--workers", ""], ["--clients", "0"]):
        with pytest.raises(SystemExit):
            tune.parse_args(bad)


def test_tune_load_options_are_what_bench_load_parses():
    opts = tune.parse_args(["--clients", "3", "--messages", "9"])
    smtp = tune.load_options("smtp", opts, workers=4)
    assert (smtp.command, smtp.clients, smtp.messages, smtp.workers, smtp.peer_names) == (
        "smtp", 3, 9, 4, ["mailforge"])


def test_tune_table_rows():
    points = [tune.Point("smtp", 1, 8, done=40, errors=0, rate=312.4, p50=0.0099, p99=0.0276),
              tune.Point("smtp", 8, 8, note="skipped: the run's --timeout was reached before it")]
    rows = tune.table_rows(points)
    assert rows[0] == ("smtp", "1", "8", "40", "0", "312", "9.9", "27.6", "default", "1", "-",
                       "-", "")
    assert rows[1][5:8] == ("-", "-", "-") and rows[1][-1].startswith("skipped")
    assert all(len(row) == len(tune.HEADERS) for row in rows)


def test_tune_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    points = [tune.Point("smtp", w, t, done=10, rate=100.0 * w, p50=0.01, p99=0.02 * w)
              for t in (2, 8) for w in (1, 2, 4)]
    tune.plot(points, tmp_path / "plot.png", "test")
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")


def test_host_options_make_a_remote_target():
    opts = load.parse_args(["pop3", "--host", "mail.example.test", "--tls", "--user",
                            "load{n}@example.test", "--password", "pw", "--clients", "3"])
    target = remote.target(opts)
    assert (target.host, target.port, target.tls_mode, target.pid) == (
        "mail.example.test", 995, "tls", 0)
    assert target.users == ("load1@example.test", "load2@example.test", "load3@example.test")
    assert target.ssl_context.verify_mode == ssl.CERT_REQUIRED
    smtp = remote.target(load.parse_args(["smtp", "--host", "h", "--starttls", "--insecure",
                                          "--rcpt", "x@h"]))
    assert (smtp.port, smtp.rcpt, smtp.auth, smtp.ssl_context.check_hostname) == (25, "x@h", False, False)
    assert load.parse_args(["smtp"]).host is None


@pytest.mark.parametrize("argv", [
    ["smtp", "--host", "h", "--tls", "--starttls", "--rcpt", "x@h"],  # one way to secure
    ["smtp", "--host", "h", "--auth", "--rcpt", "x@h"],                # AUTH needs a login
    ["smtp", "--host", "h"],                                           # nobody to send to
    ["pop3", "--host", "h", "--user", "u"],                            # no password
    ["smtp", "--tls"],                                                 # TLS to a started peer
])
def test_host_option_mistakes_are_refused(argv):
    with pytest.raises(SystemExit):
        load.parse_args(argv)


def test_tune_smtp_rows_show_delivered_against_accepted():
    point = tune.Point("smtp", 8, 8, done=40, rate=1000.0, delivery_workers=4, mailboxes=1000,
                       delivered=930.0)
    assert tune.table_rows([point])[0][8:12] == ("4", "1,000", "930", "0.93")
    opts = tune.parse_args(["--delivery-workers", "2,4", "--mailboxes", "1,1000",
                            "--client-processes", "3"])
    assert (opts.delivery_counts, opts.mailbox_counts) == ([2, 4], [1, 1000])
    smtp = tune.load_options("smtp", opts, workers=8, delivery_workers=4, mailboxes=1000)
    assert (smtp.delivery_workers, smtp.mailboxes, smtp.client_processes, smtp.count_delivered) == (
        4, 1000, 3, True)
    assert tune.parse_args([]).delivery_counts == [None]


def test_smtp_mailboxes_spread_recipients_and_count_delivery(tmp_path):
    opts = load.parse_args(["smtp", "--mailboxes", "3"])
    assert opts.count_delivered and opts.mailboxes == 3
    for bad in (["--mailboxes", "0"], ["--client-processes", "0"], ["--delivery-workers", "0"]):
        with pytest.raises(SystemExit):
            load.parse_args(["smtp", *bad])
    users = peers.bench_users(3)
    dirs = tuple(tmp_path / user / "new" for user in users)
    for n, directory in enumerate(dirs):
        directory.mkdir(parents=True)
        for i in range(n):
            (directory / str(i)).write_bytes(b"")
    target = peers.Target("fake", peers.LOOPBACK, 25, users[0], 0, dirs[0], rcpts=tuple(users),
                          maildirs_new=dirs)
    assert target.recipients() == tuple(users) and load.delivered_count(target) == 3
    alone = peers.Target("fake", peers.LOOPBACK, 25, users[0], 0, dirs[2])
    assert alone.recipients() == (users[0],) and load.delivered_count(alone) == 2


def test_client_processes_merge_into_one_load():
    first, second = load.Stats(), load.Stats()
    first.accept(0.1)
    first.started, first.wall, first.cpu = 10.0, 2.0, 1.0
    second.accept(0.2)
    second.fail(TimeoutError())
    second.started, second.wall, second.cpu = 11.0, 2.5, 1.5
    whole = load.Stats.merged([first, second])
    assert (whole.accepted, whole.errors, sorted(whole.latencies)) == (2, 1, [0.1, 0.2])
    assert (whole.started, whole.wall, whole.cpu) == (10.0, 3.5, 2.5)
    assert whole.error_kinds == {"TimeoutError": 1}


@pytest.mark.parametrize("layout", fsrate.LAYOUTS)
def test_fsrate_counts_synced_renames_and_cleans_up(tmp_path, layout):
    rate = fsrate.measure(tmp_path, layout, 2, 64, 0.05)
    assert (rate.layout, rate.writers) == (layout, 2)
    assert rate.files > 0 and rate.per_second > 0
    assert os.listdir(tmp_path) == []


def test_fsrate_options():
    opts = fsrate.parse_args(["--writers", "1,4", "--seconds", "0.5", "--mailforge"])
    assert (opts.writer_counts, opts.seconds, opts.mailforge, opts.mailboxes) == ([1, 4], 0.5, True,
                                                                                  1000)
    for bad in (["--writers", "0"], ["--seconds", "0"], ["--mailboxes", "0"],
                ["--dir", "/nonexistent/fsrate"]):
        with pytest.raises(SystemExit):
            fsrate.parse_args(bad)


def test_cluster_options_and_the_loads_they_make():
    opts = cluster.parse_args(["--nodes", "3,1", "--clients", "4", "--messages", "9"])
    assert opts.node_counts == [1, 3]
    smtp, imap, pop3 = (cluster.load_options(s, opts) for s in ("smtp", "imap", "pop3"))
    assert (smtp.command, smtp.clients, smtp.messages, smtp.reuse) == ("smtp", 4, 9, 1)
    assert (imap.ops, imap.messages) == (opts.ops, cluster.IMAP_MESSAGES)
    assert (pop3.sessions, pop3.messages) == (opts.logins, 0)  # logins to an empty mailbox
    for bad in (["--nodes", "1,x"], ["--nodes", "0"], ["--clients", "0"], ["--clients", "51"],
                ["--logins", "0"]):
        with pytest.raises(SystemExit):
            cluster.parse_args(bad)


def test_imaptest_takes_its_own_probabilities_and_refuses_other_words(capsys):
    binary = ["--imaptest", sys.executable]
    assert imaptest.parse_args(binary + ["list=0", "append=100,5"]).profile == [
        "list=0", "append=100,5"]
    with pytest.raises(SystemExit):
        imaptest.parse_args(binary + ["fetch"])
    assert "'fetch' is not COMMAND=PERCENT" in capsys.readouterr().err


IMAPTEST_OUTPUT = """\
Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe
100%  50%  50% 100% 100% 100%  50% 100% 100% 100%
   6  202  205    6  384  574  155  184  383  362  15/ 50
  44  369  373    9  690  982  269  351  691  374  25/ 50
   0  354  355    3  695  981  279  351  692  540  50/ 50 (26 stalled >3s)
   0  356  382    6  713  977  284  348  714  413  50/ 50
2129   68   69  129   63   66   67   69   63   68 ms/cmd avg
Totals:
Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe
  50 1484 1465   50 2891 4113 1074 1479 2893 2360
"""


def test_imaptest_steady_window_opens_once_every_client_is_logged_in():
    window = imaptest.SteadyWindow(clients=50)
    opened = [window.feed(line) for line in IMAPTEST_OUTPUT.splitlines(keepends=True)]
    assert opened.index(True) == 3 and opened.count(True) == 1  # the line of the 50th login
    # The two seconds after it, every command's count; not the clients after the counts.
    assert (window.commands, window.seconds) == (4250 + 4193, 2)


def test_imaptest_rounds_alternate_the_order_and_compare_within_each_round(monkeypatch, capsys):
    # The host's cost of a system call drifts: each round's ratio uses that round's mailforge.
    rates = iter([5000, 4000, 6000, 6600, 5000, 4500])
    order = []

    def run_peer(name, opts, mbox):
        order.append(name)
        return imaptest.Outcome(name, commands=next(rates), seconds=1.0, errors=[],
                                cpu_seconds=1.0, user_seconds=0.5)

    monkeypatch.setattr(imaptest, "run_peer", run_peer)
    opts = imaptest.parse_args(["--imaptest", sys.executable, "--rounds", "3"])
    outcomes = imaptest.run_rounds(opts, Path("unused.mbox"))
    assert order == ["mailforge", "dovecot", "dovecot", "mailforge", "mailforge", "dovecot"]
    assert [o.round for o in outcomes] == [1, 1, 2, 2, 3, 3]
    assert imaptest.ratios(outcomes) == {"dovecot": [0.8, 6000 / 6600, 0.9]}
    imaptest.report(outcomes, opts)
    assert "dovecot / mailforge over 3 rounds: median 0.90 (0.80–0.91)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        imaptest.parse_args(["--imaptest", sys.executable, "--rounds", "0"])


def test_an_imaptest_run_counts_its_totals_and_its_error_lines():
    output = ("Logi List Fetc\n100%  50% 100%\n   5    3   10  50/ 50\n"
              "Error: bench7@bench.test: Keyword used without being in FLAGS: $Label1\n"
              "Panic: something worse\n  Error: indented, not imaptest's\n"
              "Totals:\nLogi List Fetc\n100%  50% 100%\n  50   30  100\n")
    outcome = imaptest.Outcome.of_output("mailforge", output, 10.0)
    assert (outcome.commands, outcome.seconds, outcome.round) == (180, 10.0, 1)
    assert outcome.rate == 18.0
    assert outcome.errors == [
        "Error: bench7@bench.test: Keyword used without being in FLAGS: $Label1",
        "Panic: something worse"]


def test_an_imaptest_run_shows_the_warnings_errors_and_tracebacks_of_our_log(tmp_path):
    log = tmp_path / "mailforge.log"
    log.write_text(
        "2026-12-05 16:53:52,471 mailforge.session[29703] INFO connect session=7407.1\n"
        "2026-12-05 16:54:01,002 mailforge.supervisor[29689] WARNING imap-1 was killed by "
        "SIGKILL after 9.1 s; restarting in 0.0 s\n"
        "2026-12-05 16:54:02,100 mailforge.imap[29703] ERROR bench3@bench.test: FETCH failed\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "2026-12-05 16:54:03,000 mailforge.imap[29703] INFO WARNING is only a word here\n")
    found = imaptest.server_trouble(log)
    assert len(found) == 3
    assert "WARNING imap-1 was killed" in found[0] and "ERROR bench3" in found[1]
    assert found[2] == "Traceback (most recent call last):"


def test_the_mailbox_loads_take_a_data_dir_and_dovecot_starts_inside_it(tmp_path):
    assert load.parse_args(["imap", "--data-dir", str(tmp_path)]).data_dir == tmp_path
    assert load.parse_args(["pop3"]).data_dir is None
    started = []

    @contextlib.contextmanager
    def run_dovecot():
        started.append(True)
        yield "target"

    with peers.dovecot_in(None, run_dovecot()) as target:  # None: the homes stay where they are
        assert target == "target" and started == [True]
