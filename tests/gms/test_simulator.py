"""The simulator as a pure model: the reference page's whole story, without a socket."""

from __future__ import annotations

import json
import re

import pytest

from omproxy.gms.simulator import Simulator
from omproxy.model import Request, headers_of
from tests.support import BASE, FORM


async def post(sim: Simulator, path: str, body: bytes = b"", method: str = "POST", headers=FORM) -> tuple[int, dict]:
    resp = await sim.handle(Request(method, BASE + path, "", headers_of(headers), body))
    return resp.status, json.loads(resp.body)


CREATE = (b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
          b"&userData%5BKeyToDelete%5D=value+to+delete")


def user_data(reply: dict) -> dict[str, str]:
    return {e["key"]: e["value"] for e in reply["interactionProperties"]["interactionUserData"]}


async def test_reference_story_create_get_update_get_stop_get(make_simulator) -> None:
    sim = make_simulator()
    status, created = (await post(sim, "/customer-support", CREATE))
    assert (status, created) == (200, {"statusCode": 0, "interactionId": "01QG0Q2S5S50G000"})
    iid = created["interactionId"]

    _, got = (await post(sim, f"/customer-support/{iid}/get"))
    assert got["statusCode"] == 0
    assert user_data(got) == {"ExternalId": "xy932", "KeyToDelete": "value to delete",
                              "OrderNumber": "ABC123456789", "TestKey2": "Test value"}

    _, updated = (await post(sim, f"/customer-support/{iid}/update",
                      b"change%5BOrderNumber%5D=ABC123456780&change%5BNew%5D=1&delete%5BKeyToDelete%5D="))
    assert updated == {"statusCode": 0}
    _, got = (await post(sim, f"/customer-support/{iid}/get"))
    assert user_data(got) == {"ExternalId": "xy932", "New": "1", "OrderNumber": "ABC123456780",
                              "TestKey2": "Test value"}

    assert (await post(sim, f"/customer-support/{iid}/stop", b"reasonSystemName=Cancel")) == (200, {"statusCode": 0})
    assert (await post(sim, f"/customer-support/{iid}/get")) == (200, {"statusCode": 2, "errors": [
        {"code": 248, "advice": f"Specified interaction Id[{iid}] was not found"}]})
    assert (await post(sim, f"/customer-support/{iid}/update", b"change%5BA%5D=1"))[1]["errors"][0] == {
        "code": 248, "advice": f"Interaction with specified id[{iid}] was not found"}
    assert (await post(sim, f"/customer-support/{iid}/stop"))[1]["errors"][0]["code"] == 248


async def test_get_properties_have_the_references_18_fields_and_types(make_simulator) -> None:
    sim = make_simulator()
    _, created = (await post(sim, "/customer-support", CREATE))
    _, got = (await post(sim, f"/customer-support/{created['interactionId']}/get"))
    props = got["interactionProperties"]
    assert list(props) == [
        "interactionType", "interactionId", "interactionReceivedAt", "interactionIsHeld",
        "interactionSubmittedBy", "interactionMediatype", "interactionTenantId", "interactionQueue",
        "interactionSubmitSeq", "interactionMovedToQueueAt", "interactionState", "interactionSubmittedAt",
        "interactionPlacedInQueueAt", "interactionUserData", "interactionSubtype", "interactionIsLocked",
        "interactionIsOnline", "interactionPlaceInQueueSeq"]
    for flag in ("interactionIsHeld", "interactionIsLocked", "interactionIsOnline"):
        assert props[flag] is False
    assert props["interactionTenantId"] == 1
    assert isinstance(props["interactionSubmitSeq"], str) and props["interactionSubmitSeq"].isdigit()
    assert isinstance(props["interactionPlaceInQueueSeq"], str)
    assert props["interactionReceivedAt"] == "2026-11-28T10:15:02Z"
    assert props["interactionState"] == "Queued"
    assert props["interactionQueue"] == "Open Media Inbound Queue"
    keys = [e["key"] for e in props["interactionUserData"]]
    assert keys == sorted(keys)
    assert all(e["type"] == "str" for e in props["interactionUserData"])


async def test_get_by_external_id(make_simulator) -> None:
    sim = make_simulator()
    _, created = (await post(sim, "/customer-support", CREATE))
    _, got = (await post(sim, "/customer-support/xy932/get", b"searchByExternalId=true"))
    assert got["interactionProperties"]["interactionId"] == created["interactionId"]
    _, missing = (await post(sim, "/customer-support/nope/get", b"searchByExternalId=true"))
    assert missing["errors"][0] == {"code": 248, "advice": "Specified interaction Id[nope] was not found"}
    _, by_id = (await post(sim, "/customer-support/xy932/get", b"searchByExternalId=false"))
    assert by_id["statusCode"] == 2


async def test_keys_are_stored_verbatim_never_fixed(make_simulator) -> None:
    sim = make_simulator()
    _, created = (await post(sim, "/s", b"userData%5B0rderNumber%5D=A&userData%5Bmy.key+%C3%A9%5D=b"))
    _, got = (await post(sim, f"/s/{created['interactionId']}/get"))
    assert user_data(got) == {"0rderNumber": "A", "my.key é": "b"}


SECTIONS = {
    "openmedia": {"interaction_type": "Inbound", "interaction_subtype": "InboundNew", "media_type": "workitem",
                  "allow_overwrite": False, "queue": "Catch-all Queue"},
    "openmedia.customer-support": {"allow_overwrite": True, "queue": "Support Queue"},
}
OVERRIDE = b"interactionType=Outbound&interactionSubType=OutboundNew&mediaType=email"


@pytest.mark.parametrize("service,expected", [
    ("customer-support", ("Outbound", "OutboundNew", "email", "Support Queue")),
    ("billing", ("Inbound", "InboundNew", "workitem", "Catch-all Queue")),
], ids=["allow-overwrite-uses-request", "no-overwrite-ignores-request"])
async def test_type_subtype_media_overrides_only_with_allow_overwrite(make_simulator, service, expected) -> None:
    sim = make_simulator(SECTIONS)
    _, created = (await post(sim, f"/{service}", OVERRIDE))
    props = (await post(sim, f"/{service}/{created['interactionId']}/get"))[1]["interactionProperties"]
    assert (props["interactionType"], props["interactionSubtype"], props["interactionMediatype"],
            props["interactionQueue"]) == expected


async def test_unknown_service_without_catch_all_is_404(make_simulator) -> None:
    sim = make_simulator({"openmedia.known": {"queue": "Q"}})
    status, body = (await post(sim, "/unknown", b"externalId=1"))
    assert status == 404 and body["statusCode"] == 2 and "unknown" in body["errors"][0]["advice"]
    assert (await post(sim, "/known", b"externalId=1"))[1]["statusCode"] == 0


@pytest.mark.parametrize("path,body,headers,status,code,advice", [
    ("/s/ID/update", b"", FORM, 200, 902, "at least one key"),
    ("/s/ID/update", b"reasonSystemName=x", FORM, 200, 902, "at least one key"),
    ("/s", b'{"externalId":"x"}', {"Content-Type": "application/json"}, 200, 903, "Content-Type"),
    ("/s", b'{"externalId":"x"}', FORM, 200, 903, "JSON"),
    ("/s/ID/get", b"searchByExternalId=maybe", FORM, 200, 904, "true or false"),
    ("/s/ID/frobnicate", b"", FORM, 404, 905, "no Open Media operation"),
], ids=["update-without-body", "update-without-keys", "wrong-content-type", "json-body", "bad-boolean",
        "unknown-operation"])
async def test_bad_input_gets_a_gms_shaped_failure(make_simulator, path, body, headers, status, code, advice) -> None:
    got_status, reply = (await post(make_simulator(), path, body, headers=headers))
    assert got_status == status
    assert reply["statusCode"] == 2 and reply["errors"][0]["code"] == code
    assert advice in reply["errors"][0]["advice"]


async def test_non_post_is_405(make_simulator) -> None:
    resp = await make_simulator().handle(Request("GET", BASE + "/s", "", headers_of({}), b""))
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_default_ids_are_16_alphanumerics_and_unique() -> None:
    sim = Simulator()
    ids = {(await post(sim, "/s"))[1]["interactionId"] for _ in range(500)}
    assert len(ids) == 500 and all(re.fullmatch(r"[0-9A-Za-z]{16}", i) for i in ids)


async def test_observe_learns_a_recorded_create_and_update(make_simulator) -> None:
    sim = make_simulator()
    req = Request("POST", BASE + "/s", "", headers_of(FORM), b"externalId=e1&userData%5BA%5D=1")
    from omproxy.model import Response
    await sim.observe(req, Response(200, b'{"statusCode":0,"interactionId":"REC0000000000001"}'))
    upd = Request("POST", BASE + "/s/REC0000000000001/update", "", headers_of(FORM), b"change%5BB%5D=2")
    await sim.observe(upd, Response(200, b'{"statusCode":0}'))
    _, got = (await post(sim, "/s/REC0000000000001/get"))
    assert user_data(got) == {"A": "1", "B": "2", "ExternalId": "e1"}
