"""LIST-EXTENDED's argument parser (RFC 5258 6), and the special uses an account assigns."""

from __future__ import annotations

import pytest

from mailforge.protocols.imap.listing import ListRequest, parse_list
from mailforge.protocols.imap.responses import Bad
from mailforge.store.api import UnsupportedUse
from mailforge.store.specialuse import SpecialUses


def test_plain_list_is_one_pattern_without_options():
    assert parse_list([b"", "*"]) == ListRequest("", ["*"])


def test_selection_patterns_and_return_options():
    request = parse_list([["subscribed", "RecursiveMatch"], "Ref/", [b"a*", "b%"], "return",
                          ["children", "status", ["messages", "unseen"], "special-use"]])
    assert request.reference == "Ref/" and request.patterns == ["a*", "b%"]
    assert request.selection == {"SUBSCRIBED", "RECURSIVEMATCH"}
    # SUBSCRIBED selection implies the SUBSCRIBED return option (RFC 5258 3.1).
    assert request.returns == {"SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"}
    assert request.status_items == ["MESSAGES", "UNSEEN"]


def test_patterns_match_after_the_reference():
    request = parse_list(["", ["Work/%", "inbox"]])
    assert request.matches("Work/A") and request.matches("INBOX")
    assert not request.matches("Work/A/B") and not request.matches("Home")


@pytest.mark.parametrize("args", [
    [["bogus"], "", "*"],
    [["recursivematch"], "", "*"],
    [["remote", "recursivematch"], "", "*"],
    ["", "*", "RETURN", ["bogus"]],
    ["", "*", "RETURN", ["status"]],
    ["", "*", "RETURN", "children"],
    ["", []],
    ["", "*", "extra"],
    [[], ""],
])
def test_bad_arguments(args):
    with pytest.raises(Bad):
        parse_list(args)


def test_special_uses_follow_renames_and_deletes(tmp_path):
    uses = SpecialUses(tmp_path)
    assert uses.load() == {}
    uses.assign("Old", "\\Archive")
    uses.assign("Old/Sub", "\\Sent")
    uses.assign("Other", "\\Junk")
    uses.rename("Old", "New")
    assert uses.load() == {"New": "\\Archive", "New/Sub": "\\Sent", "Other": "\\Junk"}
    uses.forget("New")
    assert SpecialUses(tmp_path).load() == {"Other": "\\Junk"}


def test_special_uses_ignore_lines_they_did_not_write(tmp_path):
    (tmp_path / "special-use").write_text("\\All\tx\ngarbage\n\\Sent\tKept\n")
    assert SpecialUses(tmp_path).load() == {"Kept": "\\Sent"}


@pytest.mark.parametrize("asked", [[], ["\\All"], ["\\Flagged"], ["\\Sent", "\\Trash"], ["Sent"]])
def test_only_one_use_the_store_keeps(asked):
    with pytest.raises(UnsupportedUse):
        SpecialUses.check(asked)


def test_use_is_matched_in_any_case():
    assert SpecialUses.check(["\\sENT"]) == "\\Sent"
