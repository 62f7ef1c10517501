"""A PNG bar chart of the main retrieval metrics: base, fine-tuned, champion.

One panel per dataset (validation, guard, questions written by people), one group of bars per metric, one bar per
model. Pure: returns the PNG's bytes; the flow writes them atomically. Drawn with
matplotlib's object API and the Agg canvas (no pyplot, no display, no global state).

Drawing costs seconds on a small CPU (importing matplotlib, loading its fonts), more than
everything else an unchanged rerun does, so the PNG records a digest of what it shows (the
numbers, this module's code, matplotlib's version) and :func:`chart_png` returns an
existing file with the same digest instead of drawing it again.

Example::

    >>> base, tuned = {"cosine_ndcg@10": 0.80, "cosine_mrr@10": 0.75}, {"cosine_ndcg@10": 0.86, "cosine_mrr@10": 0.81}
    >>> png = metrics_chart_png({"validation": {"base": base, "finetuned": tuned}})
    >>> png[1:4]  # the flow writes it to metrics.png with tasks.core.fileio.write_bytes_atomic
    b'PNG'
    >>> png_digest(png) == chart_digest({"validation": {"base": base, "finetuned": tuned}})
    True
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.reporting.tables import Rows, metric_value

CHART_KEYS: tuple[str, ...] = ("accuracy@1", "mrr@10", "ndcg@10", "recall@10")
_DIGEST_KEY = "metrics-digest"  # the PNG text chunk that holds chart_digest


def chart_png(path: Path, panels: Mapping[str, Rows], keys: Sequence[str] = CHART_KEYS, dpi: int = 100) -> bytes:
    """The chart of ``panels``: the bytes at ``path`` if that file shows the same, else drawn anew."""
    try:
        existing = Path(path).read_bytes()
    except OSError:
        existing = b""
    digest = chart_digest(panels, keys, dpi)
    if existing and png_digest(existing) == digest:
        return existing
    return metrics_chart_png(panels, keys, dpi, digest=digest)


def chart_digest(panels: Mapping[str, Rows], keys: Sequence[str] = CHART_KEYS, dpi: int = 100) -> str:
    """What a chart shows, as a hash: the values drawn, how (this module) and by what (matplotlib)."""
    from importlib.metadata import version

    from tasks.core.caching import code_fingerprint
    from tasks.core.fileio import stable_hash

    drawn = {title: {model: [metric_value(metrics, k) for k in keys] for model, metrics in rows.items()}
             for title, rows in _non_empty(panels).items()}
    return stable_hash([drawn, list(keys), dpi, code_fingerprint(__name__), version("matplotlib")])


def png_digest(png: bytes) -> str | None:
    """The digest a chart of this module wrote into ``png`` (None for any other PNG)."""
    pos = 8  # after the signature
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"tEXt" and data.startswith(_DIGEST_KEY.encode("latin-1") + b"\0"):
            return data.split(b"\0", 1)[1].decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _non_empty(panels: Mapping[str, Rows]) -> dict[str, Rows]:
    return {title: rows for title, rows in panels.items() if rows}


def metrics_chart_png(panels: Mapping[str, Rows], keys: Sequence[str] = CHART_KEYS, dpi: int = 100,
                      *, digest: str | None = None) -> bytes:
    """PNG bytes of a grouped bar chart; ``panels`` maps a title to ``{model: metrics}``.

    ``digest``: their :func:`chart_digest`, when the caller has it already.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    digest = digest or chart_digest(panels, keys, dpi)
    panels = _non_empty(panels)
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
    fig.savefig(buf, format="png", metadata={"Software": None, _DIGEST_KEY: digest})
    return buf.getvalue()
