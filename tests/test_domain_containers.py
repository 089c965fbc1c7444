"""The pure rules of the container lifecycle: names, references, prune and stop selection, ports."""

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from lokid.domain import containers as rules
from lokid.domain.containers import ContainerRecord, ImageRecord

REPO = "asklokesh/loki-mode"


def test_container_name_hashes_the_path_exactly_as_given():
    path = "/Users/me/app"
    assert rules.container_name(path) == "loki-" + hashlib.sha256(path.encode()).hexdigest()[:12]
    # A symlinked spelling is another project, as in Loki Mode's shell ($PWD, not realpath).
    assert rules.container_name("/Users/me/link-to-app") != rules.container_name(path)
    assert rules.project_id(path) == rules.container_name(path).removeprefix("loki-")


def test_references_split_registry_ports_from_tags():
    assert rules.parse_reference("asklokesh/loki-mode:latest") == rules.Reference(REPO, "latest")
    assert rules.parse_reference("127.0.0.1:5000/asklokesh/loki-mode") == rules.Reference(
        "127.0.0.1:5000/asklokesh/loki-mode"
    )
    ref = rules.parse_reference("localhost:5000/a/b:v1@sha256:abc")
    assert (ref.repository, ref.tag, ref.digest) == ("localhost:5000/a/b", "v1", "sha256:abc")
    assert rules.parse_reference("docker.io/library/busybox:1").repository == "busybox"
    assert rules.parse_reference("docker.io/asklokesh/loki-mode").repository == REPO
    assert rules.with_default_tag(REPO) == f"{REPO}:latest"
    assert rules.with_default_tag(f"{REPO}@sha256:ab") == f"{REPO}@sha256:ab"


def image(id: str, tags=(), digests=(), size=10) -> ImageRecord:
    return ImageRecord(id, list(tags), list(digests), size)


def test_prune_removes_old_images_of_the_repository_found_by_tag_or_digest():
    new = image("new", [f"{REPO}:latest"], [f"{REPO}@sha256:n"])
    tagged_old = image("old1", [f"{REPO}:7.0"], [f"{REPO}@sha256:o1"])
    # Its tag moved to the new pull; only its digest still names the repository.
    untagged_old = image("old2", [], [f"docker.io/{REPO}@sha256:o2"])
    plan = rules.select_prune([new, tagged_old, untagged_old], REPO, "new", set())
    assert [i.id for i in plan.remove] == ["old1", "old2"]


def test_prune_keeps_the_pulled_image_images_in_use_and_other_repositories():
    images = [
        image("new", [f"{REPO}:latest"]),
        image("used", [], [f"{REPO}@sha256:u"]),
        image("decoy", ["someone/decoy:latest"]),
        image("lookalike", [f"{REPO}-extra:latest"]),
        image("shared", [f"{REPO}:old", "mycorp/fork:1"]),  # also another repository's
        image("dangling"),  # names no repository at all
    ]
    plan = rules.select_prune(images, REPO, "new", {"used"})
    assert plan.remove == []
    assert plan.kept_in_use == ["used"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.sampled_from([REPO, "other/x", f"{REPO}-extra", "localhost:1/" + REPO]),
        ),
        max_size=8,
    ),
    st.sampled_from(["a", "b", "c"]),
    st.sets(st.sampled_from(["a", "b", "c", "d", "e"])),
)
def test_prune_never_removes_what_it_must_keep(refs, keep, used):
    by_id: dict[str, list[str]] = {}
    for image_id, repo in refs:
        by_id.setdefault(image_id, []).append(f"{repo}:t{len(by_id[image_id])}")
    images = [image(i, tags) for i, tags in by_id.items()]
    removed = {i.id for i in rules.select_prune(images, REPO, keep, used).remove}
    assert keep not in removed and not removed & used
    for i in images:
        if i.id in removed:
            assert {rules.parse_reference(t).repository for t in i.tags} == {REPO}


def container(id: str, image_ref: str = "", image_id: str = "", running=True, **labels):
    return ContainerRecord(id, id, image_id, image_ref, running, labels)


def test_stop_all_takes_managed_and_repository_containers_only():
    managed = container("m", "x/y", **{"dev.loki.managed-by": "lokid"})
    managed_exited = container("me", running=False, **{"dev.loki.managed-by": "lokid"})
    shell = container("s", f"{REPO}:latest")
    moved_tag = container("t", "sha256:0ld", image_id="sha256:0ld")
    other = container("o", "someone/decoy:latest")
    exited_shell = container("es", f"{REPO}:latest", running=False)
    chosen = rules.select_stop_all(
        [managed, managed_exited, shell, moved_tag, other, exited_shell], REPO, {"sha256:0ld"}
    )
    assert [c.id for c in chosen] == ["m", "me", "s", "t"]


def test_dashboard_port_is_57374_first_then_the_next_free_within_50():
    assert rules.pick_port(set()) == 57374
    assert rules.pick_port({57374, 57375}) == 57376
    assert rules.pick_port(set(range(57374, 57424))) is None
    assert rules.pick_port(set(range(57374, 57423))) == 57423


def test_pull_is_off_with_loki_docker_prune_0_or_pull_false():
    assert rules.pull_enabled(None, None) and rules.pull_enabled("1", True)
    assert not rules.pull_enabled("0", None) and not rules.pull_enabled("0", True)
    assert not rules.pull_enabled(None, False)
