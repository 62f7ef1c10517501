"""Questions written by people about the user's own PDFs, as a retrieval test set.

Synthetic validation questions come from the same LLM that wrote the training questions,
so they flatter the fine-tuned model. A few questions a person wrote about the PDFs,
each with a snippet of the PDF text that holds its answer, measure what a user will see.
The flow reports base, champion and fine-tuned on them; they choose nothing (no epoch, no
α, no promotion).
A few of them (``--prompt-examples``, :func:`pick_examples`) can instead show the
question writer how people ask; those leave the evaluation, and the report says how many
remain.

The file (``<pdf_dir>/human_questions.json`` by default)::

    {"questions": [
        {"id": "q1",                                   # optional, default q1, q2, … by position
         "question": "泡泡战士由哪家公司开发？",
         "evidence": "由韩国Nexon开发与发行",            # verbatim from the PDF text
         "source": "sample_01.pdf"}                    # optional: file relative to the PDF folder
     ],
     "licence": "…"}                                   # any other top-level key is kept out of the way

A question's relevant chunks are all chunks whose text contains its evidence once every
whitespace character is removed from both (PDF extraction breaks lines anywhere),
restricted to the chunks of ``source`` when it is given. Overlapping chunks can both hold
the evidence: then both are relevant. Questions with no such chunk are listed, not fatal.

Example::

    >>> from tasks.chunks.chunking import chunk_documents
    >>> from tasks.documents.reading import load_documents
    >>> questions = load_human_questions(Path("data/pdf/human_questions.json"))
    >>> chunks = chunk_documents(load_documents(Path("data/pdf")).documents, chunk_size=300, chunk_overlap=30)
    >>> resolved = resolve_questions(questions, chunks)
    >>> len(questions), resolved.n_resolved, resolved.unresolved[0]["id"]
    (116, 114, 'TRIAL_235_QUERY_1')
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.errors import HumanQuestionsError
from tasks.core.qa_dataset import QADataset
from tasks.core.records import Chunk

FILE_NAME = "human_questions.json"
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class HumanQuestion:
    qid: str
    question: str
    evidence: str
    source: str | None = None


@dataclass
class Resolution:
    """What :func:`resolve_questions` made of the questions."""

    dataset: QADataset  # the resolved questions against every chunk
    n_questions: int
    unresolved: list[dict[str, str]] = field(default_factory=list)  # {"id", "reason"}
    n_excluded: int = 0  # left out: shown to the question writer as examples

    @property
    def n_resolved(self) -> int:
        return len(self.dataset.queries)


def questions_file(setting: str, pdf_dir: Path) -> Path | None:
    """The file the ``human_questions`` setting names, or None for no human evaluation.

    ``auto``: ``<pdf_dir>/human_questions.json`` if it exists; ``none``/``off``: never;
    anything else is a path (which must then exist: see ``tasks.core.preflight``).

    >>> questions_file("none", Path("data/pdf")) is None
    True
    >>> questions_file("my/qs.json", Path("data/pdf"))
    PosixPath('my/qs.json')
    """
    value = str(setting).strip()
    if value.lower() in ("", "none", "off"):
        return None
    if value.lower() == "auto":
        candidate = Path(pdf_dir) / FILE_NAME
        return candidate if candidate.is_file() else None
    return Path(value).expanduser()


def _fail(path: Path, problem: str) -> HumanQuestionsError:
    return HumanQuestionsError(
        f"{path}: {problem}. Expected JSON like "
        '{"questions": [{"question": "…", "evidence": "a verbatim snippet of the PDF text", '
        '"source": "file.pdf (optional)", "id": "(optional)"}]}; fix the file, or run with '
        "--human-questions none"
    )


def parse_human_questions(raw: Any, path: Path) -> list[HumanQuestion]:
    """Validate the parsed JSON of ``path`` (named in errors) into questions.

    >>> parse_human_questions({"questions": [{"question": "谁？", "evidence": "他"}]}, Path("q.json"))
    [HumanQuestion(qid='q1', question='谁？', evidence='他', source=None)]
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("questions"), list):
        raise _fail(path, 'the top level must be an object with a list "questions"')
    questions: list[HumanQuestion] = []
    seen: set[str] = set()
    for i, item in enumerate(raw["questions"], 1):
        where = f"question #{i}"
        if not isinstance(item, dict):
            raise _fail(path, f"{where} is not an object")
        for key in ("question", "evidence"):
            value = item.get(key)
            if not isinstance(value, str) or not _squeeze(value):
                raise _fail(path, f'{where} has no "{key}" text' + (f" (id {item['id']})" if "id" in item else ""))
        for key in ("id", "source"):
            if key in item and item[key] is not None and not isinstance(item[key], (str, int)):
                raise _fail(path, f'{where}: "{key}" must be a string')
        qid = str(item["id"]) if item.get("id") not in (None, "") else f"q{i}"
        if qid in seen:
            raise _fail(path, f'{where}: the id "{qid}" is used twice; ids must be unique')
        seen.add(qid)
        source = item.get("source")
        questions.append(HumanQuestion(
            qid=qid,
            question=item["question"].strip(),
            evidence=item["evidence"],
            source=_norm_source(str(source)) if source not in (None, "") else None,
        ))
    return questions


def load_human_questions(path: Path) -> list[HumanQuestion]:
    """Read and validate a human-questions file; :class:`HumanQuestionsError` names the
    file and the fix when it is missing, not JSON, or lacks a field.

    Example::

        >>> load_human_questions(Path("data/pdf/human_questions.json"))[0].qid
        'TRIAL_800_QUERY_0'
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HumanQuestionsError(
            f"{path}: no such file; pass an existing file to --human-questions, or 'none' to run without one"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, f"cannot read it as UTF-8 text ({e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    return parse_human_questions(raw, path)


def resolve_questions(questions: Sequence[HumanQuestion], chunks: Sequence[Chunk],
                      exclude: Collection[str] = ()) -> Resolution:
    """Find each question's relevant chunks; the corpus is every chunk given.

    >>> chunks = [Chunk("c1", "d", "a.pdf", 1, "泡泡战士由韩国\\nNexon开发。"),
    ...           Chunk("c2", "d", "b.pdf", 1, "韩国Nexon 开发")]
    >>> r = resolve_questions([HumanQuestion("q", "谁开发？", "韩国Nexon开发", "a.pdf")], chunks)
    >>> r.dataset.relevant_docs
    {'q': ['c1']}

    ``exclude``: ids of questions to leave out (they served as prompt examples); they are
    counted in ``n_excluded``, neither resolved nor unresolved.
    """
    excluded = set(exclude)
    squeezed = [(c, _squeeze(c.text)) for c in chunks]
    sources = {c.source for c in chunks}
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    unresolved: list[dict[str, str]] = []
    for q in questions:
        if q.qid in excluded:
            continue
        if q.source is not None and q.source not in sources:
            unresolved.append({"id": q.qid, "reason": f"no chunk comes from {q.source} (a PDF of that name was "
                                                      "not read: check the name, relative to the PDF folder)"})
            continue
        needle = _squeeze(q.evidence)
        hits = [c.chunk_id for c, text in squeezed if (q.source is None or c.source == q.source) and needle in text]
        if not hits:
            where = f"the chunks of {q.source}" if q.source else "any chunk"
            unresolved.append({"id": q.qid, "reason": f"evidence not found in {where} (not verbatim in the PDF "
                                                      "text, or it crosses a chunk border: shorten it)"})
            continue
        queries[q.qid] = q.question
        relevant[q.qid] = hits
    dataset = QADataset(queries=queries, corpus={c.chunk_id: c.text for c in chunks}, relevant_docs=relevant)
    return Resolution(dataset=dataset, n_questions=len(questions), unresolved=unresolved,
                      n_excluded=sum(q.qid in excluded for q in questions))


def pick_examples(questions: Sequence[HumanQuestion], k: int, seed: int) -> list[HumanQuestion]:
    """``k`` questions to show the question writer as examples of how people ask.

    Chosen by a hash of the seed and each id, not by position: adding questions to the
    file keeps the examples already chosen unless a new one hashes before them, and the
    order of the file does not matter. The caller must leave them out of every evaluation:
    a question the LLM has seen in its prompt says nothing about retrieval.

    >>> qs = [HumanQuestion(f"q{i}", f"问题{i}？", "证据") for i in range(10)]
    >>> [q.qid for q in pick_examples(qs, 3, seed=42)] == [q.qid for q in pick_examples(qs[::-1], 3, seed=42)]
    True
    >>> len(pick_examples(qs, 3, seed=42)), pick_examples(qs, 0, seed=42)
    (3, [])
    """
    from tasks.core.fileio import stable_hash

    return sorted(questions, key=lambda q: stable_hash([seed, q.qid]))[: max(k, 0)]


def _squeeze(text: str) -> str:
    return _WHITESPACE.sub("", text)


def _norm_source(source: str) -> str:
    # Chunk sources are POSIX paths relative to the PDF folder (tasks.documents.reading.display_name).
    return Path(source.replace("\\", "/")).as_posix().removeprefix("./")
