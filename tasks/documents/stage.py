"""The documents stage: every PDF under a folder, read and cleaned, in one JSONL file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.core.fileio import read_jsonl, write_jsonl_atomic
from tasks.core.records import Document
from tasks.core.settings import Settings
from tasks.core.stage import stage, stage_logger


@dataclass
class DocumentsRecord:
    documents_path: Path
    n_files: int
    n_documents: int
    n_pages: int
    n_duplicates: int
    skipped: list[dict[str, str]]
    left_out: dict[str, int] = field(default_factory=dict)  # what the layout took out of the running text


def _summary(record: DocumentsRecord, cached: bool) -> dict:
    return {"files": record.n_files, "documents": record.n_documents, "pages": record.n_pages,
            "duplicates": record.n_duplicates, "skipped": len(record.skipped), "skipped_files": record.skipped,
            "left_out": record.left_out}


@stage("documents", writes=("out_path",), settings=("documents",), summary=_summary)
def read_documents(pdf_dir: Path, out_path: Path, settings: Settings) -> DocumentsRecord:
    """Find, hash, extract and clean every PDF under ``pdf_dir``; skip the unreadable ones."""
    from tasks.documents.reading import load_documents

    result = load_documents(Path(pdf_dir), logger=stage_logger(), garbage_pdfs=settings.garbage_pdfs,
                            garbage_threshold=settings.garbage_threshold)
    write_jsonl_atomic(Path(out_path), [d.to_dict() for d in result.documents])
    return DocumentsRecord(
        documents_path=Path(out_path),
        n_files=result.n_files,
        n_documents=len(result.documents),
        n_pages=result.n_pages,
        n_duplicates=sum(len(d.duplicates) for d in result.documents),
        skipped=[asdict(s) for s in result.skipped],
        left_out=dict(result.left_out),
    )


def load_documents_file(path: str | Path) -> list[Document]:
    return [Document.from_dict(d) for d in read_jsonl(Path(path))]
