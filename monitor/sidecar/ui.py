"""The forensic pages on the sidecar's HTTP listener: what fired, on which tokens, and why.

``/ui/``                   open incidents and recent flagged requests, filterable by model,
                           probe and severity, updated live (server-sent events from the
                           same fan-out as WatchAlerts, at ``/ui/events``)
``/ui/requests/<id>``      one request: its tokens coloured by a probe's token values, each
                           probe's running score along the tokens with its threshold and
                           firing point, decisions, pack and layers, and for SAE-latent
                           probes the latents that contributed most with their
                           top-activating contexts (``saemon sae browse --pack``)

Every page has a JSON twin (``Accept: application/json``). Server-rendered (Jinja2
templates shipped in the package), inline SVG and a little plain JavaScript: nothing is
built or fetched at run time. Off unless ``sidecar.ui.enabled``. Token text appears only
when the audit trail stores it (``redis.store_token_text``); otherwise tokens are shown by
position. Access: the API's bearer token (``sidecar.auth_token_file``) or HTTP basic auth
(``sidecar.ui.basic_auth_*``); without either the pages are served on loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from google.protobuf import json_format

from monitor.config import Settings, read_secret
from monitor.errors import ConfigError
from monitor.probe import SEVERITIES
from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.alerts import SEVERITY_NAMES, IncidentBook, request_page, rfc3339
from monitor.sidecar.pipeline import Pipeline
from monitor.sidecar.scorer import Scorer
from monitor.sidecar.store import AuditStore, StoreUnavailable
from monitor.sidecar.watch import CLOSED, Subscriber, WatchHub, close

log = logging.getLogger(__name__)

#: Seconds between SSE comments that keep idle connections (and proxies) open.
HEARTBEAT_SECONDS = 15.0
#: Contributing latents shown per probe, and contexts per latent.
TOP_FEATURES = 8
CONTEXTS_SHOWN = 3


def _label(enum: Any, value: int, prefix: str) -> str:
    """A proto enum value as the pages show it: ``FINISH_REASON_ABORT`` -> ``abort``; '' for
    the unspecified zero value."""
    return enum.Name(value).removeprefix(prefix).lower() if value else ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Credentials:
    """Who may open the pages: the API's bearer token and/or a basic-auth user."""

    def __init__(self, settings: Settings) -> None:
        ui = settings.sidecar.ui
        token = settings.auth_token()
        self.token = token.encode() if token else None
        password = read_secret(ui.basic_auth_password_file, "sidecar.ui.basic_auth_password_file")
        if (ui.basic_auth_user is None) != (password is None):
            raise ConfigError(
                "sidecar.ui.basic_auth_user and sidecar.ui.basic_auth_password_file go together: set both or neither"
            )
        self.basic = f"{ui.basic_auth_user}:{password}".encode() if password is not None else None
        host = settings.sidecar.http_listen.rpartition(":")[0]
        if self.token is None and self.basic is None and not is_loopback(host):
            raise ConfigError(
                f"sidecar.ui.enabled with sidecar.http_listen {settings.sidecar.http_listen!r} beyond loopback "
                "and no credentials: the pages show what users asked. Set sidecar.auth_token_file (the API's "
                "bearer token) or sidecar.ui.basic_auth_user and basic_auth_password_file, or listen on 127.0.0.1"
            )

    @property
    def required(self) -> bool:
        return self.token is not None or self.basic is not None

    def allows(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode(), self.token)
        if scheme.lower() == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(given, self.basic)
        return False

    def challenge(self) -> str:
        return 'Basic realm="saemon", charset="UTF-8"' if self.basic is not None else 'Bearer realm="saemon"'


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _time(unix_nanos: int) -> str:
    return rfc3339(unix_nanos) if unix_nanos else ""


def decision_row(decision: pb.Decision) -> dict[str, Any]:
    """A decision as the pages and their JSON twins show it."""
    return {
        "id": decision.id,
        "event_id": decision.event_id,
        "kind": _label(pb.DecisionKind, decision.kind, "DECISION_KIND_") or "unspecified",
        "request_id": decision.request_id,
        "model_name": decision.model_name,
        "probe": decision.probe,
        "concept": decision.concept,
        "pack": f"{decision.pack}@{decision.pack_version}" if decision.pack else "",
        "severity": SEVERITY_NAMES.get(decision.severity, ""),
        "action": _label(pb.Action, decision.action, "ACTION_"),
        "score": decision.score,
        "threshold": decision.threshold,
        "tokens": decision.tokens,
        "position": decision.position,
        "policy": decision.policy,
        "time": _time(decision.decided_unix_nanos),
        "url": request_page(decision.request_id, decision.model_name, decision.probe),
    }


def page_templates() -> jinja2.Environment:
    """The pages' templates (package data), autoescaped; a missing variable is an error."""
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("monitor.sidecar", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["num"] = lambda value: f"{value:.4g}"
    return templates


class Filters:
    """The list page's filters, from the query string."""

    def __init__(self, query: Any) -> None:
        self.model = query.get("model", "")
        self.probe = query.get("probe", "")
        severity = query.get("severity", "")
        self.severity = severity if severity in SEVERITIES else ""

    def keep(self, model: str, probe: str, severity: str) -> bool:
        return (
            (not self.model or model == self.model)
            and (not self.probe or probe == self.probe)
            and (not self.severity or SEVERITIES.get(severity, 0) >= SEVERITIES[self.severity])
        )

    def as_dict(self) -> dict[str, str]:
        return {"model": self.model, "probe": self.probe, "severity": self.severity}


class RecentDecisions:
    """The newest FIRED decisions this process published: the list page without Redis."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.decisions: deque[pb.Decision] = deque(maxlen=limit)

    def add(self, decision: pb.Decision) -> None:
        if decision.kind == pb.DECISION_KIND_FIRED:
            self.decisions.append(decision)


class ForensicUi:
    """The ``/ui/`` routes and what they read: the scorer's memory, the audit store, the
    incident book and the decision fan-out."""

    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        pipeline: Pipeline,
        store: AuditStore,
        incidents: IncidentBook,
        watch: WatchHub,
        recent: RecentDecisions,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.pipeline = pipeline
        self.store = store
        self.incidents = incidents
        self.watch = watch
        self.recent = recent
        self.credentials = Credentials(settings)
        self.templates = page_templates()
        self._contexts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._streams: set[Subscriber] = set()
        self._closing = False

    # -- wiring ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ui", self._redirect)
        app.router.add_get("/ui/", self._index)
        app.router.add_get("/ui/events", self._events)
        app.router.add_get("/ui/requests/{request_id}", self._request)
        app.middlewares.append(self._guard)

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not (request.path == "/ui" or request.path.startswith("/ui/")):
            return await handler(request)
        if self.credentials.required and not self.credentials.allows(request.headers.get("Authorization", "")):
            problem = (
                "missing credentials" if "Authorization" not in request.headers else "wrong or unsupported credentials"
            )
            return self._error(
                request,
                401,
                "Not signed in",
                f"{problem}: send the sidecar's bearer token (Authorization: Bearer ...) or the "
                "basic-auth user set in sidecar.ui.",
                headers={"WWW-Authenticate": self.credentials.challenge()},
            )
        return await handler(request)

    def _error(
        self, request: web.Request, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        if wants_json(request):
            return web.json_response({"error": title, "detail": detail}, status=status, headers=headers)
        body = self.templates.get_template("error.html").render(title=title, detail=detail, status=status)
        return web.Response(text=body, status=status, content_type="text/html", headers=headers)

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    # -- the list ----------------------------------------------------------------------------

    async def _flagged(self, filters: Filters) -> list[pb.Decision]:
        limit = self.settings.sidecar.ui.recent
        models = [filters.model] if filters.model else sorted(self.store.models)
        decisions: list[pb.Decision] | None = None
        if self.store.enabled and self.store.up:
            try:
                decisions = await self.store.recent_events(models, 4 * limit)
            except StoreUnavailable:
                decisions = None
        if decisions is None:
            decisions = list(reversed(self.recent.decisions))
        rows = [
            d
            for d in decisions
            if d.kind == pb.DECISION_KIND_FIRED
            and filters.keep(d.model_name, d.probe, SEVERITY_NAMES.get(d.severity, ""))
        ]
        return rows[:limit]

    async def _index(self, request: web.Request) -> web.Response:
        filters = Filters(request.query)
        incidents = [
            {
                "fingerprint": fp,
                "alertname": incident.labels.get("alertname", ""),
                "probe": incident.labels.get("probe", ""),
                "severity": incident.labels.get("severity", ""),
                "model_name": incident.model_name,
                "since": _time(incident.starts_at),
                "requests": len(incident.requests),
                "first_request": incident.first_request,
                "url": request_page(incident.first_request, incident.model_name, incident.labels.get("probe", "")),
            }
            for fp, incident in sorted(self.incidents.active.items(), key=lambda item: -item[1].starts_at)
            if filters.keep(incident.model_name, incident.labels.get("probe", ""), incident.labels.get("severity", ""))
        ]
        flagged = [decision_row(d) for d in await self._flagged(filters)]
        infos = self.scorer.probe_infos()
        data = {
            "filters": filters.as_dict(),
            "incidents": incidents,
            "flagged": flagged,
            "models": sorted(self.scorer.models),
            "probes": sorted({info.name for info in infos}),
            "redis": "up" if self.store.up else ("down" if self.store.enabled else "not configured"),
        }
        if wants_json(request):
            return web.json_response(data)
        body = self.templates.get_template("index.html").render(**data, severities=list(SEVERITIES))
        return web.Response(text=body, content_type="text/html")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """New FIRED decisions as server-sent events (``data:`` one JSON row each)."""
        if self._closing:
            return self._error(request, 503, "Shutting down", "the sidecar is stopping; reconnect to its successor")
        filters = Filters(request.query)
        subscriber = self.watch.subscribe(
            pb.WatchAlertsRequest(
                probes=[filters.probe] if filters.probe else [],
                min_severity=SEVERITIES.get(filters.severity, pb.SEVERITY_UNSPECIFIED),
                model_name=filters.model,
            )
        )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._streams.add(subscriber)
        await response.prepare(request)
        try:
            await response.write(b": saemon decisions\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(subscriber.queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if item is CLOSED:
                    break
                if item.kind != pb.DECISION_KIND_FIRED:
                    continue
                await response.write(f"data: {json.dumps(decision_row(item))}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(subscriber)
            self.watch.unsubscribe(subscriber)
        return response

    def close(self) -> None:
        """The listener is stopping: end the event streams (a browser would keep them open,
        and the listener waits for its handlers) and refuse new ones."""
        self._closing = True
        for subscriber in list(self._streams):
            close(subscriber)

    # -- one request -------------------------------------------------------------------------

    async def _request(self, request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        model = request.query.get("model", "")
        found = await self.find(request_id, model)
        if found is None and self.store.enabled and not self.store.up:
            return self._error(
                request,
                503,
                "Audit store unreachable",
                f"request {request_id!r} is not in this sidecar's memory and Redis is unreachable "
                f"({self.store.last_error or 'down'}); the page will be back with Redis (saemon_redis_up).",
            )
        if found is None:
            return self._error(
                request,
                404,
                "No such request",
                f"no request {request_id!r}{f' of model {model!r}' if model else ''}: never seen by this "
                "sidecar, or its report expired (redis.report_ttl_seconds; sidecar.finished_retention_seconds "
                "without Redis).",
            )
        view = request_view(*found, self._pack_contexts, request.query.get("probe", ""))
        if wants_json(request):
            return web.json_response(view)
        body = self.templates.get_template("request.html").render(view=view)
        return web.Response(text=body, content_type="text/html")

    async def find(
        self, request_id: str, model: str = ""
    ) -> tuple[pb.RequestReport, dict[str, Any] | None, list[str] | None] | None:
        """The request's report, trace and token text: live state, then memory, then the
        audit store."""
        await self.pipeline.drain()
        state = self.scorer.table.get(request_id)
        models = [model] if model else sorted(self.store.models)
        if state is not None:
            held = state.to_proto()
            if not model or held.model_name == model:
                return held, state.trace_document(), state.pieces
        if not self.store.enabled or not self.store.up:
            return None
        try:
            report = await self.store.get_report(request_id, models)
            if report is None:
                return None
            trace, pieces = await self.store.get_trace(request_id, [report.model_name])
        except StoreUnavailable:
            return None
        return report, trace, pieces

    def _pack_contexts(self, pack: str) -> dict[str, Any]:
        """``<pack>.contexts.json`` (latent -> contexts), re-read when the file changes."""
        ui = self.settings.sidecar.ui
        directory = ui.contexts_dir or self.settings.sidecar.probes_dir
        if directory is None:
            return {}
        path = Path(directory) / f"{pack}.contexts.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return {}
        cached = self._contexts.get(pack)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            contexts = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("cannot read the latent contexts %s (%s); the request pages go on without them", path, exc)
            contexts = {}
        self._contexts[pack] = (mtime, contexts)
        return contexts


# -- the request page's content (pure) ------------------------------------------------------


def request_view(
    report: pb.RequestReport,
    trace: dict[str, Any] | None,
    pieces: list[str] | None,
    contexts_of: Callable[[str], dict[str, Any]],
    selected: str = "",
) -> dict[str, Any]:
    """Everything the request page shows, as JSON-ready data (the page's JSON twin).
    ``pieces``: the tokens as text, when stored; ``selected``: the probe whose values colour
    the tokens first (default: the first that fired, else the first)."""
    parts = trace.get("parts", []) if trace else []
    decisions = [decision_row(d) for d in report.decisions]
    fired_at: dict[str, list[int]] = {}
    probes: list[dict[str, Any]] = []
    tokens: dict[int, dict[str, Any]] = {}
    for part in parts:
        contexts = contexts_of(part["pack"])
        by_position = part_tokens(part)
        for index, probe in enumerate(part["probes"]):
            name = probe["name"]
            fired_at[name] = probe["fired_at"]
            series = [
                (first + count - 1, scores[index])
                for first, count, scores in zip(
                    part["steps"]["first"], part["steps"]["count"], part["steps"]["score"], strict=True
                )
            ]
            features = [  # copies: the trace may be a request's kept document
                {**feature, "contexts": contexts.get(feature["feature"], {}).get("contexts", [])[:CONTEXTS_SHOWN]}
                for feature in probe["features"][:TOP_FEATURES]
            ]
            probes.append(
                {
                    "name": name,
                    "concept": probe["concept"],
                    "pack": f"{part['pack']}@{part['pack_version']}",
                    "scope": part["scope"],
                    "layers": probe["layers"],
                    "aggregation": probe["aggregation"],
                    "decide": probe["decide"],
                    "threshold": probe["threshold"],
                    "fired_at": probe["fired_at"],
                    "features": features,
                    "chart": chart(series, probe["threshold"], probe["fired_at"]),
                    "dropped": part["dropped"],
                }
            )
            for position, (values, exact) in by_position.items():
                token = tokens.setdefault(position, {"position": position, "values": {}, "exact": True})
                token["values"][name] = values[index]
                token["exact"] = token["exact"] and exact
    prompt_tokens = report.prompt_tokens
    positions = set(tokens) | (set(range(len(pieces))) if pieces is not None else set())
    rows = []
    strongest = {s.probe: {hit.position for hit in s.top_tokens} for s in report.scores}
    for position in sorted(positions):
        token = tokens.get(position, {"position": position, "values": {}, "exact": True})
        token["scope"] = "prompt" if position < prompt_tokens else "response"
        token["text"] = pieces[position] if pieces is not None and position < len(pieces) else None
        token["fired"] = sorted(name for name, where in fired_at.items() if position in where)
        token["strongest"] = sorted(name for name, where in strongest.items() if position in where)
        rows.append(token)
    for probe in probes:
        probe["colours"] = colours([t["values"].get(probe["name"]) for t in rows], probe["threshold"])
    scores = {s.probe: s for s in report.scores}
    for probe in probes:
        score = scores.get(probe["name"])
        probe["score"] = score.score if score is not None else 0.0
        probe["fired"] = bool(score.fired) if score is not None else False
        probe["firing"] = bool(score.firing) if score is not None else False
    names = [probe["name"] for probe in probes]
    if selected not in names:
        selected = next((probe["name"] for probe in probes if probe["fired"]), names[0] if names else "")
    return {
        "selected": names.index(selected) if selected in names else 0,
        "request_id": report.request_id,
        "model_name": report.model_name,
        "finished": report.finished,
        "finish_reason": _label(pb.FinishReason, report.finish_reason, "FINISH_REASON_"),
        "prompt_tokens": report.prompt_tokens,
        "response_tokens": report.response_tokens,
        "coverage": report.coverage,
        "first_seen": _time(report.first_seen_unix_nanos),
        "last_seen": _time(report.last_seen_unix_nanos),
        "text_stored": pieces is not None,
        "traced": bool(parts),
        "probes": probes,
        "tokens": rows,
        "decisions": decisions,
        "report": json_format.MessageToDict(report),
    }


def part_tokens(part: dict[str, Any]) -> dict[int, tuple[list[float], bool]]:
    """Position -> (each probe's token value, exact?) from one trace part: decode steps and
    the plugin's exact rows are exact; without exact rows, a prefill chunk's tokens share
    the chunk's mean (its positions from the first on: the chunk's special tokens, which
    are not scored, are not known here, so this is marked approximate)."""
    exact = part["exact"]
    have_exact = bool(exact["positions"])
    result: dict[int, tuple[list[float], bool]] = {}
    other = part.get("other", {"first": [], "count": [], "value": []})
    for steps in (part["steps"], other):
        for first, count, values in zip(steps["first"], steps["count"], steps["value"], strict=True):
            if count > 1 and have_exact:
                continue  # the plugin sent this request's rows one by one
            for position in range(first, first + count):
                result[position] = (values, count == 1)
    for position, values in zip(exact["positions"], exact["value"], strict=True):
        result[position] = (values, True)
    return result


def colours(values: Iterable[float | None], threshold: float) -> list[str]:
    """A background per token: red above the threshold, blue below, by distance to it."""
    values = list(values)
    known = [abs(v - threshold) for v in values if v is not None]
    scale = max(known) if known and max(known) > 0 else 1.0
    result = []
    for value in values:
        if value is None:
            result.append("transparent")
            continue
        strength = min(1.0, abs(value - threshold) / scale)
        if value >= threshold:
            result.append(f"rgba(220, 38, 38, {0.25 + 0.75 * strength:.3f})")
        else:
            result.append(f"rgba(37, 99, 235, {0.6 * strength:.3f})")
    return result


CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 160, 28


def chart(series: list[tuple[int, float]], threshold: float, fired_at: list[int]) -> dict[str, Any]:
    """A running-score line chart as SVG coordinates: the line, the threshold, the firing points."""
    if not series:
        return {"points": "", "threshold_y": None, "fired": [], "x_range": [0, 0], "y_range": [0.0, 0.0]}
    xs = [x for x, _ in series]
    ys = [y for _, y in series]
    lo_x, hi_x = min(xs), max(max(xs), min(xs) + 1)
    lo_y, hi_y = min(min(ys), threshold), max(max(ys), threshold)
    if hi_y - lo_y < 1e-9:
        lo_y, hi_y = lo_y - 1.0, hi_y + 1.0
    span_y = (hi_y - lo_y) * 1.1
    lo_y -= (span_y - (hi_y - lo_y)) / 2

    def sx(x: float) -> float:
        return CHART_PAD + (x - lo_x) / (hi_x - lo_x) * (CHART_WIDTH - 2 * CHART_PAD)

    def sy(y: float) -> float:
        return CHART_HEIGHT - CHART_PAD - (y - lo_y) / span_y * (CHART_HEIGHT - 2 * CHART_PAD)

    by_x = dict(series)
    fired = []
    for position in fired_at:
        # the running score where the probe fired: the step that ended at (or last before) it
        before = [x for x in xs if x <= position]
        at = max(before) if before else xs[0]
        fired.append({"position": position, "x": round(sx(at), 1), "y": round(sy(by_x[at]), 1)})
    return {
        "points": " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series),
        "threshold_y": round(sy(threshold), 1),
        "fired": fired,
        "x_range": [lo_x, hi_x],
        "y_range": [round(lo_y, 4), round(lo_y + span_y, 4)],
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "pad": CHART_PAD,
    }
