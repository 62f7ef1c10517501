"""A PNG bar chart of the main retrieval metrics: base, fine-tuned, champion.

One panel per dataset (validation, guard, questions written by people), one group of bars per metric, one bar per
model. Pure: returns the PNG's bytes; the flow writes them atomically. Drawn with
matplotlib's object API and the Agg canvas (no pyplot, no display, no global state).

Example::

    >>> base, tuned = {"cosine_ndcg@10": 0.80, "cosine_mrr@10": 0.75}, {"cosine_ndcg@10": 0.86, "cosine_mrr@10": 0.81}
    >>> png = metrics_chart_png({"validation": {"base": base, "finetuned": tuned}})
    >>> png[1:4]  # the flow writes it to metrics.png with tasks.core.fileio.write_bytes_atomic
    b'PNG'
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from tasks.reporting.tables import Rows, metric_value

CHART_KEYS: tuple[str, ...] = ("accuracy@1", "mrr@10", "ndcg@10", "recall@10")


def metrics_chart_png(panels: Mapping[str, Rows], keys: Sequence[str] = CHART_KEYS, dpi: int = 100) -> bytes:
    """PNG bytes of a grouped bar chart; ``panels`` maps a title to ``{model: metrics}``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = {title: rows for title, rows in panels.items() if rows}
    if not panels:
        raise ValueError("no metrics to draw")
    fig = Figure(figsize=(5.0 * len(panels), 3.9), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, rows) in zip(axes, panels.items()):
        models = list(rows)
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            values = [metric_value(rows[model], k) or 0.0 for k in keys]
            xs = [x + (i - (len(models) - 1) / 2) * width for x in range(len(keys))]
            bars = ax.bar(xs, values, width, label=model)
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
        ax.set_xticks(range(len(keys)), list(keys))
        ax.set_ylim(0, 1.08)
        ax.set_title(title)
        # Below the axes: inside, it would hide the bars of the last metric.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(models), fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    # No software/date metadata: the same metrics give the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
