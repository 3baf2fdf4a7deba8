"""The extensions and their twins agree on arbitrary bytes: the same result or the same error.

The `fuzz` tests push a million seeded random inputs through each extension (run with
`-m fuzz`) and check that the process's memory stays flat, which a reference leak would not.
"""

import random
import resource

import pytest
from hypothesis import given, strategies as st

from mailforge.speedups import crammd5, parse, spool

ext_parse = pytest.importorskip("mailforge.speedups._parse")
ext_crammd5 = pytest.importorskip("mailforge.speedups._crammd5")
ext_spool = pytest.importorskip("mailforge.speedups._spool")

# Bytes that steer the parsers into their interesting branches more often than uniform noise.
ALPHABET = b' \t\r\n.:<>@"\\=()[]{}+*%,0123456789aAzZ~\xc3\xa4\xff'
noise = st.binary(max_size=80) | st.lists(st.sampled_from(ALPHABET), max_size=80).map(bytes)


def outcome(function, *args):
    try:
        return "ok", function(*args)
    except parse.ParseError as exc:
        return "error", type(exc), exc.args, exc.consumed, exc.tag


@given(noise)
def test_smtp_and_pop3(data):
    assert outcome(parse.split_command, data) == outcome(ext_parse.split_command, data)
    for keyword in (b"FROM", b"TO"):
        assert outcome(parse.parse_path, data, keyword) == outcome(ext_parse.parse_path, data,
                                                                   keyword)
    assert outcome(parse.parse_pop3, data) == outcome(ext_parse.parse_pop3, data)


def kinds(result):
    """The argument types of a parsed command (literal, literal8, quoted), which == hides."""
    if result[0] != "ok" or result[1][0] is None:
        return None
    return [type(arg).__name__ for arg in result[1][0].args]


def feed_all(module, chunks):
    parser = module.CommandParser(max_literal=50, max_line=60, max_depth=3)
    events = []
    for chunk in chunks:
        while True:
            result = outcome(parser.feed, chunk)
            events.append((result, kinds(result), parser.wants_continuation))
            used = result[1][1] if result[0] == "ok" else result[3]
            chunk = chunk[used:]
            if not chunk:
                break
    return events


@given(st.lists(noise, max_size=6))
def test_imap_parser(chunks):
    assert feed_all(parse, chunks) == feed_all(ext_parse, chunks)


@given(st.text(alphabet="0123456789:*,$.x١", max_size=20))
def test_sequence_sets(text):
    assert outcome(parse.parse_sequence_set, text) == outcome(ext_parse.parse_sequence_set, text)


@given(st.text(alphabet="BODYPEK.[]<>()0123456789 HEADRFILTXMNUS", max_size=40))
def test_fetch_attributes(text):
    assert (outcome(parse.parse_fetch_attributes, text)
            == outcome(ext_parse.parse_fetch_attributes, text))


@given(st.binary(max_size=100), st.binary(max_size=100), st.binary(max_size=40))
def test_crammd5(password, challenge, response):
    state = crammd5.cram_state(password)
    assert ext_crammd5.cram_state(password) == state
    assert ext_crammd5.cram_verify(state, challenge, response) == crammd5.cram_verify(
        state, challenge, response)


def unstuff(module, chunks):
    reader, out, steps = module.DotUnstuffer(), [], []
    for chunk in chunks:
        if reader.done:
            break
        body, used = reader.feed(chunk)
        out.append(body)
        steps.append((used, reader.done))
    # The extension may hand bytes over sooner than the twin, never later nor others.
    return b"".join(out), steps, reader.done, reader.bare_newline if reader.done else None


@given(st.lists(noise, max_size=8))
def test_dot_unstuffing(chunks):
    twin, ext = unstuff(spool, chunks), unstuff(ext_spool, chunks)
    assert twin[1:] == ext[1:]
    assert ext[0].startswith(twin[0]) if not twin[2] else ext[0] == twin[0]


@given(st.lists(noise, max_size=8))
def test_crlf_to_lf(chunks):
    twin, ext = spool.CrlfToLf(), ext_spool.CrlfToLf()
    assert [twin.feed(c) for c in chunks] == [ext.feed(c) for c in chunks]
    assert twin.flush() == ext.flush()


FUZZ_INPUTS = 1_000_000
# Growth allowed over the run: allocator noise, not a leak of a million small objects.
MAX_GROWTH_KB = 4096


def random_inputs(seed: int):
    rng = random.Random(seed)
    for _ in range(FUZZ_INPUTS):
        size = rng.randrange(64)
        yield bytes(rng.choice(ALPHABET) if rng.random() < 0.7 else rng.randrange(256)
                    for _ in range(size))


def max_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def fuzz_parse(data: bytes, parser) -> None:
    for call in (lambda: ext_parse.split_command(data), lambda: ext_parse.parse_path(data, b"TO"),
                 lambda: ext_parse.parse_pop3(data), lambda: parser.feed(data)):
        try:
            call()
        except ext_parse.ParseError:
            pass


def fuzz_crammd5(data: bytes, state: bytes) -> None:
    ext_crammd5.cram_verify(state, data, data[:32])
    ext_crammd5.cram_state(data)


def fuzz_spool(data: bytes, _: object) -> None:
    reader = ext_spool.DotUnstuffer()
    reader.feed(data)
    reader.feed(data)
    ext_spool.CrlfToLf().feed(data)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("target,make", [
    (fuzz_parse, lambda: ext_parse.CommandParser(max_literal=30, max_line=100)),
    (fuzz_crammd5, lambda: ext_crammd5.cram_state(b"secret")),
    (fuzz_spool, lambda: None),
])
def test_fuzz_a_million_inputs(target, make):
    context = make()
    inputs = random_inputs(1234)
    for data in (next(inputs) for _ in range(FUZZ_INPUTS // 10)):  # warm up the allocator
        target(data, context)
    before = max_rss_kb()
    for data in inputs:
        target(data, context)
    assert max_rss_kb() - before < MAX_GROWTH_KB
