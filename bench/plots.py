"""Small matplotlib (Agg) figures: every benchmark plot goes through here to stay < 300 KB."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 90


def figure(width: float = 6.4, height: float = 3.6):  # noqa: ANN201 - (fig, ax)
    return plt.subplots(figsize=(width, height), dpi=DPI)


def save(fig, path: Path) -> Path:  # noqa: ANN001
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
