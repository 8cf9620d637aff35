"""Errors raised for bad scenario / model input (never a bare KeyError deep in the run)."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario or model file is malformed; the message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.detail = message  # without the file/key prefix, to re-raise it for another place
        where = ", ".join(part for part in (f"file {file}" if file else "", f"key '{key}'" if key else "") if part)
        super().__init__(f"{where}: {message}" if where else message)
