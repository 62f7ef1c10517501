"""Write data/pdf/human_questions.json: CMRC 2018's human questions about the sample PDFs.

The flow evaluates base, champion and fine-tuned model on ``<pdf_dir>/human_questions.json``
when it exists (``tasks.evaluation.human_questions``; README, "Your own PDFs and your own questions"). For
the bundled sample PDFs this script makes that file from the data the PDFs were made of:

* questions: every CMRC question about a passage typeset in the PDFs, in the order of
  ``data/pdf/sources.json`` (which lists, per PDF, its passages and their question ids);
* evidence: the marked answer with up to 6 characters of the passage on each side, the
  way a user copies a snippet around an answer; the context is clipped to the passage and
  to the answer's own sentence (it stops after a 。！？； and never starts before one).
  Plain ±6 characters left 14 of 116 questions unresolved with the default chunks (300/30),
  against 2 this way: SentenceSplitter cuts chunks at sentence ends, so a snippet that
  reaches into the next sentence often crosses a chunk border. CMRC's ``answer_start`` is
  sometimes off by a character or two; the answer is then searched for nearby
  (``tasks.evaluation.squad.locate_answer``);
* source: the PDF's file name.

Usage (from the repository root)::

    .venv/bin/python data/make_human_questions.py      # = ../shared/data/cmrc2018_trial.json

The output is deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: reuse the pipeline's answer search
    sys.path.insert(0, str(REPO_ROOT))

from tasks.core.fileio import sha256_file, write_json_atomic  # noqa: E402
from tasks.evaluation.squad import Answer, locate_answer  # noqa: E402

DEFAULT_JSON = REPO_ROOT.parent / "shared" / "data" / "cmrc2018_trial.json"
DEFAULT_SOURCES = REPO_ROOT / "data" / "pdf" / "sources.json"
DEFAULT_OUT = REPO_ROOT / "data" / "pdf" / "human_questions.json"
PAD = 6


SENTENCE_ENDS = "。！？；!?;\n"


def evidence_snippet(context: str, start: int, answer: str, pad: int = PAD) -> str:
    """The answer with up to ``pad`` characters of context on each side, clipped to the
    passage and to the answer's sentence.

    >>> evidence_snippet("0123456789ABCDEF", 8, "89", pad=2)
    '6789AB'
    >>> evidence_snippet("甲说了。乙在北京工作。丙", 6, "北京", pad=6)
    '乙在北京工作。'
    """
    left = context[max(0, start - pad): start]
    left = left[max((left.rfind(c) for c in SENTENCE_ENDS), default=-1) + 1:]
    end = start + len(answer)
    right = "" if answer[-1:] in SENTENCE_ENDS else context[end: end + pad]
    stops = [i for i, ch in enumerate(right) if ch in SENTENCE_ENDS]
    if stops:
        right = right[: stops[0] + 1]
    return left + answer + right


def build_human_questions(cmrc_json: Path, sources_json: Path, pad: int = PAD) -> dict[str, Any]:
    """The file's content: attribution and licence, then one record per question."""
    cmrc = json.loads(Path(cmrc_json).read_text(encoding="utf-8"))
    sources = json.loads(Path(sources_json).read_text(encoding="utf-8"))
    # By position, as sources.json records it: entries of other SQuAD-format sets (CJRC) have no id.
    entries = cmrc["data"]
    questions, not_found = [], []
    for doc in sources["documents"]:
        for passage in doc["passages"]:
            paragraph = entries[passage["data_index"]]["paragraphs"][passage.get("paragraph_index", 0)]
            context = paragraph["context"]
            qas = {qa["id"]: qa for qa in paragraph["qas"]}
            for qid in passage["question_ids"]:
                qa = qas[qid]
                answer = qa["answers"][0]
                start = locate_answer(context, Answer(answer["text"], int(answer["answer_start"])))
                if start is None:
                    not_found.append(qid)
                    continue
                questions.append({
                    "id": qid,
                    "question": qa["question"],
                    "evidence": evidence_snippet(context, start, answer["text"], pad),
                    "source": doc["file"],
                })
    licence = sources.get("licence", "CC BY-SA 4.0")
    return {
        "dataset": f"{sources.get('dataset', 'CMRC 2018, trial split')}: the human-written questions about the passages of the sample PDFs",
        "source": sources.get("source", "https://github.com/ymcui/cmrc2018 (squad-style-data/cmrc2018_trial.json)"),
        "licence": licence,
        "licence_url": "https://creativecommons.org/licenses/by-sa/4.0/" if licence == "CC BY-SA 4.0" else None,
        "citation": sources.get("citation", ""),
        "generated_by": f"python data/make_human_questions.py --pad {pad} (evidence: the answer and up to {pad} characters "
                        "of its sentence on each side)",
        "input_sha256": sha256_file(Path(cmrc_json)),
        "answers_not_found": not_found,
        "questions": questions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cmrc_json", nargs="?", type=Path, default=DEFAULT_JSON, help="CMRC 2018 SQuAD-format file")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="sources.json of the sample PDFs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--pad", type=int, default=PAD, help="characters of context on each side of the answer")
    args = parser.parse_args(argv)
    if not args.cmrc_json.is_file():
        print(f"error: {args.cmrc_json} not found; pass the path of cmrc2018_trial.json", file=sys.stderr)
        return 2
    record = build_human_questions(args.cmrc_json, args.sources, args.pad)
    write_json_atomic(args.out, record)
    print(f"{len(record['questions'])} questions → {args.out}"
          + (f" ({len(record['answers_not_found'])} answers not found in their passage)"
             if record["answers_not_found"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
