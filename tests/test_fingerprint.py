"""Run fingerprints: the same settings, inputs and code resume; a change starts afresh."""

from __future__ import annotations

import os

from lightfer import fingerprint
from lightfer.fingerprint import SMALL_FILE_BYTES, input_digest, run_fingerprint


def test_same_settings_and_inputs_give_the_same_fingerprint(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    settings = {"train.ef": {"lr": 0.002}, "seed": 0}
    first = run_fingerprint(settings, [tmp_path / "data"])
    assert first == run_fingerprint(dict(reversed(settings.items())), [tmp_path / "data"])
    assert len(first) == 16
    assert first != run_fingerprint({**settings, "seed": 1}, [tmp_path / "data"])
    (tmp_path / "data" / "a.txt").write_text("b")
    assert first != run_fingerprint(settings, [tmp_path / "data"])


def test_small_files_are_hashed_by_content_large_ones_by_size_and_mtime(tmp_path):
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"x" * 10)
    large.write_bytes(b"x" * (SMALL_FILE_BYTES + 1))
    before = input_digest(small), input_digest(large)
    for path in (small, large):  # the same bytes, written again later
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert input_digest(small) == before[0]
    assert input_digest(large) != before[1]
    assert input_digest(tmp_path / "absent") == "missing"


def test_interrupted_writes_and_bytecode_do_not_change_a_folder(tmp_path):
    (tmp_path / "faces.npy").write_bytes(b"crops")
    before = input_digest(tmp_path)
    (tmp_path / ".faces.npy.tmp-1-abc").write_bytes(b"half")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"")
    assert input_digest(tmp_path) == before


def test_the_code_version_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    first = run_fingerprint({}, [])
    monkeypatch.setattr(fingerprint, "code_version", lambda: "another")
    assert run_fingerprint({}, []) != first
