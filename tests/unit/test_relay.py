"""The outbound SMTP client against real servers on loopback (aiosmtpd, a scripted server)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest

from mailforge import tls
from mailforge.auth.api import Node
from mailforge.config import ClusterConfig, Config, DeliveryConfig, ServerConfig
from mailforge.queue.outbound import Outbound, Result
from mailforge.queue.relay import Message, dot_stuff
from mailforge.queue.routing import Router, owner_destination
from mailforge.resolver import Resolver
from tests.smtp_sinks import Behaviour, ScriptedServer, Sink, free_port

BODY = b"From: a@here.test\r\nSubject: hi\r\n\r\n.starts with a dot\r\nend\r\n"


def make_config(**delivery) -> Config:
    return Config(server=ServerConfig(hostname="mx.here.test"),
                  delivery=DeliveryConfig(**{"connect_timeout": 2, "command_timeout": 2, **delivery}))


def relay(config: Config, *messages: Message):
    return asyncio.run(Outbound(config, Router(config.delivery, Resolver(config.dns))).deliver(messages))


def message(*rcpts: str, id: str = "m1", **kw) -> Message:
    return Message(id, "a@here.test", list(rcpts), BODY, **kw)


@pytest.fixture
def sink():
    instance = Sink()
    yield instance
    instance.stop()


def test_dot_stuffing():
    assert dot_stuff(b".a\r\nb\r\n..c") == b"..a\r\nb\r\n...c\r\n.\r\n"


def test_delivers_with_exact_body_and_per_recipient_results(sink):
    config = make_config(mx_override={"there.test": sink.address})
    results = relay(config, message("ok@there.test", "bad@there.test", "later@there.test"))
    r = results["m1"]
    assert r["ok@there.test"].accepted and r["ok@there.test"].code == 250
    assert r["bad@there.test"].permanent and r["bad@there.test"].status == "5.1.1"
    assert not r["later@there.test"].accepted and not r["later@there.test"].permanent
    assert r["later@there.test"].status == "4.2.0"
    assert "127.0.0.1" in r["ok@there.test"].remote_mta
    (got,) = sink.received
    assert got.recipients == ["ok@there.test"] and got.sender == "a@here.test"
    assert got.data == BODY
    assert any(o.startswith("SIZE=") for o in got.mail_options)


def test_message_level_refusals_apply_to_every_accepted_recipient(sink):
    config = make_config(mx_override={"there.test": sink.address})
    results = relay(config, message("reject@there.test", "bad@there.test", id="r"),
                    message("defer@there.test", id="d"))
    assert results["r"]["reject@there.test"].permanent and results["r"]["reject@there.test"].status == "5.7.1"
    assert results["r"]["bad@there.test"].status == "5.1.1"
    assert results["d"]["defer@there.test"].code == 452


def test_dropped_connection_is_temporary_and_the_next_message_gets_a_new_one(sink):
    config = make_config(mx_override={"there.test": sink.address}, max_per_destination=1)
    results = relay(config, message("drop@there.test", id="a"), message("ok@there.test", id="b"))
    assert results["a"]["drop@there.test"].status == "4.4.2"
    assert results["b"]["ok@there.test"].accepted
    assert sink.behaviour.connections == 2


def test_stalled_server_times_out():
    stalling = Sink(Behaviour(stall=10))
    try:
        config = make_config(mx_override={"there.test": stalling.address}, command_timeout=0.5)
        started = time.monotonic()
        results = relay(config, message("stall@there.test"))
        assert time.monotonic() - started < 5
        result = results["m1"]["stall@there.test"]
        assert not result.permanent and "timeout" in result.text
    finally:
        stalling.stop()


def test_refused_connection_is_temporary():
    config = make_config(mx_override={"there.test": f"127.0.0.1:{free_port()}"})
    result = relay(config, message("ok@there.test"))["m1"]["ok@there.test"]
    assert result.code == 451 and "cannot connect" in result.text


def test_connection_reuse_and_per_connection_limit(sink):
    config = make_config(mx_override={"there.test": sink.address}, max_per_destination=1,
                         messages_per_connection=3)
    messages = [message(f"u{i}@there.test", id=f"m{i}") for i in range(7)]
    results = relay(config, *messages)
    assert all(r[f"u{i}@there.test"].accepted for i, r in enumerate(results.values()))
    assert len(sink.received) == 7 and sink.behaviour.connections == 3


def test_smarthost_with_auth_over_starttls(tmp_path):
    from aiosmtpd.smtp import AuthResult

    from mailforge import tls

    config = Config(server=ServerConfig(hostname="mx.here.test"))
    config.path = tmp_path / "mailforge.toml"
    tls.ensure_self_signed(config)
    context = tls.load_server_context(config)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    smart = Sink(tls_context=context, authenticator=authenticator, auth_require_tls=True)
    try:
        good = make_config(smarthost=smart.address, smarthost_user="relayuser",
                           smarthost_password="s3cret")
        assert relay(good, message("ok@anywhere.test"))["m1"]["ok@anywhere.test"].accepted
        assert logins == [("PLAIN", b"relayuser", b"s3cret")]
        wrong = make_config(smarthost=smart.address, smarthost_user="relayuser",
                            smarthost_password="nope")
        result = relay(wrong, message("ok@anywhere.test"))["m1"]["ok@anywhere.test"]
        assert not result.permanent and "AUTH" in result.text
        assert len(smart.received) == 1
    finally:
        smart.stop()


def test_dsn_parameters_pass_to_a_dsn_server_and_pipelining_is_used():
    server = ScriptedServer()
    try:
        config = make_config(mx_override={"there.test": server.address})
        msg = message("ok@there.test", envid="env 1+", ret="HDRS",
                      notify={"ok@there.test": "SUCCESS,FAILURE"},
                      orcpt={"ok@there.test": "rfc822;Öri@there.test"})
        result = relay(config, msg)["m1"]["ok@there.test"]
        assert result.accepted and result.dsn_passed
        assert f"MAIL FROM:<a@here.test> SIZE={len(BODY)} RET=HDRS ENVID=env+201+2B" in server.lines
        assert "RCPT TO:<ok@there.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;+C3+96ri@there.test" in server.lines
        assert server.messages == [dot_stuff(BODY)]
    finally:
        server.stop()


def test_a_utf8_orcpt_goes_as_unitext_in_an_smtputf8_transaction():
    """RFC 6533 3: UTF-8 as it is where the transaction declares SMTPUTF8, "+" and "=" still
    escaped (utf-8-addr-unitext)."""
    server = ScriptedServer(extensions=("PIPELINING", "DSN", "SMTPUTF8"))
    try:
        config = make_config(mx_override={"there.test": server.address})
        msg = message("ok@there.test", smtputf8=True,
                      orcpt={"ok@there.test": "utf-8;jörg=1@here.test"})
        assert relay(config, msg)["m1"]["ok@there.test"].accepted
        assert "MAIL FROM:<a@here.test> SMTPUTF8" in server.lines
        assert "RCPT TO:<ok@there.test> ORCPT=utf-8;jörg\\x{3D}1@here.test" in server.lines
    finally:
        server.stop()


def test_non_ascii_address_to_a_server_without_smtputf8_is_permanent():
    server = ScriptedServer(extensions=("PIPELINING",))
    try:
        config = make_config(mx_override={"there.test": server.address})
        result = relay(config, message("jörg@there.test", smtputf8=True))["m1"]["jörg@there.test"]
        assert result.permanent and result.status == "5.6.7"
    finally:
        server.stop()


def test_silent_server_times_out_at_greeting():
    server = ScriptedServer(silent=True)
    try:
        config = make_config(mx_override={"there.test": server.address}, command_timeout=0.5)
        result = relay(config, message("ok@there.test"))["m1"]["ok@there.test"]
        assert not result.permanent and "timeout" in result.text
    finally:
        server.stop()


# ---- the relay to a mailbox's owner node (mailbox routing, [cluster] tls) -----------------

class Owner(Behaviour):
    """An owner node's internal SMTP port: it takes the relay's PROXY LOCAL header first."""

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        return True


def owner_node(tmp_path: Path, name: str, starttls: bool = True,
               host: str = "127.0.0.1") -> tuple[Sink, Path]:
    """An owner's internal port on `host`, and its certificate (self-signed for 127.0.0.1
    among others, so it is also the CA file that trusts it)."""
    config = Config(server=ServerConfig(hostname=f"{name}.here.test"))
    config.path = tmp_path / name / "mailforge.toml"
    tls.ensure_self_signed(config)
    context = tls.load_server_context(config) if starttls else None
    sink = Sink(Owner(), host=host, tls_context=context, proxy_protocol_timeout=5)
    return sink, config.data_dir / config.tls.cert


def cluster_tls(ca_file: Path) -> Config:
    return dataclasses.replace(make_config(), cluster=ClusterConfig(
        tls="starttls", tls_ca_file=str(ca_file)))


def to_owner(config: Config, sink: Sink | ScriptedServer, sent: Message) -> Result:
    """`sent`'s one recipient relayed to `sink` as its mailbox's owner node b, which the node
    table names by its address."""
    (rcpt,) = sent.recipients
    owner = owner_destination(Node("b", sink.host, smtp_port=sink.port))
    outbound = Outbound(config, Router(config.delivery, Resolver(config.dns)))
    return asyncio.run(outbound.deliver([sent], {rcpt: owner}))[sent.id][rcpt]


def test_with_cluster_tls_the_owner_gets_mail_inside_tls_verified_for_its_host(tmp_path, caplog):
    owner, cert = owner_node(tmp_path, "b")
    try:
        with caplog.at_level(logging.INFO, "mailforge.delivery"):
            assert to_owner(cluster_tls(cert), owner, message("carol@here.test")).accepted
        assert len(owner.received) == 1
        assert f"TLS to b[127.0.0.1]:{owner.port} meets the cluster's TLS" in caplog.text
    finally:
        owner.stop()


def test_an_owner_the_cluster_ca_did_not_sign_is_deferred_never_sent_in_the_clear(tmp_path):
    owner, _ = owner_node(tmp_path, "b")
    _, other = owner_node(tmp_path, "other", starttls=False)
    try:
        # TLS-Required: No speaks of the recipient domain's policies, not of this link.
        for sent in (message("carol@here.test"), message("carol@here.test", tls_optional=True)):
            result = to_owner(cluster_tls(other), owner, sent)
            assert (result.code, result.status) == (451, "4.7.5")
            assert "CERTIFICATE_VERIFY_FAILED" in result.text and "deferred" in result.text
        assert owner.received == []
    finally:
        owner.stop()


def test_an_owner_whose_certificate_names_another_host_is_deferred(tmp_path):
    owner, cert = owner_node(tmp_path, "b", host="127.0.0.2")  # its certificate: 127.0.0.1
    try:
        result = to_owner(cluster_tls(cert), owner, message("carol@here.test"))
        assert result.status == "4.7.5" and "IP address mismatch" in result.text
        assert owner.received == []
    finally:
        owner.stop()


def test_an_owner_without_starttls_is_deferred_with_cluster_tls_and_not_without(tmp_path):
    owner, cert = owner_node(tmp_path, "b", starttls=False)
    try:
        result = to_owner(cluster_tls(cert), owner, message("carol@here.test"))
        assert result.status == "4.7.5" and "offers no STARTTLS" in result.text
        assert owner.received == []
        assert to_owner(make_config(), owner, message("carol@here.test")).accepted  # tls = "none"
        assert len(owner.received) == 1
    finally:
        owner.stop()


@pytest.mark.parametrize("answer, why", [
    (b"454 4.7.0 TLS not available\r\n", "refused STARTTLS: 454"),
    # Replies behind its consent, which would be read as if from inside TLS.
    (b"220 2.0.0 Ready\r\n250 2.0.0 injected\r\n", "sent more after agreeing to STARTTLS"),
])
def test_an_owner_that_refuses_starttls_or_sends_more_behind_its_consent_is_deferred(
        tmp_path, answer, why):
    _, cert = owner_node(tmp_path, "other", starttls=False)
    owner = ScriptedServer(("PIPELINING", "STARTTLS"), replies={"STARTTLS": answer},
                           proxy_protocol=True)
    try:
        result = to_owner(cluster_tls(cert), owner, message("carol@here.test"))
        assert result.status == "4.7.5" and why in result.text
        assert owner.messages == [] and not any(line.startswith("MAIL") for line in owner.lines)
    finally:
        owner.stop()
