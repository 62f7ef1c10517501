"""Build the guard set in data/guard from the CMRC 2018 trial set.

The guard set is a general, out-of-domain retrieval test the pipeline runs on every
model next to the domain validation set: if fine-tuning on one's own PDFs makes the
model worse at ordinary Chinese questions, the guard set shows it, and a model that
loses too much there is not promoted (see ``tasks.registry.promotion``).

What it holds (LlamaIndex ``EmbeddingQAFinetuneDataset`` JSON, ``tasks.core.qa_dataset``):

* queries: the human-written questions of the last ``--n-passages`` CMRC passages of
  the file that are **not** in the sample PDFs (``data/pdf/sources.json``, matched by
  entry id and by the sha256 of the passage text);
* corpus: every chunk of those passages, chunked like the pipeline
  (``tasks.chunks.chunking.chunk_documents``, ``--chunk-size``/``--chunk-overlap``, 300/30);
* relevant_docs: the chunk(s) that hold the whole marked answer span
  (``tasks.evaluation.squad``, the same code the benchmarks in ``bench/`` use); questions
  whose answer crosses a chunk border are dropped and counted.

Passages are taken from the END of the file because the sample PDFs take theirs from
the start and ``python -m bench.cmrc_human --n-passages N`` the first N: the guard set and
the benchmark only share passages when N > (passages in the file) − (guard passages);
``sources.json`` lists the guard passages and the overlap rule.

Usage (from the repository root)::

    .venv/bin/python data/make_guard_set.py                  # 40 passages → data/guard/
    .venv/bin/python data/make_guard_set.py ../shared/data/cmrc2018_trial.json --n-passages 40

The output is deterministic: the same input and options give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script: the pipeline's chunking and the answer-span rule live in tasks/, and
# the guard set must be built with exactly that code.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tasks.chunks.chunking import chunk_documents  # noqa: E402
from tasks.core.fileio import sha256_file, sha256_text, write_json_atomic  # noqa: E402
from tasks.evaluation.squad import Passage, build_documents, human_benchmark, load_squad  # noqa: E402

DEFAULT_JSON = REPO_ROOT.parent / "shared" / "data" / "cmrc2018_trial.json"
DEFAULT_OUT = REPO_ROOT / "data" / "guard"
DEFAULT_PDF_SOURCES = REPO_ROOT / "data" / "pdf" / "sources.json"
DATASET_NAME = "guard_dataset.json"

LICENCE = "CC BY-SA 4.0"
SOURCE = "https://github.com/ymcui/cmrc2018 (squad-style-data/cmrc2018_trial.json)"


def pdf_passage_keys(sources_json: Path) -> tuple[set[str], set[str]]:
    """(entry ids, sha256 of passage texts) of the passages typeset in the sample PDFs."""
    sources = json.loads(Path(sources_json).read_text(encoding="utf-8"))
    passages = [p for doc in sources["documents"] for p in doc["passages"]]
    return {p["id"] for p in passages}, {p["context_sha256"] for p in passages}


def select_guard_passages(
    passages: list[Passage], n_passages: int, excluded_ids: set[str], excluded_hashes: set[str]
) -> list[Passage]:
    """The last ``n_passages`` passages (kept in file order) that are not excluded.

    >>> p = [Passage(f"T{i}", "", (f"文{i}",), ()) for i in range(5)]
    >>> [x.entry_id for x in select_guard_passages(p, 2, {"T4"}, set())]
    ['T2', 'T3']
    """
    usable = [
        p for p in passages
        if p.entry_id not in excluded_ids and sha256_text("\n".join(p.paragraphs).strip()) not in excluded_hashes
    ]
    if n_passages > len(usable):
        raise SystemExit(f"--n-passages {n_passages}: only {len(usable)} passages are not in the sample PDFs")
    return usable[len(usable) - n_passages:]


def build_guard_set(
    cmrc_json: Path, out_dir: Path, n_passages: int, chunk_size: int, chunk_overlap: int, pdf_sources: Path
) -> dict[str, Any]:
    """Write ``guard_dataset.json`` and ``sources.json`` to ``out_dir``; return the sources record."""
    all_passages = load_squad(cmrc_json)
    excluded_ids, excluded_hashes = pdf_passage_keys(pdf_sources)
    passages = select_guard_passages(all_passages, n_passages, excluded_ids, excluded_hashes)
    chunks = chunk_documents(build_documents(passages), chunk_size, chunk_overlap)
    bench = human_benchmark(passages, chunks)
    dataset_path = Path(out_dir) / DATASET_NAME
    bench.dataset.save(dataset_path)

    first_index = all_passages.index(passages[0])
    record = {
        "dataset": "CMRC 2018, trial split",
        "source": SOURCE,
        "licence": LICENCE,
        "generated_by": (
            f"python data/make_guard_set.py --n-passages {n_passages} "
            f"--chunk-size {chunk_size} --chunk-overlap {chunk_overlap}"
        ),
        "input_sha256": sha256_file(Path(cmrc_json)),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
        "n_passages": len(passages),
        "n_chunks": len(bench.dataset.corpus),
        "n_questions": len(bench.dataset.queries),
        "n_questions_before_dropping": bench.n_questions,
        "dropped": bench.dropped,
        "answer_offsets_corrected": bench.offsets_corrected,
        "dataset_sha256": sha256_file(dataset_path),
        "passages_in_file": len(all_passages),
        "first_passage_index": first_index,
        "overlap": {
            "sample_pdfs": "none: passages in data/pdf/sources.json are excluded by id and text hash",
            "bench/cmrc_human.py": (
                f"--n-passages N uses the first N passages of the file; it shares passages with the guard "
                f"set when N > {first_index} (the default, all passages, shares all {len(passages)})"
            ),
        },
        "passages": [
            {"id": p.entry_id, "title": p.title, "context_sha256": sha256_text("\n".join(p.paragraphs).strip()),
             "question_ids": [q.qid for q in p.questions if q.qid in bench.dataset.queries]}
            for p in passages
        ],
    }
    write_json_atomic(Path(out_dir) / "sources.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cmrc_json", nargs="?", type=Path, default=DEFAULT_JSON, help="CMRC 2018 SQuAD-format file")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n-passages", type=int, default=40, help="passages taken from the end of the file")
    parser.add_argument("--chunk-size", type=int, default=300)
    parser.add_argument("--chunk-overlap", type=int, default=30)
    parser.add_argument("--pdf-sources", type=Path, default=DEFAULT_PDF_SOURCES,
                        help="sources.json of the sample PDFs, whose passages are left out")
    args = parser.parse_args(argv)
    if not args.cmrc_json.is_file():
        print(f"error: {args.cmrc_json} not found; pass the path of cmrc2018_trial.json", file=sys.stderr)
        return 2
    record = build_guard_set(args.cmrc_json, args.out_dir, args.n_passages, args.chunk_size,
                             args.chunk_overlap, args.pdf_sources)
    print(
        f"guard set: {record['n_questions']} questions ({record['n_questions_before_dropping']} before dropping "
        f"{record['dropped']}), {record['n_chunks']} chunks from {record['n_passages']} passages → "
        f"{args.out_dir / DATASET_NAME}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
