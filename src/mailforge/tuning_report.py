"""The saved `bench.tune` report: where it lies (<data_dir>/tuning/), how it is written and
read. `python -m bench.tune` saves it; the console's Tuning page shows it.

report.json holds the table (headers, rows as printed, notes) and when it was made; plot.png
the plot. Each is replaced durably (temp → sync → rename → sync the directory), the plot
first, so a report never names a plot half written. Both are world-readable: the tool may run
as root or as the operator, the console reads them as the service account.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .durable import write_atomically

REPORT_DIR_NAME = "tuning"
TABLE_NAME = "report.json"
PLOT_NAME = "plot.png"
FORMAT = 1  # report.json's layout; a reader refuses another
READABLE_BY_ALL = 0o644


@dataclass(frozen=True)
class TuningReport:
    made: float  # Unix time
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]
    has_plot: bool


def report_dir(config: Config) -> Path:
    return config.data_dir / REPORT_DIR_NAME


def save(directory: Path, title: str, headers: list[str], rows: list[list[str]],
         notes: list[str], plot: bytes | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if plot is not None:
        write_atomically(directory / PLOT_NAME, plot, mode=READABLE_BY_ALL)
    table = {"format": FORMAT, "made": time.time(), "title": title, "headers": headers,
             "rows": rows, "notes": notes, "plot": plot is not None}
    write_atomically(directory / TABLE_NAME, json.dumps(table, indent=1).encode(),
                     mode=READABLE_BY_ALL)


def load(directory: Path) -> TuningReport | None:
    """The report in `directory`; None when none was made there, or it is not one this
    version reads (the page then says how to make one)."""
    try:
        table = json.loads((directory / TABLE_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        return None
    return TuningReport(float(table["made"]), str(table["title"]), list(table["headers"]),
                        [list(row) for row in table["rows"]], list(table["notes"]),
                        bool(table["plot"]) and (directory / PLOT_NAME).is_file())


def plot_bytes(directory: Path) -> bytes | None:
    try:
        return (directory / PLOT_NAME).read_bytes()
    except OSError:
        return None
