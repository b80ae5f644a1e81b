"""The lease figures the docs quote for the Redis example are the ones the code computes
(they once drifted: 0.55 s / 0.3 s documented, 0.79 s / 0.35 s in fact)."""

from __future__ import annotations

import pytest

from autopilot.config import load_text
from autopilot.election.election import lease_length
from autopilot.election.lease import default_margin
from autopilot.lab.cluster import EXAMPLES
from autopilot.lab.state import profile_env
from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(30)

README = (ROOT / "images" / "redis" / "README.md").read_text()


def lease_and_renew(profile: str) -> tuple[float, float]:
    """(local lease, renew interval) of the Redis example's elected job under ``profile``."""
    text = (EXAMPLES / "redis" / "autopilot.json5").read_text()
    cfg = load_text(text, "redis/autopilot.json5", profile_env("redis", profile))
    job = cfg.job("redis")
    session_ttl = float(max(10, round(job.election.session_ttl)))
    length = lease_length(session_ttl, job)
    renew = min(job.election.renew_interval or session_ttl / 3, length / 3)
    return length - default_margin(length), renew


@pytest.mark.parametrize("profile,lease,renew", [("fast", "0.45", "0.2"),
                                                 ("default", "1.5", "0.67")])
def test_documented_lease_is_computed_by_the_code(profile: str, lease: str, renew: str) -> None:
    got_lease, got_renew = lease_and_renew(profile)
    assert round(got_lease, 2) == float(lease), (profile, got_lease)
    assert round(got_renew, 2) == float(renew), (profile, got_renew)
    assert f"{lease} s, renewed every {renew} s" in README, f"images/redis/README.md: {profile}"
