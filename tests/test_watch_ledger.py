"""The watcher's ledger on real files: what changed since lokid last looked."""

import os

from lokid.watch.ledger import Ledger


def test_changes_since_the_baseline_and_each_only_once(tmp_path):
    loki = tmp_path / ".loki"
    (loki / "signals").mkdir(parents=True)
    (loki / "events.jsonl").write_text("a\n")
    (loki / "signals" / "OLD").write_text("x")
    ledger = Ledger()
    assert ledger.changes("/p", loki) == []  # no baseline yet: nothing to compare with
    ledger.baseline("/p", loki)
    assert ledger.changes("/p", loki) == []
    with open(loki / "events.jsonl", "a") as f:
        f.write("b\n")
    (loki / "PAUSE").touch()
    (loki / "signals" / "NEW").write_text("y")
    (loki / "signals" / ".NEW.swp").write_text("editor")  # not a signal
    (loki / "signals" / "OLD").unlink()
    assert ledger.changes("/p", loki) == [
        ("PAUSE",),
        ("events.jsonl",),
        ("signals", "NEW"),
        ("signals", "OLD"),
    ]
    assert ledger.changes("/p", loki) == []  # noted as seen


def test_a_file_reacted_to_is_not_a_change_and_only_narrows(tmp_path):
    loki = tmp_path / ".loki"
    (loki / "state").mkdir(parents=True)
    ledger = Ledger()
    ledger.baseline("/p", loki)
    (loki / "STOP").touch()
    ledger.note("/p", loki, ("STOP",))  # the watcher reacted to it already
    signature = loki / "state" / "prd-signature.json"
    signature.write_text("{}")
    os.utime(signature, ns=(1, 1))
    assert ledger.changes("/p", loki, [("state", "prd-signature.json")]) == [
        ("state", "prd-signature.json")
    ]
    assert ledger.changes("/p", loki) == []
    ledger.keep([])
    signature.write_text('{"a": 1}')
    assert ledger.changes("/p", loki) == []  # forgotten: no baseline
