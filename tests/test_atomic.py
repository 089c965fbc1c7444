"""Replacing Loki Mode's files: atomic, and called off when someone else wrote meanwhile."""

from lokid.files.atomic import signature_of, write_atomic


def test_a_replace_is_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "pending.json"
    path.write_text("[1]")
    assert write_atomic(path, b"[1,2]") is not None
    assert path.read_bytes() == b"[1,2]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pending.json"]


def test_a_file_changed_since_it_was_read_is_not_clobbered(tmp_path):
    path = tmp_path / "pending.json"
    path.write_text("[1]")
    seen = signature_of(path)
    path.write_text('[1, {"id": "added-without-the-lock"}]')  # a writer that takes no lock
    assert write_atomic(path, b"[1]", still=lambda: signature_of(path) == seen) is None
    assert "added-without-the-lock" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pending.json"]
