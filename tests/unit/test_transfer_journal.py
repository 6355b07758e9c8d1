"""The receiver's journal: append, reload, and what it refuses to trust."""

from __future__ import annotations

import os
from pathlib import Path

from ferry.transfer.digest import scan_blocks
from ferry.transfer.journal import Journal
from ferry.transfer.sink import PartFile

from .test_transfer_helpers import MiB

HEADER = {"migration_uuid": "m1", "size": 8 * MiB, "chunk_size": MiB}


def test_records_reload_and_last_one_wins(tmp_path: Path) -> None:
    j = Journal(tmp_path / "disk.journal", HEADER)
    j.create({1: (10, 111)})
    j.record(2, 20, 222)
    j.record(1, 30, 333)
    j.record(2, 0, 0)  # cleared
    j.close()
    assert Journal.load(j.path, HEADER) == {1: (30, 333)}


def test_torn_tail_and_foreign_header(tmp_path: Path) -> None:
    j = Journal(tmp_path / "disk.journal", HEADER)
    j.create({})
    j.record(0, 10, 1)
    j.record(1, 10, 2)
    j.close()
    data = j.path.read_bytes()
    j.path.write_bytes(data[:-5])  # the last record was cut by a crash
    assert Journal.load(j.path, HEADER) == {0: (10, 1)}
    corrupt = bytearray(data)
    corrupt[-40] ^= 0xFF  # a bit flip in the first record
    j.path.write_bytes(bytes(corrupt))
    assert Journal.load(j.path, HEADER) == {}
    assert Journal.load(j.path, {**HEADER, "migration_uuid": "m2"}) is None
    assert Journal.load(tmp_path / "missing", HEADER) is None


def test_part_file_keeps_only_segments_that_still_verify(tmp_path: Path) -> None:
    good, bad = os.urandom(MiB), os.urandom(MiB)
    part = PartFile(tmp_path, "disk", 8 * MiB, MiB, "m1")
    part.open()
    for seg, data in ((2, good), (5, bad)):
        s = scan_blocks(data, seg * MiB, 0, MiB)[1]
        part.write(seg, [(0, memoryview(data))], MiB, s)
    part.close()
    with open(tmp_path / "disk.part", "r+b") as f:  # segment 5 lost on the disk
        f.seek(5 * MiB + 4096)
        f.write(b"\0" * 100)
    again = PartFile(tmp_path, "disk", 8 * MiB, MiB, "m1")
    again.open()
    assert set(again.journal.entries) == {2}
    assert again.resumed_bytes == MiB
    again.discard()
    assert os.listdir(tmp_path) == []


def test_part_file_without_journal_starts_over(tmp_path: Path) -> None:
    (tmp_path / "disk.part").write_bytes(b"stale" * 1000)
    part = PartFile(tmp_path, "disk", MiB, MiB, "m1")
    part.open()
    assert part.journal.entries == {}
    assert (tmp_path / "disk.part").stat().st_size == MiB
    assert (tmp_path / "disk.part").read_bytes() == bytes(MiB)
    part.discard()


def test_records_before_a_sync_marker_are_trusted(tmp_path: Path) -> None:
    j = Journal(tmp_path / "disk.journal", HEADER)
    j.create({})
    j.record(0, 10, 1)
    j.record(1, 10, 2)
    j.mark_synced()
    j.record(2, 10, 3)
    j.record(1, 10, 4)  # rewritten after the marker: not trusted any more
    j.close()
    found = Journal.load_marked(j.path, HEADER)
    assert found is not None
    entries, trusted = found
    assert entries == {0: (10, 1), 1: (10, 4), 2: (10, 3)}
    assert trusted == {0}


def test_cleanly_closed_part_file_resumes_without_rereading(tmp_path: Path) -> None:
    data = os.urandom(MiB)
    part = PartFile(tmp_path, "disk", 8 * MiB, MiB, "m1")
    part.open()
    part.write(3, [(0, memoryview(data))], MiB, scan_blocks(data, 3 * MiB, 0, MiB)[1])
    part.close(sync=True)
    with open(tmp_path / "disk.part", "r+b") as f:  # bit rot after a sync: not re-read
        f.seek(3 * MiB)
        f.write(b"\0" * 10)
    again = PartFile(tmp_path, "disk", 8 * MiB, MiB, "m1")
    again.open()
    assert set(again.journal.entries) == {3}
    again.discard()
