"""Leader election for stateful services: sessions, locks, fencing, hand-over.

The supervisor calls ``components(ctx)``: one :class:`Election` per job with an
``election`` block. See docs/stateful.md.
"""

from __future__ import annotations

from autopilot.context import Context
from autopilot.election.election import Election


def components(ctx: Context) -> list[Election]:
    return [Election(ctx, job) for job in ctx.config.jobs if job.election is not None]


__all__ = ["Election", "components"]
