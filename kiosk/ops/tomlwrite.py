"""A small TOML writer for the config model's dump (tables, arrays of tables, scalars, arrays).

The standard library reads TOML but cannot write it; the config needs only this much.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class TomlWriteError(ValueError):
    pass


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise TomlWriteError(f"{where}: {value} cannot be written")
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes (\", \\, \n, \uXXXX) are all valid in TOML basic strings.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if value is None:
        raise TomlWriteError(f"{where}: TOML has no null; leave the key out or give a value")
    raise TomlWriteError(f"{where}: cannot write a {type(value).__name__}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    where = ".".join(path) or "(top)"
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value, f'{where}.{key}')}")
    for key, value in data.items():
        sub = [*path, key]
        header = ".".join(_key(p) for p in sub)
        if isinstance(value, dict):
            if value and all(isinstance(v, dict) or _is_table_array(v) for v in value.values()):
                _table(value, sub, lines)  # only sub-tables: no header of its own needed
            else:
                lines.extend(["", f"[{header}]"])
                _table(value, sub, lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{header}]]"])
                _table(item, sub, lines)
