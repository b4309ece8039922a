"""Secrets kept in files named by the config: read once, never echoed in an error."""

from __future__ import annotations

from pathlib import Path


def read_secret_line(path: Path, config_key: str, error: type[Exception]) -> str:
    """The file's one line of printable ASCII (an API key). Errors name the config key and the
    file, never the content."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise error(f"{config_key}: file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{config_key}: cannot read {path} ({type(exc).__name__})") from None
    if not text or not text.isascii() or not text.isprintable() or " " in text:
        raise error(f"{config_key}: {path} does not hold one key on one line of ASCII")
    return text
