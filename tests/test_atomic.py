"""The one atomic writer every final file goes through."""
from __future__ import annotations

import pytest

from fairseq_nas.atomic import atomic_save, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "best.json"
    atomic_write_text(path, "old\n")

    def fails(tmp):
        tmp.write_text("half of the new")
        raise KeyboardInterrupt  # a kill mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_save(path, fails)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_the_temporary_keeps_the_suffix_so_format_sniffing_writers_work(tmp_path):
    seen = []
    atomic_save(tmp_path / "sub" / "plot.png", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"x")))
    assert seen == [".png"] and (tmp_path / "sub" / "plot.png").read_bytes() == b"x"
    atomic_write_text(tmp_path / "sub" / "plot.png", "new")  # replaces an existing file
    assert (tmp_path / "sub" / "plot.png").read_text() == "new"
