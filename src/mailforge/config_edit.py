"""A change to the config file from the web console's services form: some keys of one
section, written back with comments and order kept (tomlkit round-trips the file), only once
the whole new file passes what `check-config` applies (config.loads, then tls.check).

The supervisor does the writing (the file is root's in a system install) and takes only the
sections in EDITABLE: the console can change how services listen and defend themselves, never
which account the server runs as or where its data lives.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import typing
from pathlib import Path

import tomlkit

from . import config as configuration, tls
from .durable import write_atomically
from .errors import ConfigError

# Service keys that a reload refuses to change (process/supervisor.py _check_reloadable):
# the console's change would be written to the file and then not take effect.
RESTART_ONLY = ("reuse_port",)
# Section → the keys the console may change; every service's keys, the relay and the abuse
# thresholds (the properties MailEnable's and IMail's consoles set per service).
EDITABLE: dict[str, tuple[str, ...]] = {
    **{name: tuple(f.name for f in dataclasses.fields(getattr(configuration.Config(), name))
                   if f.name not in RESTART_ONLY)
       for name in configuration.SERVICE_PORTS},
    "relay": tuple(f.name for f in dataclasses.fields(configuration.RelayConfig)),
    "abuse": tuple(f.name for f in dataclasses.fields(configuration.AbuseConfig)),
}
TRUE_WORDS = ("on", "true", "yes", "1")


def form_value(section: str, key: str, text: str) -> object:
    """A form field's text as the key's TOML type. Text that is not of that type is passed
    on as it is, so that validation names the key with check-config's own words."""
    hint = typing.get_type_hints(type(getattr(configuration.Config(), section)))[key]
    text = text.strip()
    if hint is bool:
        return text.lower() in TRUE_WORDS
    if typing.get_origin(hint) is list:
        return [item for item in re.split(r"[,\s]+", text) if item]
    for kind in (int, float) if hint in (int, float) else ():
        try:
            return float(text) if hint is float else kind(text)
        except ValueError:
            continue
    return text


def propose(path: Path, section: str, values: dict[str, object]) -> str:
    """The config file's new text with `values` set in [section]; ConfigError (the line
    check-config would print) when the section or a key may not be changed here, or the
    result is not a valid config."""
    allowed = EDITABLE.get(section)
    if allowed is None:
        raise ConfigError(path, f"[{section}]", "not a section the console may change")
    for key in values:
        if key not in allowed:
            raise ConfigError(path, f"[{section}] {key}", f"unknown key (known: {', '.join(allowed)})")
    document = tomlkit.parse(Path(path).read_text(encoding="utf-8"))
    table = document.get(section)
    if table is None:
        table = document[section] = tomlkit.table()
    for key, value in values.items():
        table[key] = value
    text = tomlkit.dumps(document)
    tls.check(configuration.loads(text, path))  # raises for what would stop a start
    return text


def update(path: Path, section: str, values: dict[str, object]) -> None:
    """Validate, then replace the file; its owner and mode stay as they were."""
    text = propose(path, section, values)
    before = os.stat(path)
    write_atomically(Path(path), text.encode("utf-8"), mode=stat.S_IMODE(before.st_mode))
    if os.geteuid() == 0:
        os.chown(path, before.st_uid, before.st_gid)


def form_fields(config: configuration.Config, section: str) -> dict[str, str]:
    """The section's editable keys as the form shows them: lists comma-separated, true "on"."""
    values = dataclasses.asdict(getattr(config, section))
    return {key: form_text(values[key]) for key in EDITABLE[section]}


def changed_fields(config: configuration.Config, section: str, form: dict[str, str]) -> dict[str, str]:
    """The keys whose form text differs from the config in force (an unticked box is "off"),
    so that saving one field writes only that one."""
    if section not in EDITABLE:
        return dict(form)
    current = form_fields(config, section)
    submitted = {key: form.get(key, "off" if current[key] in ("on", "off") else current[key])
                 for key in current}
    return {key: text for key, text in submitted.items()
            if form_value(section, key, text) != form_value(section, key, current[key])}


def form_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
