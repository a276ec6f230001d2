from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Classification(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASSIFICATION_UNSPECIFIED: _ClassVar[Classification]
    CLASSIFICATION_PUBLIC: _ClassVar[Classification]
    CLASSIFICATION_INTERNAL: _ClassVar[Classification]
    CLASSIFICATION_CONFIDENTIAL: _ClassVar[Classification]
    CLASSIFICATION_RESTRICTED: _ClassVar[Classification]

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_CHAT: _ClassVar[TaskType]
    TASK_TYPE_CODE_GENERATION: _ClassVar[TaskType]
    TASK_TYPE_PLANNING: _ClassVar[TaskType]
    TASK_TYPE_SUMMARIZATION: _ClassVar[TaskType]
    TASK_TYPE_EXTRACTION: _ClassVar[TaskType]
    TASK_TYPE_TOOL_USE: _ClassVar[TaskType]
    TASK_TYPE_STRUCTURED_OUTPUT: _ClassVar[TaskType]
    TASK_TYPE_TRANSLATION: _ClassVar[TaskType]
    TASK_TYPE_REASONING: _ClassVar[TaskType]

class Location(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCATION_UNSPECIFIED: _ClassVar[Location]
    LOCATION_ON_PREM: _ClassVar[Location]
    LOCATION_CLOUD: _ClassVar[Location]
CLASSIFICATION_UNSPECIFIED: Classification
CLASSIFICATION_PUBLIC: Classification
CLASSIFICATION_INTERNAL: Classification
CLASSIFICATION_CONFIDENTIAL: Classification
CLASSIFICATION_RESTRICTED: Classification
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_CHAT: TaskType
TASK_TYPE_CODE_GENERATION: TaskType
TASK_TYPE_PLANNING: TaskType
TASK_TYPE_SUMMARIZATION: TaskType
TASK_TYPE_EXTRACTION: TaskType
TASK_TYPE_TOOL_USE: TaskType
TASK_TYPE_STRUCTURED_OUTPUT: TaskType
TASK_TYPE_TRANSLATION: TaskType
TASK_TYPE_REASONING: TaskType
LOCATION_UNSPECIFIED: Location
LOCATION_ON_PREM: Location
LOCATION_CLOUD: Location

class PolicyRequest(_message.Message):
    __slots__ = ("tenant", "task_type", "classification", "declared_classification", "detectors", "complexity", "estimated_input_tokens", "max_output_tokens", "requested_model", "labels", "has_tools", "json_output", "streaming", "message_count", "airgapped", "redactable", "redacted_classification")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DECLARED_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HAS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    JSON_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    AIRGAPPED_FIELD_NUMBER: _ClassVar[int]
    REDACTABLE_FIELD_NUMBER: _ClassVar[int]
    REDACTED_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    task_type: TaskType
    classification: Classification
    declared_classification: Classification
    detectors: _containers.RepeatedScalarFieldContainer[str]
    complexity: float
    estimated_input_tokens: int
    max_output_tokens: int
    requested_model: str
    labels: _containers.ScalarMap[str, str]
    has_tools: bool
    json_output: bool
    streaming: bool
    message_count: int
    airgapped: bool
    redactable: bool
    redacted_classification: Classification
    def __init__(self, tenant: _Optional[str] = ..., task_type: _Optional[_Union[TaskType, str]] = ..., classification: _Optional[_Union[Classification, str]] = ..., declared_classification: _Optional[_Union[Classification, str]] = ..., detectors: _Optional[_Iterable[str]] = ..., complexity: _Optional[float] = ..., estimated_input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., requested_model: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., has_tools: _Optional[bool] = ..., json_output: _Optional[bool] = ..., streaming: _Optional[bool] = ..., message_count: _Optional[int] = ..., airgapped: _Optional[bool] = ..., redactable: _Optional[bool] = ..., redacted_classification: _Optional[_Union[Classification, str]] = ...) -> None: ...

class BudgetState(_message.Message):
    __slots__ = ("limited", "limit_usd", "spent_usd", "reserved_usd", "remaining_usd", "utilization", "window", "hard")
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    REMAINING_USD_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    limited: bool
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    utilization: float
    window: str
    hard: bool
    def __init__(self, limited: _Optional[bool] = ..., limit_usd: _Optional[float] = ..., spent_usd: _Optional[float] = ..., reserved_usd: _Optional[float] = ..., remaining_usd: _Optional[float] = ..., utilization: _Optional[float] = ..., window: _Optional[str] = ..., hard: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("alias", "provider", "upstream_model", "location", "clearance", "input_price_per_mtok", "output_price_per_mtok", "healthy")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    CLEARANCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    alias: str
    provider: str
    upstream_model: str
    location: Location
    clearance: Classification
    input_price_per_mtok: float
    output_price_per_mtok: float
    healthy: bool
    def __init__(self, alias: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., location: _Optional[_Union[Location, str]] = ..., clearance: _Optional[_Union[Classification, str]] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., healthy: _Optional[bool] = ...) -> None: ...

class RouteDecision(_message.Message):
    __slots__ = ("model", "fallbacks", "deny", "reason", "max_output_tokens", "rule")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    model: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    deny: bool
    reason: str
    max_output_tokens: int
    rule: str
    def __init__(self, model: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., deny: _Optional[bool] = ..., reason: _Optional[str] = ..., max_output_tokens: _Optional[int] = ..., rule: _Optional[str] = ...) -> None: ...
