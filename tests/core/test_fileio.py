"""replace_folder: a folder is replaced whole or not at all, and a killed write is repaired."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.fileio import replace_folder


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def _folder(path: Path, **files: str) -> Path:
    path.mkdir()
    for name, text in files.items():
        (path / name.replace("_", ".")).write_text(text)
    return path


def test_a_new_folder_is_renamed_into_place(tmp_path):
    target = tmp_path / "deep" / "index"
    with replace_folder(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".index.tmp-") and not any(tmp.iterdir())
        assert not target.exists()  # nothing visible before the block ends
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("new")
    assert _tree(target) == {"sub/a.txt": "new"}
    assert _siblings(target) == ["index"]


def test_an_existing_folder_is_replaced_whole(tmp_path):
    target = _folder(tmp_path / "model", old_txt="old")
    with replace_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert _tree(target) == {"old.txt": "old"}  # readers still see the old folder
    assert _tree(target) == {"new.txt": "new"}
    assert _siblings(target) == ["model"]


def test_a_failure_mid_write_leaves_the_old_folder_intact(tmp_path):
    target = _folder(tmp_path / "model", weights_bin="old weights")
    with pytest.raises(OSError, match="No space left"):
        with replace_folder(target) as tmp:
            (tmp / "weights.bin").write_text("half of the new")
            raise OSError(28, "No space left on device")
    assert _tree(target) == {"weights.bin": "old weights"}
    assert _siblings(target) == ["model"], "the temporary folder was left behind"


def test_a_failure_on_the_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with replace_folder(tmp_path / "model") as tmp:
            (tmp / "part").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    import tasks.core.fileio as fileio

    target = _folder(tmp_path / "model", old_txt="old")
    real_rename = fileio.os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".model.tmp-"):
            raise PermissionError(13, "Permission denied")
        real_rename(src, dst)

    monkeypatch.setattr(fileio.os, "rename", rename)
    with pytest.raises(PermissionError):
        with replace_folder(target) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _tree(target) == {"old.txt": "old"}
    assert _siblings(target) == ["model"]


def test_keep_leaves_a_folder_another_process_wrote(tmp_path):
    target = tmp_path / "index"
    with replace_folder(target, if_exists="keep") as tmp:
        (tmp / "mine.txt").write_text("mine")
        target.mkdir()  # another process finished first
        (target / "theirs.txt").write_text("theirs")
    assert _tree(target) == {"theirs.txt": "theirs"}
    assert _siblings(target) == ["index"]


def test_fail_never_overwrites(tmp_path):
    target = _folder(tmp_path / "run-1", record_json="{}")
    with pytest.raises(FileExistsError, match="run-1 exists already"):
        with replace_folder(target, if_exists="fail") as tmp:
            (tmp / "record.json").write_text('{"new": 1}')
    assert _tree(target) == {"record.json": "{}"}
    assert _siblings(target) == ["run-1"]


def test_recover_restores_the_old_folder_after_a_kill_between_the_renames(tmp_path):
    # Killed after the old folder was renamed aside and before the new one was renamed in.
    _folder(tmp_path / ".model.old-dead", old_txt="old")
    _folder(tmp_path / ".model.tmp-dead")  # and a half-written new one
    with pytest.raises(RuntimeError):
        with replace_folder(tmp_path / "model", recover=True):
            raise RuntimeError("this write fails too")
    assert _tree(tmp_path / "model") == {"old.txt": "old"}
    assert _siblings(tmp_path / "model") == ["model"]


def test_without_recover_leftovers_of_others_are_not_touched(tmp_path):
    # Without recover=True another process's write in progress must survive.
    _folder(tmp_path / ".index.tmp-other")
    with replace_folder(tmp_path / "index") as tmp:
        (tmp / "a").write_text("a")
    assert _siblings(tmp_path / "index") == [".index.tmp-other", "index"]
