"""The editor's desk under /admin: sign-in, dashboard, subscribers, topics and tags, issues, bounces, deliverability."""

from __future__ import annotations

from starlette.routing import BaseRoute

from subscribers.desk import audience, dashboard, issues, readers, reports, signin


def desk_routes() -> list[BaseRoute]:
    return [*signin.routes, *dashboard.routes, *readers.routes, *audience.routes, *issues.routes, *reports.routes]
