"""Hypothesis against every parser entry point, in both implementations: whatever the bytes,
the answer is a result or a ParseError (a protocol error for the client), never another
exception, and what a parser says it consumed is within what it was given. SASL exchanges
end in a challenge, a success or a failure, never an exception.

tests/unit/test_speedups_property.py checks that the twins agree; this checks that neither
can be made to crash. Crashes found here stay as @example regression cases.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from mailforge.auth.accounts import Accounts
from mailforge.auth.sasl import MECHANISMS, SASLSession
from mailforge.speedups import ParseError

from .conftest import EXAMPLES

fuzz_settings = settings(max_examples=EXAMPLES, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])

# Bytes that steer the parsers into their branches more often than uniform noise does.
ALPHABET = b' \t\r\n.:<>@"\\=()[]{}+*%,~0123456789aAzZ\x00\x7f\xc3\xa4\xff'
noise = (st.binary(max_size=200)
         | st.lists(st.sampled_from(ALPHABET), max_size=200).map(bytes)
         | st.builds(lambda head, n: head + b"(" * n, st.binary(max_size=20), st.integers(0, 5000))
         | st.builds(lambda n: b"a1 APPEND x {%d}\r\n" % n, st.integers(0, 2**70)))
text = noise.map(lambda data: data.decode("latin-1"))


def survives(function, *args):
    try:
        return function(*args)
    except ParseError as exc:
        return exc


@fuzz_settings
@given(line=noise)
@example(line=b"MAIL FROM:<" + b"@" * 100_000 + b">")
def test_smtp_and_pop3_tokenizers(impl, line):
    split = survives(impl.parse.split_command, line)
    rest = split[1] if isinstance(split, tuple) else line  # what MAIL/RCPT would parse
    for keyword in (b"FROM", b"TO"):
        survives(impl.parse.parse_path, line, keyword)
        survives(impl.parse.parse_path, rest, keyword)
    survives(impl.parse.parse_pop3, line)


@fuzz_settings
@given(chunks=st.lists(noise, max_size=8))
@example(chunks=[b"a " + b"(" * 10_000 + b"\r\n"])
@example(chunks=[b"a LOGIN {18446744073709551616}\r\n"])
def test_imap_command_parser(impl, chunks):
    parser = impl.parse.CommandParser(max_literal=1000, max_line=500, max_depth=8)
    for chunk in chunks:
        while chunk:
            try:
                command, used = parser.feed(chunk)
            except ParseError as exc:
                used = exc.consumed
            assert 0 <= used <= len(chunk)
            if used == 0:
                break  # needs more input (or a continuation)
            chunk = chunk[used:]


@fuzz_settings
@given(arg=text)
@example(arg="1:" + "9" * 5000)
@example(arg="1," * 50_000)
def test_imap_sequence_sets_and_fetch_attributes(impl, arg):
    survives(impl.parse.parse_sequence_set, arg)
    survives(impl.parse.parse_fetch_attributes, arg)
    survives(impl.parse.parse_fetch_attributes, [arg, arg.upper()])


@pytest.fixture(scope="module")
def accounts(tmp_path_factory):
    db = Accounts(tmp_path_factory.mktemp("sasl") / "accounts.sqlite3", create=True)
    db.directory.domain_add("example.test")
    db.directory.user_add("alice@example.test", "correct horse")
    yield db
    db.close()


base64ish = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=*",
                    max_size=200)
client_lines = base64ish | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()) | text


@fuzz_settings
@given(mechanism=st.sampled_from(MECHANISMS), initial=st.none() | client_lines,
       steps=st.lists(client_lines, max_size=4))
@example(mechanism="SCRAM-SHA-256", initial="biwsbj1hbGljZUBleGFtcGxlLnRlc3Qscj0=", steps=["="])
def test_sasl_exchanges_end_in_a_step(accounts, mechanism, initial, steps):
    session = SASLSession(mechanism, accounts.credentials, "mx.example.test")
    step = session.start(initial)
    for line in steps:
        assert step.kind in ("challenge", "success", "failure")
        step = session.step(line)
    assert step.kind in ("challenge", "success", "failure")
