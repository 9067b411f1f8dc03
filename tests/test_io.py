"""Atomic writes: a failed or killed writer leaves the declared output untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lightfer.io import atomic_path, remove_stale_temporaries, write_json


def test_file_appears_only_when_complete(tmp_path: Path):
    target = tmp_path / "out" / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert os.listdir(target.parent) == ["a.txt"]


def test_an_exception_keeps_the_old_output_and_removes_the_temporary(tmp_path: Path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_directory_output_replaces_the_previous_one_whole(tmp_path: Path):
    target = tmp_path / "faces"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "old.npy").write_bytes(b"1")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.npy").write_bytes(b"2")
    assert sorted(os.listdir(target)) == ["new.npy"]
    assert sorted(os.listdir(tmp_path)) == ["faces"]


def test_a_killed_writer_leaves_no_output_and_the_next_run_tidies_up(tmp_path: Path):
    target = tmp_path / "manifest.parquet"
    script = (
        "import os, signal, sys\n"
        "from lightfer.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".manifest.parquet.tmp-")
    assert remove_stale_temporaries(tmp_path) == 1
    assert os.listdir(tmp_path) == []


def test_json_is_stable_and_rejects_nan(tmp_path: Path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 2})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json(tmp_path / "n.json", {"a": float("nan")})
    assert not (tmp_path / "n.json").exists()


def test_sigterm_during_an_atomic_write_removes_the_temporary(tmp_path):
    script = (
        "import sys, time\n"
        "from lightfer.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('partial')\n"
        "    print('open', flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "out.txt")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert process.stdout.readline() == "open\n"
    process.terminate()
    assert process.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_is_refused_up_front(tmp_path):
    from lightfer.errors import OutputPathError
    from lightfer.io import check_output_file

    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError, match=r"file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "out.csv")
    with pytest.raises(OutputPathError, match=r"is a directory"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "new" / "out.csv") == tmp_path / "new" / "out.csv"
    assert not (tmp_path / "new").exists() and sorted(tmp_path.iterdir()) == [tmp_path / "file"]
