"""Socket methods, one module per area; `build_router` merges them."""

from lokid.methods import daemon, migration, projects, queue, runs
from lokid.server.dispatch import Router


def build_router() -> Router:
    router = Router()
    for area in (daemon, projects, queue, runs, migration):
        router.include(area.router)
    return router
