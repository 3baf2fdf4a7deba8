"""An HTTPS server on loopback serving MTA-STS policies (RFC 8461 3.3) by Host header:
https://mta-sts.<domain>/.well-known/mta-sts.txt, and taking TLS-RPT reports POSTed to any
path (RFC 8460 3, rua=https:), in a thread, stopped by stop()."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POLICY_PATH = "/.well-known/mta-sts.txt"
# How long a `slow` domain's policy waits between its two halves: long enough that they reach
# the client in two reads, as from a slow server or over a congested path.
HALF_PAUSE = 0.3


@dataclass(frozen=True)
class Post:
    host: str
    path: str
    content_type: str
    body: bytes


def policy_text(mode: str, mx: list[str], max_age: int = 86400) -> str:
    return "".join(["version: STSv1\r\n", f"mode: {mode}\r\n",
                    *(f"mx: {m}\r\n" for m in mx), f"max_age: {max_age}\r\n"])


class MtaStsServer:
    def __init__(self, cert: Path, key: Path) -> None:
        self.policies: dict[str, str] = {}  # domain → policy text
        self.fetches: list[str] = []  # domains whose policy was asked for
        self.posts: list[Post] = []
        self.slow: set[str] = set()  # domains whose policy is sent in two halves
        self.refuse_posts = False  # answer report POSTs 503 (and keep none)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                host = self.headers.get("Host", "").split(":")[0].lower()
                domain = host.removeprefix("mta-sts.")
                server.fetches.append(domain)
                text = server.policies.get(domain)
                if self.path != POLICY_PATH or not host.startswith("mta-sts.") or text is None:
                    self.send_error(404)
                    return
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if domain in server.slow:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    time.sleep(HALF_PAUSE)
                    body = body[len(body) // 2:]
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if server.refuse_posts:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.posts.append(Post(self.headers.get("Host", ""), self.path,
                                         self.headers.get("Content-Type", ""), body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
