"""A counting SMTP sink for `bench.load relay`: takes every message, keeps none.

    python bench/sink.py --port P --count-file F

It answers as fast as it can (PIPELINING, uvloop when installed) and writes how many messages
it has taken to F (replaced atomically, every COUNT_INTERVAL s while the count moves), so the
bench reads the same figure for every peer that relays to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os

try:
    import uvloop
except ImportError:
    uvloop = None

COUNT_INTERVAL = 0.05
EHLO_REPLY = b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n"
END_OF_DATA = b"\r\n.\r\n"


class Sink:
    def __init__(self, count_file: str) -> None:
        self.count = 0
        self.count_file = count_file

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink.bench.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(EHLO_REPLY if verb == b"EHLO" else b"250 sink.bench.test\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await reader.readuntil(END_OF_DATA)
                    self.count += 1
                    writer.write(b"250 2.0.0 Ok: discarded\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                if not reader._buffer:  # nothing pipelined waits: send the replies now
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def publish(self) -> None:
        written = -1
        while True:
            if self.count != written:
                written = self.count
                tmp = f"{self.count_file}.tmp"
                with open(tmp, "w") as fh:
                    fh.write(str(written))
                os.replace(tmp, self.count_file)
            await asyncio.sleep(COUNT_INTERVAL)


async def main(port: int, count_file: str) -> None:
    sink = Sink(count_file)
    server = await asyncio.start_server(sink.session, "127.0.0.1", port, backlog=1024,
                                        limit=1 << 20)
    print("sink ready", flush=True)
    async with server:
        await asyncio.gather(server.serve_forever(), sink.publish())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count-file", required=True)
    opts = ap.parse_args()
    if uvloop is not None:
        uvloop.install()
    asyncio.run(main(opts.port, opts.count_file))
