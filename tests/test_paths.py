"""Finding the project as git finds its repository, and paths as people type them."""

from pathlib import Path

from lokid.paths import absolute_project, find_project


def _env(cwd: Path, home: Path) -> dict[str, str]:
    return {"PWD": str(cwd), "HOME": str(home)}


def test_relative_paths_and_trailing_slashes_become_normal_absolute_paths(tmp_path):
    env = _env(tmp_path, tmp_path)
    assert absolute_project(".", env) == str(tmp_path)
    assert absolute_project("proj/", env) == str(tmp_path / "proj")
    assert absolute_project("proj/../app//", env) == str(tmp_path / "app")
    assert absolute_project("/x/y/", env) == "/x/y"
    assert absolute_project("//x", env) == "/x"


def test_the_logical_pwd_is_kept_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    env = _env(tmp_path / "link", tmp_path)
    assert absolute_project("sub", env) == str(tmp_path / "link" / "sub")


def test_the_nearest_folder_with_a_loki_folder_above_is_the_project(tmp_path):
    home = tmp_path / "home"
    deep = home / "proj" / "src" / "deep"
    deep.mkdir(parents=True)
    (home / "proj" / ".loki").mkdir()
    assert find_project(str(deep), _env(deep, home)) == str(home / "proj")
    (home / "proj" / "src" / ".loki").mkdir()
    assert find_project(str(deep), _env(deep, home)) == str(home / "proj" / "src")


def test_home_is_never_found_from_below_but_counts_when_asked_from_home(tmp_path):
    home = tmp_path / "home"
    (home / ".loki").mkdir(parents=True)  # Loki Mode's global folder
    below = home / "notes"
    below.mkdir()
    assert find_project(str(below), _env(below, home)) is None
    assert find_project(str(home), _env(home, home)) == str(home)


def test_outside_any_project_nothing_is_found(tmp_path):
    assert find_project(str(tmp_path), _env(tmp_path, tmp_path / "home")) is None
    (tmp_path / ".loki").write_text("a file, not a folder")
    assert find_project(str(tmp_path), _env(tmp_path, tmp_path / "home")) is None
