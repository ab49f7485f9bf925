"""Where decisions go once the scorer made them.

Every decision is written to the audit store (which hands it to the WatchAlerts
subscribers once it has its event id) and shown to the incident book, whose notifications
the store queues for delivery. A closed request's report goes to the store, with the
redacted text around its strongest tokens when the audit trail keeps token text, and its
per-token scores (and its tokens as redacted text) when the forensic view keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from monitor.proto.saemon.v1 import monitor_pb2 as pb
from monitor.sidecar.alerts import IncidentBook
from monitor.sidecar.metrics import SidecarMetrics
from monitor.sidecar.request_state import RequestState
from monitor.sidecar.store import AuditStore
from monitor.sidecar.token_text import TokenTexts

log = logging.getLogger(__name__)


class Outlets:
    def __init__(
        self,
        store: AuditStore,
        incidents: IncidentBook,
        token_texts: TokenTexts | None,
        metrics: SidecarMetrics,
    ) -> None:
        self.store = store
        self.incidents = incidents
        self.token_texts = token_texts
        self.metrics = metrics

    def publish(self, decisions: list[pb.Decision], closed: list[RequestState]) -> None:
        """Record decisions, open incidents, close finished requests' reports and incidents."""
        store, incidents = self.store, self.incidents
        for decision in decisions:
            store.append_event(decision)
            notification = incidents.on_decision(decision)
            if notification is not None:
                store.append_alert(notification)
        for state in closed:
            store.append_report(state.to_proto())
            if state.token_ids is not None:
                self._keep_token_text(state)
            trace = state.stored_trace = state.trace_document()
            if trace is not None:
                store.append_trace(state.model_name, state.request_id, trace)
                if state.pieces is not None:
                    store.append_pieces(state.model_name, state.request_id, state.pieces)
            for notification in incidents.on_request_end(state.request_id):
                store.append_alert(notification)
        self.metrics.incidents_active.set(len(incidents.active))

    def expire_restored(self, live: Callable[[str], bool], idle_seconds: float) -> None:
        """Resolve restored incidents whose requests ended while the sidecar was down."""
        for notification in self.incidents.expire_restored(live, idle_seconds):
            self.store.append_alert(notification)
        self.metrics.incidents_active.set(len(self.incidents.active))

    def resend_due(self) -> None:
        """Queue the re-sends of firing incidents that are due."""
        for notification in self.incidents.due():
            self.store.append_alert(notification)

    def _keep_token_text(self, state: RequestState) -> None:
        """Text around the tokens that fired, redacted, under its own TTL (opt-in)."""
        token_ids, state.token_ids = state.token_ids, None
        assert token_ids is not None  # only called for a state that has them
        if self.token_texts is None:
            return
        try:
            state.texts = self.token_texts.annotate(state.to_proto(), token_ids)
            if state.traces:  # kept for the forensic view: the whole conversation as tokens
                state.pieces = self.token_texts.pieces(token_ids)
        except Exception:  # a tokenizer or redactor bug must not stop scoring
            self.metrics.token_text_errors.inc()
            log.exception("could not make the token text of request %s; not stored", state.request_id)
            return
        self.store.append_token_text(state.model_name, state.request_id, state.texts)
