"""The stateful GMS Open Media model: create, get, update, stop, answered as GMS does.
Pure (no aiohttp, no I/O); the clock and the id maker are injectable so tests are deterministic.
It can also *learn* from recorded traffic (`observe`) so a replay's fallback agrees with what the
cassette has shown. What it does where GMS is undocumented is marked [ours] in the README.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from omproxy import gms
from omproxy.formcodec import FORM_TYPE, media_type_of, split_key
from omproxy.model import Request, Response

CATCH_ALL = "openmedia"
DEFAULT_SECTION: dict[str, Any] = {
    "interaction_type": "Inbound",
    "interaction_subtype": "InboundNew",
    "media_type": "workitem",
    "allow_overwrite": False,
    "queue": "Open Media Inbound Queue",
}
_ID_ALPHABET = string.digits + string.ascii_uppercase


def random_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def utc_now() -> datetime:
    return datetime.now(UTC)


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


@dataclass
class Interaction:
    id: str
    service: str
    properties: dict[str, Any]  # every field of interactionProperties but the user data
    user_data: dict[str, str] = field(default_factory=dict)

    def as_properties(self) -> dict[str, Any]:
        props = dict(self.properties)
        props["interactionId"] = self.id
        props["interactionUserData"] = [
            {"key": k, "type": "str", "value": v} for k, v in sorted(self.user_data.items())
        ]
        # The reference's field order, whatever was learned or generated first.
        return {k: props[k] for k in _PROPERTY_ORDER if k in props} | {
            k: v for k, v in props.items() if k not in _PROPERTY_ORDER}


_PROPERTY_ORDER = (
    "interactionType", "interactionId", "interactionReceivedAt", "interactionIsHeld",
    "interactionSubmittedBy", "interactionMediatype", "interactionTenantId", "interactionQueue",
    "interactionSubmitSeq", "interactionMovedToQueueAt", "interactionState", "interactionSubmittedAt",
    "interactionPlacedInQueueAt", "interactionUserData", "interactionSubtype", "interactionIsLocked",
    "interactionIsOnline", "interactionPlaceInQueueSeq",
)


class Simulator:
    """One GMS's worth of open media interactions. `handle` answers a request; `observe` learns
    from a recorded request/response pair without answering."""

    def __init__(
        self,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = random_id,
        tenant_id: int = 1,
        submitted_by: str = "GMS-DC-API:omproxy:1",
    ) -> None:
        self.sections = {CATCH_ALL: DEFAULT_SECTION} if sections is None else dict(sections)
        self._clock = clock
        self._new_id = new_id
        self._tenant_id = tenant_id
        self._submitted_by = submitted_by
        self.reset()

    def reset(self) -> None:
        self.interactions: dict[str, Interaction] = {}
        self._seq = 1_000_000

    # ---- configuration ----------------------------------------------------------------------
    def section(self, service: str) -> dict[str, Any] | None:
        """The options of a service: its own section over the catch-all, over the defaults [ours]."""
        own = self.sections.get(f"{CATCH_ALL}.{service}")
        base = self.sections.get(CATCH_ALL)
        if own is None and base is None:
            return None
        return {**DEFAULT_SECTION, **(base or {}), **(own or {})}

    # ---- answering ----------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        op = req.operation
        if req.method != "POST":
            body = gms.failure(gms.UNKNOWN_OPERATION, f"{req.method} is not allowed; Open Media operations are POST")
            return Response.json(405, body, "simulator", Allow="POST")
        if op is None:
            return self._answer(404, gms.failure(gms.UNKNOWN_OPERATION,
                                                  f"no Open Media operation at {req.path}; expected "
                                                  f"{gms.BASE}{{service}}[/{{id}}/get|update|stop]"))
        section = self.section(op.service)
        if section is None:
            return self._answer(404, gms.failure(gms.UNKNOWN_SERVICE,
                                                  f"Open Media service '{op.service}' is not configured "
                                                  f"(no section openmedia.{op.service} and no openmedia catch-all)"))
        problem = _body_problem(req)
        if problem:
            return self._answer(200, gms.failure(gms.NOT_FORM, problem))
        operations = {"create": self._create, "get": self._get, "update": self._update, "stop": self._stop}
        return self._answer(200, operations[op.kind](req, op, section))

    @staticmethod
    def _answer(status: int, body: bytes) -> Response:
        return Response.json(status, body, "simulator")

    def _create(self, req: Request, op: gms.Operation, section: dict[str, Any]) -> bytes:
        interaction_id = self._new_id()
        while interaction_id in self.interactions:
            interaction_id = self._new_id()
        self._make(interaction_id, op.service, section, req.form.fields)
        return gms.reply(0, interactionId=interaction_id)

    def _make(self, interaction_id: str, service: str, section: dict[str, Any],
              fields: tuple[tuple[str, str], ...]) -> Interaction:
        form = dict(fields)
        overwrite = _truthy(section.get("allow_overwrite"))

        def pick(param: str, option: str) -> str:
            value = form.get(param) if overwrite else None
            return value if value else str(section.get(option, ""))

        now = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._seq += 2
        props = {
            "interactionType": pick("interactionType", "interaction_type"),
            "interactionReceivedAt": now,
            "interactionIsHeld": False,
            "interactionSubmittedBy": self._submitted_by,
            "interactionMediatype": pick("mediaType", "media_type"),
            "interactionTenantId": self._tenant_id,
            "interactionQueue": str(section.get("queue", "")),
            "interactionSubmitSeq": str(self._seq - 1),
            "interactionMovedToQueueAt": now,
            "interactionState": "Queued",
            "interactionSubmittedAt": now,
            "interactionPlacedInQueueAt": now,
            "interactionSubtype": pick("interactionSubType", "interaction_subtype"),
            "interactionIsLocked": False,
            "interactionIsOnline": False,
            "interactionPlaceInQueueSeq": str(self._seq),
        }
        user_data = {}
        for key, value in fields:
            parts = split_key(key)
            if parts and parts[0] == "userData":
                user_data[parts[1]] = value
        if form.get("externalId"):
            user_data["ExternalId"] = form["externalId"]
        interaction = Interaction(interaction_id, service, props, user_data)
        self.interactions[interaction_id] = interaction
        return interaction

    def _find(self, req: Request, op: gms.Operation) -> Interaction | None:
        if op.kind == "get" and (req.form.get("searchByExternalId") or "").lower() == "true":
            matches = [i for i in self.interactions.values() if i.user_data.get("ExternalId") == op.id]
            return matches[-1] if matches else None
        return self.interactions.get(op.id or "")

    def _get(self, req: Request, op: gms.Operation, section: dict[str, Any]) -> bytes:
        flag = req.form.get("searchByExternalId")
        if flag is not None and flag.lower() not in ("true", "false"):
            return gms.failure(gms.BAD_BOOLEAN, f"searchByExternalId must be true or false, not '{flag}'")
        found = self._find(req, op)
        if found is None:
            return gms.not_found("get", op.id or "")
        return gms.reply(0, interactionProperties=found.as_properties())

    def _update(self, req: Request, op: gms.Operation, section: dict[str, Any]) -> bytes:
        changes = [(split_key(k), v) for k, v in req.form.fields]
        changes = [(p, v) for p, v in changes if p and p[0] in ("change", "delete")]
        if not changes:
            return gms.failure(gms.EMPTY_UPDATE, "You must provide at least one key to change or delete "
                                                 "(change[key]=value or delete[key]=)")
        found = self._find(req, op)
        if found is None:
            return gms.not_found("update", op.id or "")
        _apply_update(found, req)
        return gms.reply(0)

    def _stop(self, req: Request, op: gms.Operation, section: dict[str, Any]) -> bytes:
        found = self._find(req, op)
        if found is None:
            return gms.not_found("stop", op.id or "")
        del self.interactions[found.id]
        return gms.reply(0)

    # ---- learning from a recording ----------------------------------------------------------
    def observe(self, req: Request, resp: Response) -> None:
        """Apply a recorded request/response pair to the state, as if this simulator had answered it."""
        op, reply = req.operation, resp.reply
        if op is None or reply is None:
            return
        ok = reply.get("statusCode") == 0
        if op.kind == "create" and ok and isinstance(reply.get("interactionId"), str):
            section = self.section(op.service) or dict(DEFAULT_SECTION)
            self._make(reply["interactionId"], op.service, section, req.form.fields)
        elif op.kind == "get" and ok and isinstance(reply.get("interactionProperties"), dict):
            self._learn(op.service, reply["interactionProperties"])
        elif op.kind in ("get", "update", "stop") and _is_not_found(reply):
            if op.kind != "get" or req.interaction_id:
                self.interactions.pop(op.id or "", None)
        elif op.kind == "update" and ok and op.id in self.interactions:
            _apply_update(self.interactions[op.id], req)
        elif op.kind == "stop" and ok:
            found = self._find(req, op)
            if found:
                del self.interactions[found.id]

    def _learn(self, service: str, props: dict[str, Any]) -> None:
        interaction_id = props.get("interactionId")
        if not isinstance(interaction_id, str):
            return
        found = self.interactions.get(interaction_id)
        if found is None:
            found = self.interactions[interaction_id] = Interaction(interaction_id, service, {})
        found.properties.update({k: v for k, v in props.items() if k not in ("interactionId", "interactionUserData")})
        user_data = props.get("interactionUserData")
        if isinstance(user_data, list):
            found.user_data = {str(e.get("key")): str(e.get("value")) for e in user_data if isinstance(e, dict)}


def _is_not_found(reply: dict[str, Any]) -> bool:
    errors = reply.get("errors")
    return reply.get("statusCode") == 2 and isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("code") == gms.NOT_FOUND for e in errors)


def _apply_update(interaction: Interaction, req: Request) -> None:
    for key, value in req.form.fields:
        parts = split_key(key)
        if parts and parts[0] == "change":
            interaction.user_data[parts[1]] = value
        elif parts and parts[0] == "delete":
            interaction.user_data.pop(parts[1], None)


def _body_problem(req: Request) -> str | None:
    """Why GMS could not read this body as a form, or None. An empty body needs no Content-Type."""
    if not req.body:
        return None
    media = media_type_of(req.headers.get("Content-Type"))
    if media != FORM_TYPE:
        return f"Content-Type must be {FORM_TYPE}, not '{media or 'none'}'"
    for finding in req.form.findings:
        if finding.kind == "not-form":
            return finding.message
    return None
