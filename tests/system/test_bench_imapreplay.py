"""`python -m bench.imapreplay` on a few sessions: every command of the mix answered OK or NO,
a row per kind with its CPU, and a mix that names no known kind refused."""

import pytest

from bench import imapreplay


def test_imapreplay_reports_each_kind_of_command(capsys):
    assert imapreplay.main(["--users", "2", "--messages", "5", "--commands", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("300 commands, ") and "µs of CPU per command" in lines[0]
    kinds = {line.split()[0] for line in lines[1:]}
    assert kinds == {kind for kind, weight in imapreplay.MIX.items() if weight}


def test_imapreplay_takes_a_mix_and_refuses_an_unknown_kind(capsys):
    assert imapreplay.main(["--users", "1", "--messages", "2", "--commands", "20",
                            "--mix", "append=1,expunge=1"]) == 0
    assert {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]} == {
        "append", "expunge"}
    with pytest.raises(SystemExit) as exited:
        imapreplay.main(["--mix", "idle=3"])
    assert exited.value.code == 2
    assert "'idle=3': not kind=weight" in capsys.readouterr().err
