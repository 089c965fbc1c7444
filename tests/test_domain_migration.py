"""Loki Mode's migration rules, exactly, without a file."""

import pytest

from lokid.domain import migration as rules
from lokid.domain.migration import Details, GateFacts, JsonFile

T0, T1 = "2026-02-23T14:30:52.000001+00:00", "2026-02-23T15:00:00.000001+00:00"


def phases(**statuses: str) -> dict:
    return {
        p: {"status": statuses.get(p, "pending"), "started_at": "", "completed_at": ""}
        for p in rules.PHASES
    }


def features(data) -> GateFacts:
    return GateFacts(features=JsonFile(True, data))


def plan(data) -> GateFacts:
    return GateFacts(plan=JsonFile(True, data))


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["mig_20260223_143052_app-a1b2c3", "mig_20260223_143052_my_app", "mig_00000000_000000_-"],
)
def test_valid_ids(text):
    assert rules.id_problem(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mig_2026022_143052_app",  # seven digits
        "mig_20260223_143052_",  # no name
        "mig_20260223_143052_../../etc",
        "mig_20260223_143052_a/b",
        "mig_20260223_143052_app\n",  # re.match with $ would take it; lokid does not
        "mig_٢٠٢٦٠٢٢٣_143052_app",  # non-ASCII digits
        "MIG_20260223_143052_app",
        " mig_20260223_143052_app",
    ],
)
def test_malformed_ids_are_refused_with_the_pattern(text):
    assert rules.id_problem(text) == (
        f"invalid migration id {text!r}: must match ^mig_YYYYMMDD_HHMMSS_<name>$"
    )


def test_step_ids_are_what_a_git_tag_can_hold():
    assert rules.step_problem("step-1_a") is None
    for bad in ("", "a/b", "a b", "..", "a\n", "-"[:0]):
        assert rules.step_problem(bad) == f"invalid step id {bad!r}: must match ^[a-zA-Z0-9_-]+$"
    assert rules.checkpoint_tag("s1") == "loki-migrate/s1/pre"
    assert rules.tag_step("loki-migrate/s1/pre") == "s1"
    assert rules.tag_step("odd") is None


def test_phase_order_and_unknown_phases():
    assert rules.PHASES == ("understand", "guardrail", "migrate", "verify")
    assert [rules.next_phase(p) for p in rules.PHASES] == ["guardrail", "migrate", "verify", None]
    assert rules.phase_problem("verify") is None
    assert rules.phase_problem("deploy") == (
        "unknown phase 'deploy': one of understand, guardrail, migrate, verify"
    )


# -- starting and advancing ----------------------------------------------------------------


def test_start_is_idempotent_while_in_progress():
    assert rules.started(phases(understand="in_progress"), "understand", T1) is None


def test_start_sets_in_progress_now_and_clears_completion_and_keeps_the_rest():
    before = phases(understand="completed")
    before["understand"].update(completed_at=T0, note="kept")
    after = rules.started(before, "understand", T1)
    assert after["understand"] == {
        "status": "in_progress",
        "started_at": T1,
        "completed_at": "",
        "note": "kept",
    }
    assert after["guardrail"] == before["guardrail"]
    assert before["understand"]["status"] == "completed"  # not changed in place


def test_start_may_start_any_phase_and_creates_a_missing_entry():
    after = rules.started({}, "verify", T1)
    assert after == {"verify": {"status": "in_progress", "started_at": T1, "completed_at": ""}}


def test_advance_completes_the_phase_and_starts_the_next():
    before = phases(understand="in_progress")
    before["guardrail"]["completed_at"] = "old"
    after = rules.advanced(before, "understand", T1)
    assert after["understand"] == {"status": "completed", "started_at": "", "completed_at": T1}
    # The engine leaves the next phase's completed_at alone.
    assert after["guardrail"] == {"status": "in_progress", "started_at": T1, "completed_at": "old"}
    assert after["migrate"] == before["migrate"]


def test_advancing_the_last_phase_starts_nothing():
    after = rules.advanced(phases(verify="in_progress"), "verify", T1)
    assert after["verify"]["status"] == "completed"
    assert set(after) == set(rules.PHASES)


@pytest.mark.parametrize("status", ["pending", "completed", "failed"])
def test_only_a_phase_in_progress_may_advance(status):
    assert rules.advance_problem(phases(migrate=status), "migrate") == (
        f"Cannot advance phase 'migrate': status is '{status}', expected 'in_progress'"
    )
    assert rules.advance_problem(phases(migrate="in_progress"), "migrate") is None


def test_a_missing_or_malformed_phase_entry_reads_as_pending():
    assert rules.phase_status({}, "verify") == "pending"
    assert rules.phase_status({"verify": "done"}, "verify") == "pending"
    assert rules.phase_status({"verify": {"status": 3}}, "verify") == "pending"


def test_current_phase_session_phase_and_status():
    resumed = phases(understand="in_progress", guardrail="completed")
    # The dashboard's current phase is the last one not pending; a session is filed under
    # the first in progress (the engine computes the two differently).
    assert rules.current_phase(resumed) == "guardrail"
    assert rules.session_phase(resumed) == "understand"
    assert rules.current_phase(phases()) == rules.session_phase(phases()) == "pending"
    assert rules.session_phase(phases(understand="completed")) == "understand"
    assert rules.overall_status(phases()) == "pending"
    assert rules.overall_status(phases(understand="completed")) == "in_progress"
    assert rules.overall_status(phases(guardrail="completed")) == "in_progress"
    assert rules.overall_status(phases(migrate="in_progress")) == "in_progress"
    assert rules.overall_status(phases(understand="failed", guardrail="in_progress")) == "failed"
    done = {p: "completed" for p in rules.PHASES}
    assert rules.overall_status(phases(**done)) == "completed"


# -- gates ---------------------------------------------------------------------------------


def test_understand_gate_needs_docs_then_seams():
    assert rules.gate("understand", "guardrail", GateFacts(0, True)) == (
        "Phase gate failed: no documentation generated in docs/"
    )
    assert rules.gate("understand", "guardrail", GateFacts(1, False)) == (
        "Phase gate failed: seams.json does not exist"
    )
    assert rules.gate("understand", "guardrail", GateFacts(1, True)) is None


def test_guardrail_gate_reasons():
    g = rules.gate_to_leave
    assert g("guardrail", GateFacts()) == "Phase gate failed: features.json not found"
    bad_json = GateFacts(features=JsonFile(True, error="Expecting value: line 1 column 1"))
    assert g("guardrail", bad_json) == (
        "Phase gate failed: features.json is invalid: Expecting value: line 1 column 1"
    )
    assert g("guardrail", features([])) == "No features defined"
    assert g("guardrail", features({"other": 1})) == "No features defined"
    assert g("guardrail", features(5)) == (
        "Phase gate failed: features.json is invalid:"
        ' expected a list of features or {"features": [...]}'
    )
    assert g("guardrail", features([{"passes": True}])) == (
        "Phase gate failed: features.json is invalid: feature 0 has no id"
    )
    assert g("guardrail", features(["f1"])) == (
        "Phase gate failed: features.json is invalid: feature 0 is not an object"
    )


def test_guardrail_gate_names_at_most_five_failing_features():
    items = [{"id": f"f{i}", "passes": i == 0} for i in range(8)]
    items.append({"id": 99})  # no `passes`: not passing; a number id is named too
    assert rules.gate_to_leave("guardrail", features(items)) == (
        "Phase gate failed: 8 characterization tests not passing (f1, f2, f3, f4, f5)"
    )
    assert rules.gate_to_leave("guardrail", features([{"id": 99}])) == (
        "Phase gate failed: 1 characterization tests not passing (99)"
    )


def test_guardrail_gate_passes_when_all_pass_in_either_shape():
    items = [{"id": "a", "passes": True, "extra": {"kept": 1}}, {"id": "b", "passes": True}]
    assert rules.gate_to_leave("guardrail", features(items)) is None
    assert rules.gate_to_leave("guardrail", features({"features": items})) is None


def test_migrate_gate_reasons():
    g = rules.gate_to_leave
    assert g("migrate", GateFacts()) == "Phase gate failed: migration-plan.json not found"
    assert g("migrate", plan([])) == (
        "Phase gate failed: migration-plan.json is invalid: expected an object with a steps list"
    )
    assert g("migrate", plan({"steps": {}})) == (
        "Phase gate failed: migration-plan.json is invalid: steps is not a list"
    )
    assert g("migrate", plan({"steps": [{"status": "completed"}]})) == (
        "Phase gate failed: migration-plan.json is invalid: step 0 has no id"
    )
    steps = [{"id": f"s{i}", "status": "completed" if i % 2 else "pending"} for i in range(14)]
    steps.append({"id": "nostatus"})
    assert g("migrate", plan({"steps": steps})) == (
        "Phase gate failed: 8 steps not completed (s0, s2, s4, s6, s8)"
    )
    done = [{"id": "s1", "status": "completed"}]
    assert g("migrate", plan({"steps": done, "version": 2})) is None
    assert g("migrate", plan({"strategy": "incremental"})) is None  # no steps: nothing undone


def test_verify_has_no_gate_and_jumps_are_refused():
    assert rules.gate_to_leave("verify", GateFacts()) is None
    assert rules.gate("understand", "migrate", GateFacts(1, True)) == (
        "Cannot jump from understand to migrate"
    )
    assert rules.gate("migrate", "guardrail", GateFacts()) == (
        "Cannot jump from migrate to guardrail"
    )
    assert rules.gate("plan", "verify", GateFacts()) == "Unknown phase: plan or verify"


def test_each_gate_names_the_facts_it_reads():
    assert rules.gate_needs("understand") == {"docs_count", "seams_present"}
    assert rules.gate_needs("guardrail") == {"features"}
    assert rules.gate_needs("migrate") == {"plan"}
    assert rules.gate_needs("verify") == set()


# -- the summary ---------------------------------------------------------------------------


def test_summary_counts_features_steps_and_the_last_checkpoint():
    feats = JsonFile(True, {"features": [{"id": "a", "passes": True}, {"id": "b"}]})
    steps = [
        {"id": "s1", "status": "completed"},
        {"id": "s2", "status": "in_progress"},
        {"id": "s3", "status": "in_progress"},
        {"id": "s4"},
    ]
    meta = JsonFile(True, {"step_id": "s2", "tag": "loki-migrate/s2/pre", "created_at": T1})
    s = rules.summarize(
        phases(understand="completed", guardrail="completed", migrate="in_progress"),
        ["loki-migrate/s1/pre", "loki-migrate/s2/pre"],
        feats,
        JsonFile(True, {"steps": steps}),
        meta,
    )
    assert s == rules.Summary(
        status="in_progress",
        current_phase="migrate",
        completed_phases=["understand", "guardrail"],
        features_passing=1,
        features_total=2,
        steps_current=2,
        steps_completed=1,
        steps_total=4,
        current_step="s2",
        last_checkpoint=rules.LastCheckpoint("loki-migrate/s2/pre", "s2", T1),
        checkpoints_count=2,
    )


def test_summary_of_unreadable_files_counts_none():
    s = rules.summarize(
        phases(),
        ["loki-migrate/s9/pre"],
        JsonFile(True, error="bad"),
        JsonFile(True, ["not", "a", "plan"]),
        rules.MISSING,
    )
    assert (s.features_passing, s.features_total, s.steps_total, s.steps_current) == (0, 0, 0, 0)
    assert s.last_checkpoint == rules.LastCheckpoint("loki-migrate/s9/pre", "", "")
    assert rules.summarize(phases(), ["no-slash"]).last_checkpoint is None
    assert rules.summarize(phases(), []).last_checkpoint is None


def test_steps_current_stops_at_the_last_step():
    all_done = JsonFile(True, {"steps": [{"id": "a", "status": "completed"}]})
    s = rules.summarize(phases(), [], plan=all_done)
    assert (s.steps_current, s.steps_completed, s.steps_total) == (1, 1, 1)


# -- progress.md ---------------------------------------------------------------------------


def test_a_session_is_written_exactly_as_the_engine_writes_it():
    entry = rules.progress_entry(T0, "agent-1", "migrate", "ported the parser")
    assert entry == (
        f"\n## Session: {T0}\nAgent: agent-1\nPhase: migrate\nSummary: ported the parser\n"
    )
    details = Details(steps_completed="s1, s2", tests_passing=42, notes="slow")
    assert rules.progress_entry(T0, "a", "verify", "x", details).endswith(
        "Summary: x\nSteps completed: s1, s2\nTests: 42\nNotes: slow\n"
    )
    # Falsy details are left out, as the engine's `if details.get(...)` does.
    empty = Details(steps_completed=0, tests_passing="", notes=None)
    assert rules.progress_entry(T0, "a", "verify", "x", empty).endswith("Summary: x\n")


def test_a_new_progress_file_gets_the_header():
    entry = rules.progress_entry(T0, "a", "understand", "first")
    assert rules.append_session(None, entry) == (
        "# Migration Progress\n# Auto-updated after every agent session\n" + entry
    )


def cap_after(appends: int) -> list[str]:
    text = None
    for i in range(appends):
        text = rules.append_session(text, rules.progress_entry(T0, "a", "migrate", f"n{i}"))
    return [rules.parse_session(b).summary for b in rules.session_blocks(text or "")]


def test_the_cap_keeps_the_last_50_sessions_before_appending():
    assert cap_after(50) == [f"n{i}" for i in range(50)]
    assert cap_after(51) == [f"n{i}" for i in range(51)]
    # 51 existing: cut to the last 50, then the new one: 51, as Loki Mode leaves it.
    assert cap_after(52) == [f"n{i}" for i in range(1, 52)]
    assert cap_after(120) == [f"n{i}" for i in range(69, 120)]
    assert rules.PROGRESS_KEEP == 50


def test_the_cap_keeps_the_header_and_unknown_text_of_kept_sessions():
    head = "# Migration Progress\n# mine\n"
    text = head + "".join(f"\n## Session: t{i}\nAgent: a\nCustom: {i}\n" for i in range(60))
    out = rules.append_session(text, "\n## Session: new\nAgent: b\n")
    assert out.startswith(head + "\n## Session: t10\nAgent: a\nCustom: 10\n")
    assert out.endswith("Custom: 59\n\n## Session: new\nAgent: b\n")


def test_parse_session_reads_back_what_was_written():
    details = Details(steps_completed="s1", tests_passing="12/12", notes="n")
    block = rules.session_blocks(
        rules.append_session(None, rules.progress_entry(T0, "ag", "verify", "a\nb", details))
    )[0]
    session = rules.parse_session(block)
    assert (session.at, session.agent, session.phase, session.summary) == (
        T0,
        "ag",
        "verify",
        "a\nb",
    )
    assert session.lines == {"Steps completed": "s1", "Tests": "12/12", "Notes": "n"}


@pytest.mark.parametrize(
    ("agent", "summary", "details", "problem"),
    [
        ("", "x", None, "agent must be one non-empty line"),
        ("a\nb", "x", None, "agent must be one non-empty line"),
        ("a", " ", None, "summary must not be empty"),
        (
            "a",
            "x\n## Session: forged",
            None,
            "summary must not contain a line starting with '## Session:'",
        ),
        (
            "a",
            "ok",
            Details(notes="## Session: x"),
            "notes must not contain a line starting with '## Session:'",
        ),
    ],
)
def test_texts_that_would_forge_or_cut_a_session_are_refused(agent, summary, details, problem):
    assert rules.progress_problem(agent, summary, details) == problem


def test_texts_are_bounded():
    long = "x" * (rules.MAX_TEXT + 1)
    assert rules.progress_problem("a", long) == "summary is longer than 65536 characters"
    assert rules.progress_problem(long, "s") == "agent is longer than 65536 characters"
    assert rules.progress_problem("a", "s", Details(notes=long)) == (
        "notes is longer than 65536 characters"
    )
    assert rules.progress_problem("a", "x" * rules.MAX_TEXT) is None


def test_multi_line_summaries_are_fine():
    assert rules.progress_problem("a", "line 1\nline 2\n## not a session", None) is None
