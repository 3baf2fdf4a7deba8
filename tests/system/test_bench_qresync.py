"""`python -m bench.qresync` end to end on a small folder, mailforge alone (the Dovecot anchor
needs root and fixed ports): the table's rows, and each resync told what changed."""

from bench import qresync


def test_qresync_bench_resyncs_a_small_folder_both_ways(capsys):
    assert qresync.main(["--messages", "60", "--flags", "3", "--expunges", "2", "--repeat", "1",
                         "--workers", "1", "--peers", "mailforge"]) == 0
    rows = {cells[1]: cells for cells in (
        [cell.strip() for cell in line.split("│") if cell.strip()]
        for line in capsys.readouterr().out.splitlines() if line.startswith("│ mailforge"))}
    # peer, resync, ms, octets in, octets out, FETCH, VANISHED, × mailforge
    assert rows["qresync"][5:7] == ["3", "2"]
    assert rows["plain"][5:7] == ["58", "0"]
    assert int(rows["qresync"][3].replace(",", "")) < int(rows["plain"][3].replace(",", ""))
