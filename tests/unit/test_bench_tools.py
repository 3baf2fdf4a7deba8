"""Smoke tests for the bench tools: the pieces that need no real server."""

import asyncio
import time

from bench import load, peers


def test_body_has_the_asked_size_and_ends_the_data():
    body = load.Body(1024, "bench1@bench.test")
    message = body.message()
    assert message.endswith(b"\r\n.\r\n")
    assert abs(len(message) - 1024) < 80
    assert b"\r\n." not in message[:-5]  # nothing that would need dot-stuffing
    assert body.message() != message


def test_pending_subcommands_exit_2(capsys):
    assert load.main(["pop3"]) == 2
    assert "not implemented yet" in capsys.readouterr().err


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


def test_load_against_a_fake_server():
    opts = load.parse_args(["smtp", "--clients", "4", "--messages", "40", "--reuse", "3"])

    async def run():
        server = await asyncio.start_server(_fake_smtp, peers.LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        target = peers.Target("fake", peers.LOOPBACK, port, "u@bench.test", 0, None)
        async with server:
            return await load.load(target, opts, time.monotonic() + 30)

    stats = asyncio.run(run())
    assert (stats.accepted, stats.errors, stats.timed_out) == (40, 0, False)
    assert len(stats.latencies) == 40
