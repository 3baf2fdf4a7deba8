"""queue/forwarding.py: a forwarding alias's remote targets put among the envelope's recipients."""

from mailforge.auth.api import Lookup, RecipientStatus
from mailforge.queue.envelope import Envelope
from mailforge.queue.forwarding import expand_forwards

OK = RecipientStatus.OK
LOOKUPS = {
    "fwd@example.test": Lookup(OK, [], forwards=["a@remote.test", "b@remote.test"]),
    "mix@example.test": Lookup(OK, ["alice@example.test"], forwards=["c@remote.test"]),
    "alice@example.test": Lookup(OK, ["alice@example.test"]),
    "a@remote.test": Lookup(RecipientStatus.NOT_LOCAL),
}


class Directory:
    def lookup_recipient(self, address: str) -> Lookup:
        return LOOKUPS.get(address, Lookup(RecipientStatus.NOT_LOCAL))


def envelope(*recipients: str, **fields) -> Envelope:
    return Envelope(id="1", sender="s@remote.test", recipients=list(recipients),
                    received_at=1.0, client_ip="192.0.2.1", helo="h", **fields)


def test_targets_replace_a_remote_only_alias_and_join_a_mixed_one():
    env = envelope("fwd@example.test", "mix@example.test", "alice@example.test",
                   notify={"mix@example.test": "FAILURE"},
                   orcpt={"fwd@example.test": "rfc822;Given@example.test"})
    expand_forwards(env, Directory())
    assert env.recipients == ["a@remote.test", "b@remote.test", "mix@example.test",
                              "c@remote.test", "alice@example.test"]
    assert env.forwarded == {"a@remote.test": "fwd@example.test",
                             "b@remote.test": "fwd@example.test",
                             "c@remote.test": "mix@example.test"}
    assert env.orcpt["a@remote.test"] == "rfc822;Given@example.test"  # the client's ORCPT wins
    assert env.orcpt["c@remote.test"] == "rfc822;mix@example.test"
    assert env.notify["c@remote.test"] == "FAILURE" and "a@remote.test" not in env.notify
    assert env.seal_domain == "example.test"


def test_an_alias_of_several_targets_asked_for_success_is_reported_as_expanded():
    """RFC 3461 6.2.7.3: one "expanded" notice for the alias; its targets keep its ORCPT and
    its NOTIFY without SUCCESS (as Postfix). A user's own address is no alias."""
    env = envelope("fwd@example.test", "mix@example.test", "alice@example.test",
                   notify=dict.fromkeys(("fwd@example.test", "mix@example.test",
                                         "alice@example.test"), "SUCCESS,FAILURE"),
                   orcpt={"fwd@example.test": "rfc822;Given@example.test"})
    assert expand_forwards(env, Directory()) == ["fwd@example.test", "mix@example.test"]
    assert env.recipients == ["a@remote.test", "b@remote.test", "mix@example.test",
                              "c@remote.test", "alice@example.test"]
    assert {target: env.notify[target] for target in ("a@remote.test", "b@remote.test",
                                                      "c@remote.test")} == dict.fromkeys(
        ("a@remote.test", "b@remote.test", "c@remote.test"), "FAILURE")
    assert env.orcpt["a@remote.test"] == "rfc822;Given@example.test"
    assert env.orcpt["c@remote.test"] == "rfc822;mix@example.test"
    # Once reported (settle.py takes SUCCESS off the alias), a retry reports it no more.
    env.notify["mix@example.test"] = "FAILURE"
    env.recipients = ["mix@example.test"]
    assert expand_forwards(env, Directory()) == []


def test_a_retry_does_not_forward_again():
    env = envelope("mix@example.test")
    expand_forwards(env, Directory())
    env.recipients = ["mix@example.test"]  # the relay went through; alice's copy waits
    expand_forwards(env, Directory())
    assert env.recipients == ["mix@example.test"]


def test_a_target_the_client_named_too_is_sent_once_and_our_own_mail_is_not_sealed():
    env = envelope("fwd@example.test", "a@remote.test", sign=True)
    expand_forwards(env, Directory())
    assert env.recipients == ["b@remote.test", "a@remote.test"]
    assert env.seal_domain == ""  # submitted by our user: DKIM-signed instead
