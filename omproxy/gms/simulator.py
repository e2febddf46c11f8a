"""The stateful GMS Open Media model: create, get, update, stop, answered as GMS does.
Pure (no aiohttp, no I/O); the clock and the id maker are injectable so tests are deterministic.
It can also *learn* from recorded traffic (`observe`) so a replay's fallback agrees with what the
cassette has shown. What it does where GMS is undocumented is marked [ours] in the README.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from omproxy.gms import vocabulary as gms
from omproxy.gms.formcodec import split_key
from omproxy.gms.vocabulary import CATCH_ALL, DEFAULT_SECTION
from omproxy.model import Request, Response, Source
from omproxy.state import Interaction, InteractionStore
from omproxy.state.memory import MemoryInteractions

_ID_ALPHABET = string.digits + string.ascii_uppercase


def random_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def utc_now() -> datetime:
    return datetime.now(UTC)


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def as_properties(interaction: Interaction) -> dict[str, Any]:
    props = dict(interaction.properties)
    props["interactionId"] = interaction.id
    props["interactionUserData"] = [
        {"key": k, "type": "str", "value": v} for k, v in sorted(interaction.user_data.items())
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
    """GMS Open Media's behaviour: `handle` answers a request; `observe` learns from a recorded
    request/response pair without answering. It holds no interactions itself: each call works on an
    InteractionStore (one per session), `self.store` when none is given."""

    def __init__(
        self,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = random_id,
        tenant_id: int = 1,
        submitted_by: str = "GMS-DC-API:omproxy:1",
    ) -> None:
        self.sections = {CATCH_ALL: dict(DEFAULT_SECTION)} if sections is None else dict(sections)
        self._clock = clock
        self._new_id = new_id
        self._tenant_id = tenant_id
        self._submitted_by = submitted_by
        self.store: InteractionStore = MemoryInteractions()

    # ---- configuration ----------------------------------------------------------------------
    def section(self, service: str) -> dict[str, Any] | None:
        """The options of a service: its own section over the catch-all, over the defaults [ours]."""
        own = self.sections.get(f"{CATCH_ALL}.{service}")
        base = self.sections.get(CATCH_ALL)
        if own is None and base is None:
            return None
        return {**DEFAULT_SECTION, **(base or {}), **(own or {})}

    # ---- answering ----------------------------------------------------------------------------
    async def handle(self, req: Request, store: InteractionStore | None = None) -> Response:
        store = store or self.store
        op = req.operation
        if req.method != "POST":
            body = gms.failure(gms.UNKNOWN_OPERATION, f"{req.method} is not allowed; Open Media operations are POST")
            return Response.json(405, body, Source.SIMULATOR, Allow="POST")
        if op is None:
            return _answer(404, gms.failure(gms.UNKNOWN_OPERATION,
                                            f"no Open Media operation at {req.path}; expected "
                                            f"{gms.BASE}{{service}}[/{{id}}/get|update|stop]"))
        section = self.section(op.service)
        if section is None:
            return _answer(404, gms.failure(gms.UNKNOWN_SERVICE,
                                            f"Open Media service '{op.service}' is not configured "
                                            f"(no section openmedia.{op.service} and no openmedia catch-all)"))
        problem = gms.not_form(req.body, req.headers.get("Content-Type"), req.form)
        if problem:
            return _answer(200, gms.failure(gms.NOT_FORM, problem.message))
        refused = gms.empty_update(op, req.form) or gms.bad_boolean(op, req.form)
        if refused:
            code = gms.EMPTY_UPDATE if refused.kind == "empty-update" else gms.BAD_BOOLEAN
            return _answer(200, gms.failure(code, refused.message))
        if op.kind == "create":
            return _answer(200, await self._create(req, op, section, store))
        found = await _find(req, store)
        if found is None:
            return _answer(200, gms.not_found(op.kind, op.id or ""))
        if op.kind == "get":
            return _answer(200, gms.reply(0, interactionProperties=as_properties(found)))
        if op.kind == "update":
            _apply_update(found, req)
            await store.put(found)
        else:  # stop: a stopped interaction is forgotten [ours]
            await store.delete(found.id)
        return _answer(200, gms.reply(0))

    async def _create(self, req: Request, op: gms.Operation, section: dict[str, Any],
                      store: InteractionStore) -> bytes:
        interaction_id = self._new_id()
        while await store.get(interaction_id) is not None:
            interaction_id = self._new_id()
        await self._make(interaction_id, op.service, section, req.form.fields, store)
        return gms.reply(0, interactionId=interaction_id)

    async def _make(self, interaction_id: str, service: str, section: dict[str, Any],
                    fields: tuple[tuple[str, str], ...], store: InteractionStore, at: str | None = None) -> None:
        form = dict(fields)
        overwrite = _truthy(section.get("allow_overwrite"))

        def pick(param: str, option: str) -> str:
            value = form.get(param) if overwrite else None
            return value if value else str(section.get(option, ""))

        now = at or self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        seq = await store.next_seq()
        props = {
            "interactionType": pick("interactionType", "interaction_type"),
            "interactionReceivedAt": now,
            "interactionIsHeld": False,
            "interactionSubmittedBy": self._submitted_by,
            "interactionMediatype": pick("mediaType", "media_type"),
            "interactionTenantId": self._tenant_id,
            "interactionQueue": str(section.get("queue", "")),
            "interactionSubmitSeq": str(seq - 1),
            "interactionMovedToQueueAt": now,
            "interactionState": "Queued",
            "interactionSubmittedAt": now,
            "interactionPlacedInQueueAt": now,
            "interactionSubtype": pick("interactionSubType", "interaction_subtype"),
            "interactionIsLocked": False,
            "interactionIsOnline": False,
            "interactionPlaceInQueueSeq": str(seq),
        }
        user_data = {}
        for key, value in fields:
            parts = split_key(key)
            if parts and parts[0] == "userData":
                user_data[parts[1]] = value
        if form.get("externalId"):
            user_data["ExternalId"] = form["externalId"]
        await store.put(Interaction(interaction_id, service, props, user_data))

    # ---- learning from a recording ----------------------------------------------------------
    async def observe(self, req: Request, resp: Response, store: InteractionStore | None = None,
                      recorded_at: str = "") -> None:
        """Apply a recorded request/response pair to the state, as if this simulator had answered it;
        a create made then (`recorded_at`, the entry's) has that time, as its recorded gets say."""
        store = store or self.store
        op, reply = req.operation, resp.reply
        if op is None or reply is None:
            return
        ok = reply.get("statusCode") == 0
        if op.kind == "create" and ok and isinstance(reply.get("interactionId"), str):
            section = self.section(op.service) or dict(DEFAULT_SECTION)
            await self._make(reply["interactionId"], op.service, section, req.form.fields, store,
                             _second(recorded_at))
        elif op.kind == "get" and ok and isinstance(reply.get("interactionProperties"), dict):
            await _learn(op.service, reply["interactionProperties"], store)
        elif op.kind in ("get", "update", "stop") and gms.is_not_found(reply):
            if req.interaction_id:
                await store.delete(req.interaction_id)
        elif op.kind in ("update", "stop") and ok:
            found = await _find(req, store)
            if found is not None and op.kind == "update":
                _apply_update(found, req)
                await store.put(found)
            elif found is not None:
                await store.delete(found.id)


def _second(recorded_at: str) -> str | None:
    """An entry's `recorded_at` (2026-11-28T10:15:02.114Z) as GMS writes its times, to the second."""
    return recorded_at[:19] + "Z" if len(recorded_at) >= 19 and recorded_at[10] == "T" else None


def _answer(status: int, body: bytes) -> Response:
    return Response.json(status, body, Source.SIMULATOR)


async def _find(req: Request, store: InteractionStore) -> Interaction | None:
    target = req.target_of
    if target is None:
        return None
    return await (store.find_by_external_id(target.id) if target.external else store.get(target.id))


async def _learn(service: str, props: dict[str, Any], store: InteractionStore) -> None:
    interaction_id = props.get("interactionId")
    if not isinstance(interaction_id, str):
        return
    found = await store.get(interaction_id) or Interaction(interaction_id, service, {})
    found.properties.update({k: v for k, v in props.items() if k not in ("interactionId", "interactionUserData")})
    user_data = props.get("interactionUserData")
    if isinstance(user_data, list):
        found.user_data = {str(e.get("key")): str(e.get("value")) for e in user_data if isinstance(e, dict)}
    await store.put(found)


def _apply_update(interaction: Interaction, req: Request) -> None:
    for key, value in req.form.fields:
        parts = split_key(key)
        if parts and parts[0] == "change":
            interaction.user_data[parts[1]] = value
        elif parts and parts[0] == "delete":
            interaction.user_data.pop(parts[1], None)
