"""What every command line of the project shares: exit codes and loading the config with every
problem printed (key path and file), instead of a stack trace."""

from __future__ import annotations

from rich.console import Console

from csms.config import Config, ConfigError, load_config

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def load_config_or_report(path: str, err: Console) -> Config | None:
    """The config at ``path``, or None after printing each of its problems to ``err``."""
    try:
        return load_config(path)
    except ConfigError as exc:
        report_config_error(exc, err)
        return None


def report_config_error(exc: ConfigError, err: Console) -> None:
    """Each problem on its own line: file, key path, message."""
    err.print(f"[bold red]invalid configuration[/] ({len(exc.issues)} problem{'s' * (len(exc.issues) != 1)}):")
    for issue in exc.issues:
        err.print(f"  {issue.file}: [bold]{issue.key or '<root>'}[/]: {issue.message}", highlight=False)
