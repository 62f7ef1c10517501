"""The generation report: what the question stage asked, kept, dropped and why.

Rendered from the stage's statistics (:class:`tasks.questions.generation.GenerationStats` as a
dict), so it can be written for a stage Prefect served from its cache too. It goes to
``generation_report.md`` and ``generation_report.json`` in the output folder and to the
Prefect artifact ``generation-report``.

Example::

    >>> from tasks.questions.generation import GenerationStats
    >>> stats = GenerationStats(chunks=3, chunks_asked=2, requests_sent=2, questions_kept=2, chunks_with_questions=2)
    >>> md = render_generation_report(stats.to_dict())
    >>> md.splitlines()[0]
    '# Question generation'
    >>> [line for line in md.splitlines() if "LLM requests" in line]
    ['| LLM requests sent | 2 |']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.fileio import write_json_atomic, write_text_atomic

ARTIFACT_KEY = "generation-report"
MD_NAME = "generation_report.md"
JSON_NAME = "generation_report.json"
LISTED_FAILURES = 20


def _cell(text: Any) -> str:
    # A question or chunk inside a table cell: one line, no column breaks.
    return " ".join(str(text).split()).replace("|", "\\|")


def _reason_table(counts: dict[str, int], examples: dict[str, list[dict[str, str]]], what: str) -> list[str]:
    lines = [f"| reason | {what} | examples |", "|---|---:|---|"]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        shown = "<br>".join(f"“{_cell(e['text'])}”" for e in examples.get(reason, []))
        lines.append(f"| {_cell(reason)} | {n} | {shown} |")
    return lines


def render_generation_report(stats: dict[str, Any], round_trip: dict[str, Any] | None = None) -> str:
    """Markdown: the counts, drops and skips per reason with examples, failed chunks.

    ``stats`` is ``GenerationStats.to_dict()``; ``round_trip`` a
    ``RoundTripReport.to_dict()`` when the round-trip filter ran.

    Example::

        >>> print(render_generation_report({"chunks": 2, "chunks_asked": 2, "requests_sent": 2, "cache_hits": 0,
        ...     "questions_kept": 1, "dropped": {"not a question": 1},
        ...     "examples": {"not a question": [{"chunk_id": "c2", "text": "袋鼠生活在澳洲。"}]}}))
        # Question generation
        ...
        | not a question | 1 | “袋鼠生活在澳洲。” |
        ...
    """
    skipped = stats.get("chunks_skipped") or {}
    dropped = stats.get("dropped") or {}
    examples = stats.get("examples") or {}
    asked = stats.get("chunks_asked", stats.get("chunks", 0))
    lines = [
        "# Question generation",
        "",
        "| | |",
        "|---|---:|",
        f"| chunks | {stats.get('chunks', 0)} |",
        f"| skipped as not worth a question | {sum(skipped.values())} |",
        f"| chunks asked | {asked} |",
        f"| LLM requests sent | {stats.get('requests_sent', 0)} |",
        f"| answers from the cache | {stats.get('cache_hits', 0)} |",
        f"| chunks asked again (another seed) | {stats.get('retried_chunks', 0)} |",
        f"| of which then gave a question | {stats.get('recovered_by_retry', 0)} |",
        f"| chunks with a kept question | {stats.get('chunks_with_questions', 0)} |",
        f"| questions kept | {stats.get('questions_kept', 0)} |",
        f"| questions dropped | {sum(dropped.values())} |",
        f"| chunks failed (LLM error or no question) | {stats.get('failed_chunks', 0)} |",
    ]
    if round_trip:
        lines.append(
            f"| round trip (top {round_trip['top_k']}): training questions kept | "
            f"{round_trip['kept']} of {round_trip['questions']} |"
        )
    if skipped:
        lines += ["", "## Chunks not asked", "", *_reason_table(skipped, examples, "chunks")]
    if dropped:
        lines += ["", "## Questions dropped", "", *_reason_table(dropped, examples, "questions")]
    without = stats.get("chunks_without_question") or []
    if without:
        lines += [
            "",
            "## Chunks without a question",
            "",
            "| source | page | chunk | why |",
            "|---|---:|---|---|",
            *(
                f"| {_cell(w['source'])} | {w.get('pages', w['page'])} | `{w['chunk_id'][:12]}` | {_cell(w['reason'])} |"
                for w in without[:LISTED_FAILURES]
            ),
        ]
        if len(without) > LISTED_FAILURES:
            lines.append(f"\n… and {len(without) - LISTED_FAILURES} more in `{JSON_NAME}`.")
    if round_trip and round_trip.get("examples"):
        lines += [
            "",
            f"## Round trip: dropped (own chunk not in the base model's top {round_trip['top_k']})",
            "",
            "| question | rank of its chunk |",
            "|---|---:|",
            *(f"| {_cell(e['question'])} | {e['rank']} |" for e in round_trip["examples"]),
        ]
    return "\n".join(lines) + "\n"


def write_generation_report(
    out_dir: Path, stats: dict[str, Any], round_trip: dict[str, Any] | None = None
) -> str:
    """Write ``generation_report.md`` and ``.json`` into ``out_dir`` (atomically); return the markdown."""
    markdown = render_generation_report(stats, round_trip)
    write_json_atomic(Path(out_dir) / JSON_NAME, {"generation": stats, "round_trip": round_trip})
    write_text_atomic(Path(out_dir) / MD_NAME, markdown)
    return markdown
