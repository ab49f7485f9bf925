"""The firing rule: threshold, minimum tokens, hysteresis.

A quiet probe fires when its score reaches the calibrated threshold and its scope has at
least ``min_tokens`` tokens; a probe with ``decide: end`` is judged once, on its final score
when the request ends (it then resolves at once, with the request). A firing probe resolves only when the score falls below
``threshold - hysteresis`` (so a score hovering at the threshold does not flap), or when
the request ends.
"""

from __future__ import annotations

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.state import ProbeTrack


def decide(track: ProbeTrack) -> int | None:
    """The decision this track's latest update calls for, if any (DECISION_KIND_*)."""
    spec = track.probe.spec
    if spec.decide == "end":
        return None
    if not track.firing:
        if track.tokens >= spec.min_tokens and track.score >= spec.threshold:
            return pb.DECISION_KIND_FIRED
        return None
    if track.score < spec.threshold - spec.hysteresis:
        return pb.DECISION_KIND_RESOLVED
    return None


def decide_at_end(track: ProbeTrack) -> int | None:
    """For a probe judged at the end of its request (``decide: end``): fire on the final score."""
    spec = track.probe.spec
    if spec.decide == "end" and track.tokens >= spec.min_tokens and track.score >= spec.threshold:
        return pb.DECISION_KIND_FIRED
    return None
