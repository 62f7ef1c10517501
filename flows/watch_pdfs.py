"""Watch the PDF folder and announce new, changed or removed PDFs as a Prefect event.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.watch_pdfs --pdf-dir /srv/bce/pdf
    python -m flows.watch_pdfs --once            # check once, announce if needed, exit

The event (``bce.pdfs.changed``, resource ``bce.pdf-folder.<source>``, the file lists
in its payload) is what the deployments' triggers in ``prefect.yaml`` react to: one
event per quiet burst, so a folder filling up with many files starts one retraining.
The watcher itself never trains; it needs only the Prefect server, not a worker.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse
import asyncio
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tasks.documents.watch import PdfChanges, QuietTimer, diff_states, hash_pdfs, listing, load_state, save_state
from tasks.core.settings import Settings, WatchSettings


def default_state_file(output_dir: Path) -> Path:
    return Path(output_dir) / "work" / "pdf_watch_state.json"


def check_and_announce(
    pdf_dir: Path, state_file: Path, announce: Callable[[PdfChanges], dict[str, Any]]
) -> PdfChanges:
    """Hash the PDFs, announce what changed since the last announcement, then record it.

    ``announce`` sends the event and returns a small record of it (id, time); the
    state is written only after it returned, so a failed send is retried next time.
    """
    state = load_state(state_file)
    current = hash_pdfs(pdf_dir, listing(pdf_dir), state)
    changes = diff_states(state, current)
    if not changes.is_empty():
        save_state(state_file, current, announce(changes))
    elif current != state["files"]:  # only touched: remember the new times, skip rehashing them
        save_state(state_file, current, state.get("last_event"))
    return changes


def prefect_announcer(pdf_dir: Path, watch: WatchSettings) -> Callable[[PdfChanges], dict[str, Any]]:
    """An ``announce`` that emits the event to the Prefect server at PREFECT_API_URL."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SystemExit(
            "error: PREFECT_API_URL is not set. The watcher sends its events to the server the deployments "
            "live on, e.g. PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.watch_pdfs"
        )
    folder = str(Path(pdf_dir).resolve())

    def announce(changes: PdfChanges) -> dict[str, Any]:
        event = Event(
            event=watch.event,
            resource={"prefect.resource.id": f"bce.pdf-folder.{watch.source}", "prefect.resource.name": folder},
            payload={"pdf_dir": folder, **changes.to_dict()},
        )

        async def send() -> None:
            async with get_events_client() as client:
                await client.emit(event)

        asyncio.run(send())
        return {"id": str(event.id), "occurred": event.occurred.isoformat(), "event": watch.event, **changes.to_dict()}

    return announce


def watch_folder(
    pdf_dir: Path,
    state_file: Path,
    watch: WatchSettings,
    announce: Callable[[PdfChanges], dict[str, Any]],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Poll until ``keep_going()`` is false; announce once the folder has been quiet."""
    timer = QuietTimer(watch.quiet_seconds)
    checked = None  # the listing last hashed: nothing to do until it changes again
    while keep_going():
        files = listing(pdf_dir)
        if timer.observe(files, clock()) and files != checked:
            try:
                changes = check_and_announce(pdf_dir, state_file, announce)
            except Exception as e:  # server down, say: keep watching, try again next poll
                _say(f"could not announce ({type(e).__name__}: {e}); retrying")
            else:
                if not changes.is_empty():
                    _say(f"announced {watch.event}: {len(changes.added)} added, {len(changes.changed)} changed, "
                         f"{len(changes.removed)} removed")
                checked = files
        sleep(watch.poll_seconds)


def _say(message: str) -> None:
    print(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} watch_pdfs: {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.watch_pdfs", description=__doc__.splitlines()[0])
    p.add_argument("--pdf-dir", type=Path, help="Folder to watch (default: the pipeline's pdf_dir, env BCE_PDF_DIR).")
    p.add_argument("--output-dir", type=Path, help="Where the state file goes by default (env BCE_OUTPUT_DIR).")
    for name, f in WatchSettings.model_fields.items():
        kind = Path if name == "state_file" else type(f.default) if f.default is not None else str
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=argparse.SUPPRESS,
                       help=f"{f.description} (default: {f.default}; env BCE_WATCH_{name.upper()})")
    p.add_argument("--once", action="store_true", help="Check once without waiting for quiet, then exit.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pipeline = Settings(**{k: v for k, v in (("pdf_dir", args.pdf_dir), ("output_dir", args.output_dir)) if v})
    watch = WatchSettings(**{k: v for k, v in vars(args).items() if k in WatchSettings.model_fields})
    pdf_dir = Path(pipeline.pdf_dir)
    if not pdf_dir.is_dir():
        print(f"error: PDF folder {pdf_dir} does not exist: create it or pass --pdf-dir", file=sys.stderr)
        return 2
    state_file = watch.state_file or default_state_file(pipeline.output_dir)
    announce = prefect_announcer(pdf_dir, watch)
    if args.once:
        changes = check_and_announce(pdf_dir, state_file, announce)
        _say("no change" if changes.is_empty() else f"announced {watch.event}: {changes.to_dict()}")
        return 0
    _say(f"watching {pdf_dir.resolve()} (quiet {watch.quiet_seconds:g} s, state {state_file})")
    try:
        watch_folder(pdf_dir, state_file, watch, announce)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
