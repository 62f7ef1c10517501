"""The pipeline's section of a model card: data, settings, metrics, promotion.

sentence-transformers writes the card (``README.md`` in the model folder) when the model
is saved; after evaluation the flow adds one section between two markers, so writing it
again replaces the section and leaves the rest of the card as it was.

Example::

    >>> import tempfile
    >>> rows = {"base": {"cosine_ndcg@10": 0.80}, "finetuned": {"cosine_ndcg@10": 0.86}}
    >>> section = card_section(run_id="20261127-150102-ab12cd34", data={"training questions": 54},
    ...                        settings={"epochs": 3}, validation=rows, guard=None,
    ...                        promotion={"promote": True, "reason": "NDCG@10 +6.0 points over the champion"})
    >>> print(section)
    <!-- bce-finetune:begin -->
    ## bce-finetune run
    ...
    | ndcg@10 | 0.8000 | 0.8600 | +6.0 |
    ...
    promoted: NDCG@10 +6.0 points over the champion
    ...
    <!-- bce-finetune:end -->
    >>> model_dir = Path(tempfile.mkdtemp())  # a saved model's folder, with the card sentence-transformers wrote
    >>> _ = (model_dir / "README.md").write_text("# my model", encoding="utf-8")
    >>> update_model_card(model_dir, section); update_model_card(model_dir, section)  # written twice
    >>> card = (model_dir / "README.md").read_text(encoding="utf-8")
    >>> card.startswith("# my model"), card.count(BEGIN)
    (True, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core.fileio import write_text_atomic
from tasks.reporting.tables import COMPARISONS, Rows, metrics_table, retriever_lines

BEGIN = "<!-- bce-finetune:begin -->"
END = "<!-- bce-finetune:end -->"


def card_section(
    *,
    run_id: str | None,
    data: Mapping[str, Any],
    settings: Mapping[str, Any],
    validation: Rows,
    guard: Rows | None,
    promotion: Mapping[str, Any] | None,
    retriever: Mapping[str, Any] | None = None,
) -> str:
    """Markdown of the pipeline's card section (markers included)."""
    parts = [BEGIN, "## bce-finetune run", ""]
    if run_id:
        parts += [f"Run `{run_id}`.", ""]
    if data:
        parts += ["### Data", "", *(f"- {k}: {v}" for k, v in data.items()), ""]
    changes = COMPARISONS if "bm25" in validation else None
    parts += ["### Retrieval on the domain validation set", "", metrics_table(validation, changes=changes), ""]
    if retriever:
        # How to search with this model as the pipeline measured it: alone, or fused with BM25.
        parts += ["### Retriever", "", *retriever_lines(
            retriever, served="`python -m flows.query` searches with exactly this retriever while this run is the "
                              "champion (`current.json`)"), ""]
    if guard:
        parts += [
            "### Retrieval on the guard set",
            "",
            "General Chinese questions written by people (CMRC 2018, CC BY-SA 4.0; `data/guard/`).",
            "",
            metrics_table(guard, changes=changes),
            "",
        ]
    if promotion:
        verdict = "promoted" if promotion.get("promote") else "not promoted"
        parts += ["### Promotion", "", f"{verdict}: {promotion.get('reason', '')}", ""]
        if promotion.get("serving"):
            parts += [promotion["serving"], ""]
    if settings:
        parts += ["### Settings", "", "| setting | value |", "|---|---|"]
        parts += [f"| {k} | {_cell(v)} |" for k, v in settings.items()]
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def with_section(card: str, section: str) -> str:
    """``card`` with its pipeline section replaced by ``section`` (appended if it has none).

    >>> with_section("# m\\n", BEGIN + "\\nA\\n" + END)
    '# m\\n\\n<!-- bce-finetune:begin -->\\nA\\n<!-- bce-finetune:end -->\\n'
    >>> with_section(with_section("# m\\n", BEGIN + "\\nA\\n" + END), BEGIN + "\\nB\\n" + END).count(BEGIN)
    1
    """
    start, end = card.find(BEGIN), card.find(END)
    if start >= 0 and end > start:
        return card[:start] + section + card[end + len(END):]
    return card.rstrip("\n") + "\n\n" + section + "\n"


def update_model_card(model_dir: Path, section: str) -> None:
    """Write ``section`` into ``model_dir/README.md`` (atomically; the file is replaced, not
    edited in place, so a copy of the model elsewhere keeps its own card)."""
    card_path = Path(model_dir) / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    write_text_atomic(card_path, with_section(card, section))


def _cell(value: Any) -> str:
    text = "(default)" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
