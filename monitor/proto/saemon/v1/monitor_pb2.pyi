from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_SCOPE_UNSPECIFIED: _ClassVar[TokenScope]
    TOKEN_SCOPE_PROMPT: _ClassVar[TokenScope]
    TOKEN_SCOPE_RESPONSE: _ClassVar[TokenScope]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]

class UnscoredReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSCORED_REASON_UNSPECIFIED: _ClassVar[UnscoredReason]
    UNSCORED_REASON_NOT_SEEN: _ClassVar[UnscoredReason]
    UNSCORED_REASON_RESET: _ClassVar[UnscoredReason]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_ALERT: _ClassVar[Action]
    ACTION_RECORD: _ClassVar[Action]
    ACTION_ABORT: _ClassVar[Action]

class DecisionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_KIND_UNSPECIFIED: _ClassVar[DecisionKind]
    DECISION_KIND_FIRED: _ClassVar[DecisionKind]
    DECISION_KIND_RESOLVED: _ClassVar[DecisionKind]
    DECISION_KIND_UNJUDGED: _ClassVar[DecisionKind]
TOKEN_SCOPE_UNSPECIFIED: TokenScope
TOKEN_SCOPE_PROMPT: TokenScope
TOKEN_SCOPE_RESPONSE: TokenScope
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
FINISH_REASON_ERROR: FinishReason
UNSCORED_REASON_UNSPECIFIED: UnscoredReason
UNSCORED_REASON_NOT_SEEN: UnscoredReason
UNSCORED_REASON_RESET: UnscoredReason
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity
ACTION_UNSPECIFIED: Action
ACTION_ALERT: Action
ACTION_RECORD: Action
ACTION_ABORT: Action
DECISION_KIND_UNSPECIFIED: DecisionKind
DECISION_KIND_FIRED: DecisionKind
DECISION_KIND_RESOLVED: DecisionKind
DECISION_KIND_UNJUDGED: DecisionKind

class IngestRequest(_message.Message):
    __slots__ = ("batches", "client_dropped")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_DROPPED_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[StepBatch]
    client_dropped: int
    def __init__(self, batches: _Optional[_Iterable[_Union[StepBatch, _Mapping]]] = ..., client_dropped: _Optional[int] = ...) -> None: ...

class StepBatch(_message.Message):
    __slots__ = ("model_name", "pack", "pack_version", "step", "produced_unix_nanos", "requests", "ends", "columns", "unscored", "token_scores", "policies")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    PACK_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    UNSCORED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SCORES_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    pack: str
    pack_version: str
    step: int
    produced_unix_nanos: int
    requests: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    ends: _containers.RepeatedCompositeFieldContainer[RequestEnd]
    columns: SummaryColumns
    unscored: _containers.RepeatedCompositeFieldContainer[UnscoredTokens]
    token_scores: _containers.RepeatedCompositeFieldContainer[TokenScores]
    policies: _containers.RepeatedCompositeFieldContainer[RequestPolicy]
    def __init__(self, model_name: _Optional[str] = ..., pack: _Optional[str] = ..., pack_version: _Optional[str] = ..., step: _Optional[int] = ..., produced_unix_nanos: _Optional[int] = ..., requests: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ..., ends: _Optional[_Iterable[_Union[RequestEnd, _Mapping]]] = ..., columns: _Optional[_Union[SummaryColumns, _Mapping]] = ..., unscored: _Optional[_Iterable[_Union[UnscoredTokens, _Mapping]]] = ..., token_scores: _Optional[_Iterable[_Union[TokenScores, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[RequestPolicy, _Mapping]]] = ...) -> None: ...

class RequestPolicy(_message.Message):
    __slots__ = ("request_id", "policy")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    policy: str
    def __init__(self, request_id: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class TokenScores(_message.Message):
    __slots__ = ("request_id", "scope", "positions", "values")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scope: TokenScope
    positions: bytes
    values: bytes
    def __init__(self, request_id: _Optional[str] = ..., scope: _Optional[_Union[TokenScope, str]] = ..., positions: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class UnscoredTokens(_message.Message):
    __slots__ = ("request_id", "reason", "count")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reason: UnscoredReason
    count: int
    def __init__(self, request_id: _Optional[str] = ..., reason: _Optional[_Union[UnscoredReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class SummaryColumns(_message.Message):
    __slots__ = ("request_id", "scope", "first_position", "num_tokens", "max", "argmax_position", "sum", "count_above")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_POSITION_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_ABOVE_FIELD_NUMBER: _ClassVar[int]
    request_id: _containers.RepeatedScalarFieldContainer[str]
    scope: _containers.RepeatedScalarFieldContainer[TokenScope]
    first_position: _containers.RepeatedScalarFieldContainer[int]
    num_tokens: _containers.RepeatedScalarFieldContainer[int]
    max: bytes
    argmax_position: bytes
    sum: bytes
    count_above: bytes
    def __init__(self, request_id: _Optional[_Iterable[str]] = ..., scope: _Optional[_Iterable[_Union[TokenScope, str]]] = ..., first_position: _Optional[_Iterable[int]] = ..., num_tokens: _Optional[_Iterable[int]] = ..., max: _Optional[bytes] = ..., argmax_position: _Optional[bytes] = ..., sum: _Optional[bytes] = ..., count_above: _Optional[bytes] = ...) -> None: ...

class RequestSummary(_message.Message):
    __slots__ = ("request_id", "scope", "first_position", "num_tokens", "max", "argmax_position", "sum", "count_above")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_POSITION_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_ABOVE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scope: TokenScope
    first_position: int
    num_tokens: int
    max: _containers.RepeatedScalarFieldContainer[float]
    argmax_position: _containers.RepeatedScalarFieldContainer[int]
    sum: _containers.RepeatedScalarFieldContainer[float]
    count_above: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., scope: _Optional[_Union[TokenScope, str]] = ..., first_position: _Optional[int] = ..., num_tokens: _Optional[int] = ..., max: _Optional[_Iterable[float]] = ..., argmax_position: _Optional[_Iterable[int]] = ..., sum: _Optional[_Iterable[float]] = ..., count_above: _Optional[_Iterable[int]] = ...) -> None: ...

class RequestEnd(_message.Message):
    __slots__ = ("request_id", "finish_reason", "prompt_tokens", "response_tokens", "token_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    response_tokens: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[str] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., response_tokens: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("batches_accepted", "batches_rejected", "rejected_by_reason", "first_error", "summaries_rejected", "summaries_rejected_by_reason")
    class RejectedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class SummariesRejectedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BATCHES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_REJECTED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    batches_accepted: int
    batches_rejected: int
    rejected_by_reason: _containers.ScalarMap[str, int]
    first_error: str
    summaries_rejected: int
    summaries_rejected_by_reason: _containers.ScalarMap[str, int]
    def __init__(self, batches_accepted: _Optional[int] = ..., batches_rejected: _Optional[int] = ..., rejected_by_reason: _Optional[_Mapping[str, int]] = ..., first_error: _Optional[str] = ..., summaries_rejected: _Optional[int] = ..., summaries_rejected_by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ProbeScore(_message.Message):
    __slots__ = ("probe", "scope", "score", "threshold", "tokens", "firing", "fired", "peak_position", "top_tokens")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FIRING_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    PEAK_POSITION_FIELD_NUMBER: _ClassVar[int]
    TOP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    scope: TokenScope
    score: float
    threshold: float
    tokens: int
    firing: bool
    fired: bool
    peak_position: int
    top_tokens: _containers.RepeatedCompositeFieldContainer[TokenHit]
    def __init__(self, probe: _Optional[str] = ..., scope: _Optional[_Union[TokenScope, str]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., tokens: _Optional[int] = ..., firing: _Optional[bool] = ..., fired: _Optional[bool] = ..., peak_position: _Optional[int] = ..., top_tokens: _Optional[_Iterable[_Union[TokenHit, _Mapping]]] = ...) -> None: ...

class TokenHit(_message.Message):
    __slots__ = ("position", "value", "feature", "text")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    position: int
    value: float
    feature: str
    text: str
    def __init__(self, position: _Optional[int] = ..., value: _Optional[float] = ..., feature: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "layer", "score", "peak_position", "peak_value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PEAK_POSITION_FIELD_NUMBER: _ClassVar[int]
    PEAK_VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    layer: int
    score: float
    peak_position: int
    peak_value: float
    def __init__(self, feature: _Optional[str] = ..., layer: _Optional[int] = ..., score: _Optional[float] = ..., peak_position: _Optional[int] = ..., peak_value: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("id", "kind", "request_id", "model_name", "probe", "concept", "pack", "pack_version", "scope", "severity", "action", "score", "threshold", "tokens", "features", "decided_unix_nanos", "produced_unix_nanos", "event_id", "position", "policy")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    PACK_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DECIDED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: DecisionKind
    request_id: str
    model_name: str
    probe: str
    concept: str
    pack: str
    pack_version: str
    scope: TokenScope
    severity: Severity
    action: Action
    score: float
    threshold: float
    tokens: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    decided_unix_nanos: int
    produced_unix_nanos: int
    event_id: str
    position: int
    policy: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[DecisionKind, str]] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., probe: _Optional[str] = ..., concept: _Optional[str] = ..., pack: _Optional[str] = ..., pack_version: _Optional[str] = ..., scope: _Optional[_Union[TokenScope, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., action: _Optional[_Union[Action, str]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., tokens: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., decided_unix_nanos: _Optional[int] = ..., produced_unix_nanos: _Optional[int] = ..., event_id: _Optional[str] = ..., position: _Optional[int] = ..., policy: _Optional[str] = ...) -> None: ...

class GetRequestReportRequest(_message.Message):
    __slots__ = ("request_id", "model_name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class GetRequestReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: RequestReport
    def __init__(self, report: _Optional[_Union[RequestReport, _Mapping]] = ...) -> None: ...

class RequestReport(_message.Message):
    __slots__ = ("request_id", "model_name", "finished", "finish_reason", "prompt_tokens", "response_tokens", "scores", "decisions", "first_seen_unix_nanos", "last_seen_unix_nanos", "unscored", "coverage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_NANOS_FIELD_NUMBER: _ClassVar[int]
    UNSCORED_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model_name: str
    finished: bool
    finish_reason: FinishReason
    prompt_tokens: int
    response_tokens: int
    scores: _containers.RepeatedCompositeFieldContainer[ProbeScore]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    first_seen_unix_nanos: int
    last_seen_unix_nanos: int
    unscored: _containers.RepeatedCompositeFieldContainer[UnscoredTokens]
    coverage: float
    def __init__(self, request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., finished: _Optional[bool] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., response_tokens: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[ProbeScore, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., first_seen_unix_nanos: _Optional[int] = ..., last_seen_unix_nanos: _Optional[int] = ..., unscored: _Optional[_Iterable[_Union[UnscoredTokens, _Mapping]]] = ..., coverage: _Optional[float] = ...) -> None: ...

class ListProbesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProbesResponse(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[ProbeInfo]
    def __init__(self, probes: _Optional[_Iterable[_Union[ProbeInfo, _Mapping]]] = ...) -> None: ...

class ProbeInfo(_message.Message):
    __slots__ = ("name", "concept", "pack", "pack_version", "model_name", "features", "layers", "aggregation", "scope", "threshold", "target_fpr", "min_tokens", "hysteresis", "severity", "action")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    PACK_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FPR_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HYSTERESIS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    concept: str
    pack: str
    pack_version: str
    model_name: str
    features: _containers.RepeatedScalarFieldContainer[str]
    layers: _containers.RepeatedScalarFieldContainer[int]
    aggregation: str
    scope: TokenScope
    threshold: float
    target_fpr: float
    min_tokens: int
    hysteresis: float
    severity: Severity
    action: Action
    def __init__(self, name: _Optional[str] = ..., concept: _Optional[str] = ..., pack: _Optional[str] = ..., pack_version: _Optional[str] = ..., model_name: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., layers: _Optional[_Iterable[int]] = ..., aggregation: _Optional[str] = ..., scope: _Optional[_Union[TokenScope, str]] = ..., threshold: _Optional[float] = ..., target_fpr: _Optional[float] = ..., min_tokens: _Optional[int] = ..., hysteresis: _Optional[float] = ..., severity: _Optional[_Union[Severity, str]] = ..., action: _Optional[_Union[Action, str]] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("probes", "min_severity", "after_event_id", "model_name")
    PROBES_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedScalarFieldContainer[str]
    min_severity: Severity
    after_event_id: str
    model_name: str
    def __init__(self, probes: _Optional[_Iterable[str]] = ..., min_severity: _Optional[_Union[Severity, str]] = ..., after_event_id: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class WatchAlertsResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class ReloadProbesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadProbesResponse(_message.Message):
    __slots__ = ("packs", "probes")
    PACKS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    packs: _containers.RepeatedScalarFieldContainer[str]
    probes: int
    def __init__(self, packs: _Optional[_Iterable[str]] = ..., probes: _Optional[int] = ...) -> None: ...
