"""Screen texts per language, kept as data in strings.json so a language is added without code.

Every table is checked when loaded: a translation whose placeholders differ from the English
text would raise KeyError in the middle of a sale, so it is refused at start-up instead.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path

# The reference table: every message id exists here, other languages fall back to it.
BASE_LANGUAGE = "en"
# The default screen languages, in the order they are shown (screens.languages in the config).
SCREEN_LANGUAGES = ("en", "zh-Hans")

Tables = Mapping[str, Mapping[str, str]]


class StringsError(ValueError):
    """A string table that cannot be used: bad JSON shape, unknown id or mismatched placeholders."""


def placeholders(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)


def check_tables(tables: object) -> dict[str, dict[str, str]]:
    """Validate a {language: {message id: template}} mapping and return it as plain dicts."""
    if not isinstance(tables, dict) or BASE_LANGUAGE not in tables:
        raise StringsError(f"string tables must be an object with a {BASE_LANGUAGE!r} table")
    base = tables[BASE_LANGUAGE]
    checked: dict[str, dict[str, str]] = {}
    for lang, table in tables.items():
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise StringsError(f"strings[{lang!r}] must map message ids to strings")
        for msg_id, template in table.items():
            if msg_id not in base:
                raise StringsError(f"strings[{lang!r}][{msg_id!r}]: no such message id in {BASE_LANGUAGE!r}")
            try:
                got = placeholders(template)
            except ValueError as exc:
                raise StringsError(f"strings[{lang!r}][{msg_id!r}]: {exc}") from None
            if got != placeholders(base[msg_id]):
                raise StringsError(
                    f"strings[{lang!r}][{msg_id!r}] uses {sorted(got)}, "
                    f"{BASE_LANGUAGE!r} uses {sorted(placeholders(base[msg_id]))}"
                )
        checked[lang] = dict(table)
    return checked


def load_tables(path: Path | None = None) -> dict[str, dict[str, str]]:
    """The tables from `path`, or the ones shipped in the package."""
    if path is None:
        raw = resources.files(__package__).joinpath("strings.json").read_text(encoding="utf-8")
    else:
        raw = path.read_text(encoding="utf-8")
    try:
        return check_tables(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise StringsError(f"strings file {path or 'strings.json'}: {exc}") from None


def merged_tables(base: Tables, extra: Tables | None) -> dict[str, dict[str, str]]:
    """`base` with the tables of `extra` added, or replacing single messages (screens.strings_file)."""
    merged = {lang: dict(table) for lang, table in base.items()}
    for lang, table in (extra or {}).items():
        merged.setdefault(lang, {}).update(table)
    return check_tables(merged)


@cache
def _shipped() -> dict[str, dict[str, str]]:
    return load_tables()


def shipped_tables() -> dict[str, dict[str, str]]:
    return _shipped()


def text(msg_id: str, lang: str, tables: Tables | None = None, **params: object) -> str:
    """One message in one language, falling back to English for ids a table lacks."""
    tables = _shipped() if tables is None else tables
    base = tables[BASE_LANGUAGE]
    if msg_id not in base:
        raise KeyError(f"unknown screen message id {msg_id!r}")
    template = tables.get(lang, base).get(msg_id, base[msg_id])
    return template.format(**params)


def texts(
    msg_id: str,
    tables: Tables | None = None,
    languages: tuple[str, ...] = SCREEN_LANGUAGES,
    **params: object,
) -> tuple[str, ...]:
    """One message in every screen language, in order; a language repeating the previous
    line (a brand name, a fallback to English) is shown once."""
    lines: list[str] = []
    for lang in languages:
        line = text(msg_id, lang, tables, **params)
        if line not in lines:
            lines.append(line)
    return tuple(lines)


def countdown(
    seconds_left: int, tables: Tables | None = None, languages: tuple[str, ...] = SCREEN_LANGUAGES
) -> tuple[str, ...]:
    """The countdown as reported; at 0 it says the time is up instead of inviting a late payment."""
    if seconds_left <= 0:
        return texts("pay.time_up", tables, languages)
    return texts("pay.countdown", tables, languages, seconds=seconds_left)
