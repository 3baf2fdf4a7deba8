"""A small HTTPS client for the web console's tests: http.client with the server's own
certificate trusted, cookies kept, forms posted with the page's CSRF token, and a chosen
source address (127.0.0.2… on loopback) for the brute-force tests."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
LOGIN_FIELD = re.compile(r'name="login_token" value="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def json(self) -> object:
        return json.loads(self.text)


@dataclass
class ConsoleClient:
    port: int
    ca_file: str
    source: str = "127.0.0.1"
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        context = ssl.create_default_context(cafile=self.ca_file)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30,
                                           source_address=(self.source, 0))
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            answer = Answer(response.status, response.headers, response.read().decode(errors="replace"))
        finally:
            conn.close()
        for cookie in answer.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0].strip('"')
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        found = CSRF_FIELD.search(answer.text)
        if found:
            self.csrf = found[1]
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str], csrf: bool = True) -> Answer:
        data = {**({"csrf": self.csrf} if csrf else {}), **fields}
        return self.request("POST", path, urllib.parse.urlencode(data).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self, name: str, password: str) -> Answer:
        token = LOGIN_FIELD.search(self.get("/login").text)[1]
        answer = self.post("/login", {"login_token": token, "name": name, "password": password},
                           csrf=False)
        if answer.status == 303:
            self.get(answer.headers["Location"])  # picks up the session's CSRF token
        return answer

    def api(self, method: str, path: str, token: str, payload: dict | None = None) -> Answer:
        body = None if payload is None else json.dumps(payload).encode()
        return self.request(method, path, body, {"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"})
