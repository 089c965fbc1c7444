import shutil
from collections.abc import Iterator

import pytest

from support import Lokid, short_tmpdir


@pytest.fixture
def tmp_short() -> Iterator:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lokid(tmp_short) -> Iterator[Lokid]:
    """A running daemon; its log is printed when the test fails."""
    daemon = Lokid(tmp_short).start()
    yield daemon
    daemon.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    daemon = item.funcargs.get("lokid") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(daemon, Lokid):
        report.sections.append(("lokid log", daemon.log()[-20000:]))
    return report
