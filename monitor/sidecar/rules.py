"""The firing rule: threshold, minimum tokens, hysteresis.

A quiet probe fires when its score reaches the calibrated threshold and its scope has at
least ``min_tokens`` tokens. A firing probe resolves only when the score falls below
``threshold - hysteresis`` (so a score hovering at the threshold does not flap), or when
the request ends.
"""

from __future__ import annotations

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.state import ProbeTrack


def decide(track: ProbeTrack) -> int | None:
    """The decision this track's latest update calls for, if any (DECISION_KIND_*)."""
    spec = track.probe.spec
    if not track.firing:
        if track.tokens >= spec.min_tokens and track.score >= spec.threshold:
            return pb.DECISION_KIND_FIRED
        return None
    if track.score < spec.threshold - spec.hysteresis:
        return pb.DECISION_KIND_RESOLVED
    return None
