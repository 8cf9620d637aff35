"""How configuration problems are reported: every one names its file and dotted key path.

Each part of the daemon validates its own section (csms.config for the core, csms.grid.config,
csms.api.config, csms.security.config) and reports :class:`ConfigIssue`s; all of them are raised
together as one :class:`ConfigError`, so an operator fixes a broken config in one go.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key or '<root>'}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
