"""Wire types of the events feed and the webhook endpoints (msgspec Structs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from service.schemas import PageMeta, Strict

EVENT_TYPES = (
    "account.created",
    "account.updated",
    "transfer.posted",
    "transfer.pending",
    "transfer.voided",
    "transfer.expired",
)
EventType = Literal[
    "account.created",
    "account.updated",
    "transfer.posted",
    "transfer.pending",
    "transfer.voided",
    "transfer.expired",
]
EventFilter = Literal[
    "*",
    "account.created",
    "account.updated",
    "transfer.posted",
    "transfer.pending",
    "transfer.voided",
    "transfer.expired",
]
WebhookUrl = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
        description="http(s) URL of a public server; private addresses are refused",
    ),
]
Events = Annotated[
    list[EventFilter],
    Meta(
        min_length=1,
        max_length=7,
        description='event types to deliver; "*" (the default) means all',
    ),
]
WebhookDescription = Annotated[str, Meta(max_length=500)]


class Event(Struct):
    id: str
    sequence: int
    type: EventType
    created_at: datetime
    data: dict[str, Any]


class EventPageMeta(Struct):
    limit: int
    has_more: bool
    # The last sequence of this page (or `after` when it is empty): the next `after`.
    next_cursor: str


class EventPage(Struct):
    data: list[Event]
    meta: EventPageMeta


class WebhookCreate(Strict):
    url: WebhookUrl
    events: Events = msgspec.field(default_factory=lambda: ["*"])
    description: WebhookDescription | None = None


class WebhookPatch(Strict, omit_defaults=True):
    url: WebhookUrl | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    description: WebhookDescription | msgspec.UnsetType | None = msgspec.UNSET
    status: Literal["enabled", "paused"] | msgspec.UnsetType = msgspec.UNSET


PREVIOUS_SECRET_TTL = 24 * 3600
MAX_PREVIOUS_SECRET_TTL = 7 * 24 * 3600


class SecretRotation(Strict):
    previous_secret_ttl_seconds: Annotated[
        int,
        Meta(
            ge=0,
            le=MAX_PREVIOUS_SECRET_TTL,
            description="how long the replaced secret goes on signing deliveries beside"
            " the new one (0: stop at once); the body may be left out (24 hours)",
        ),
    ] = PREVIOUS_SECRET_TTL


class Circuit(Struct):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    open_until: datetime | None


class WebhookEndpoint(Struct):
    id: str
    url: str
    description: str | None
    events: list[EventFilter]
    status: Literal["enabled", "paused", "failing"]
    circuit: Circuit
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: Annotated[
        datetime | None,
        Meta(
            description="after a secret rotation: until then, deliveries are signed with"
            " the replaced secret too (a second v1 in Tally-Signature)"
        ),
    ]


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: Annotated[
        str, Meta(description="the signing secret; shown only here (and after a rotation), once")
    ]


class WebhookEnvelope(Struct):
    data: WebhookEndpoint


class WebhookCreatedEnvelope(Struct):
    data: WebhookEndpointWithSecret


class WebhookPage(Struct):
    data: list[WebhookEndpoint]
    meta: PageMeta


class Attempt(Struct):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class Delivery(Struct):
    id: str
    event_id: str
    event_type: EventType
    sequence: int
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    attempts: list[Attempt]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(Struct):
    data: list[Delivery]
    meta: PageMeta
