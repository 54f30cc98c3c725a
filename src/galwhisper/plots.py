"""PNG plots (training curves, WER by model or split): matplotlib without a display."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence


@contextmanager
def figure(path: Path, ncols: int = 1, size: tuple[float, float] = (7, 4), title: str = "") -> Iterator[list]:
    """Yield `ncols` axes; on leaving, lay out, save `path` as PNG and free the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False)
    try:
        yield list(axes[0])
        for ax in axes[0]:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def grouped_bars(path: Path, categories: Sequence[str], series: dict[str, Sequence[float]], title: str = "",
                 ylabel: str = "%", label_values: bool = True) -> None:
    """One group of bars per category, one bar per series, each bar labelled with its value."""
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    with figure(path, size=(max(6, 1.6 * len(categories) * max(1, len(series)) ** 0.5 + 2), 4), title=title) as (ax,):
        for i, (label, values) in enumerate(series.items()):
            offsets = x + (i - (len(series) - 1) / 2) * width
            ax.bar(offsets, values, width, label=label)
            if label_values:
                for xi, v in zip(offsets, values):
                    ax.text(xi, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, list(categories), rotation=10 if len(categories) > 3 else 0, fontsize=8)
        ax.set(ylabel=ylabel)
