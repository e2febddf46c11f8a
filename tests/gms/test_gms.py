"""GMS vocabulary: paths to operations, parameter findings per operation."""

from __future__ import annotations

import pytest

from omproxy.gms import formcodec
from omproxy.gms import vocabulary as gms
from omproxy.gms.formcodec import decode
from omproxy.model import Request, headers_of
from tests.support import BASE

PATHS = [
    ("create", "/genesys/2/openmedia/customer-support", gms.Operation("create", "customer-support")),
    ("get", "/genesys/2/openmedia/customer-support/01QG0Q2S5S50G000/get",
     gms.Operation("get", "customer-support", "01QG0Q2S5S50G000")),
    ("update", "/genesys/2/openmedia/s/ID/update", gms.Operation("update", "s", "ID")),
    ("stop", "/genesys/2/openmedia/s/ID/stop", gms.Operation("stop", "s", "ID")),
    ("encoded-segment", "/genesys/2/openmedia/my%20svc", gms.Operation("create", "my svc")),
    ("slash-in-segment-stays", "/genesys/2/openmedia/a%2Fb/ID/get", gms.Operation("get", "a/b", "ID")),
    ("unknown-operation", "/genesys/2/openmedia/s/ID/delete", None),
    ("other-api", "/genesys/1/service/callback", None),
    ("bare-base", "/genesys/2/openmedia/", None),
]


@pytest.mark.parametrize("path,expected", [c[1:] for c in PATHS], ids=[c[0] for c in PATHS])
def test_parse_path(path: str, expected: gms.Operation | None) -> None:
    assert gms.parse_path(path) == expected


def findings(kind: str, body: bytes) -> dict[str, str]:
    return {f.kind: f.message for f in gms.parameter_findings(gms.Operation(kind, "s", "ID"), decode(body))}


SUGGESTIONS = [
    ("reason->reasonSystemName", "stop", b"reason=RSN-123", "reasonSystemName"),
    ("description->reasonDescription", "stop", b"description=x", "reasonDescription"),
    ("interactionSubtype->interactionSubType", "create", b"interactionSubtype=InboundNew", "interactionSubType"),
    ("mediatype->mediaType", "create", b"mediatype=workitem", "mediaType"),
    ("externalID->externalId", "create", b"externalID=x", "externalId"),
    ("searchbyexternalid", "get", b"searchbyexternalid=true", "searchByExternalId"),
]


@pytest.mark.parametrize("kind,body,hint", [c[1:] for c in SUGGESTIONS], ids=[c[0] for c in SUGGESTIONS])
def test_unknown_parameter_suggests_the_close_match(kind: str, body: bytes, hint: str) -> None:
    assert f"did you mean '{hint}'" in findings(kind, body)["unknown-parameter"]


def test_parameter_of_another_operation_points_at_the_path() -> None:
    message = findings("stop", b"change%5BK%5D=v")["unknown-parameter"]
    assert "belongs to update" in message


@pytest.mark.parametrize("kind,body,expected", [
    ("update", b"", "empty-update"),
    ("update", b"reasonSystemName=x", "empty-update"),
    ("update", b"delete%5BK%5D=oops", "delete-with-value"),
    ("get", b"searchByExternalId=yes", "bad-boolean"),
    ("create", b"userData%5B0rderNumber%5D=A", "zero-for-o"),
    ("update", b"change%5BOrderNumber%5D=uABC123456789", "python-repr"),
], ids=["empty-update", "update-without-keys", "delete-with-value", "bad-boolean", "zero-for-o", "python-repr"])
def test_operation_findings(kind: str, body: bytes, expected: str) -> None:
    assert expected in findings(kind, body)


@pytest.mark.parametrize("kind,body", [
    ("create", b"externalId=x&interactionType=Inbound&interactionSubType=InboundNew&mediaType=workitem"
               b"&userData%5BOrderNumber%5D=1"),
    ("get", b"searchByExternalId=false"),
    ("get", b""),
    ("update", b"change%5BA%5D=1&delete%5BB%5D="),
    ("stop", b"reasonSystemName=Cancel&reasonDescription=Not+needed"),
    ("stop", b""),
], ids=["create", "get-by-id", "get-empty", "update", "stop", "stop-empty"])
def test_valid_bodies_have_no_parameter_findings(kind: str, body: bytes) -> None:
    assert findings(kind, body) == {}


def test_not_found_texts_are_the_references() -> None:
    assert gms.not_found("get", "X") == (b'{"statusCode":2,"errors":[{"code":248,'
                                         b'"advice":"Specified interaction Id[X] was not found"}]}')
    assert b"Interaction with specified id[X] was not found" in gms.not_found("update", "X")
    assert b"Interaction with specified id[X] was not found" in gms.not_found("stop", "X")


def test_a_repeated_unknown_parameter_is_reported_once() -> None:
    found = gms.parameter_findings(gms.Operation("update", "s", "ID"), decode(b"a=1&a=2&change%5BK%5D=v"))
    assert [f.kind for f in found] == ["unknown-parameter"]
    assert "(known: change[key], delete[key])" in found[0].message


def test_target_of_names_the_interaction_by_id_or_by_external_id() -> None:
    from omproxy.gms.vocabulary import Target, parse_path, target_of

    base = "/genesys/2/openmedia/s"
    assert target_of(parse_path(base), decode(b"externalId=x")) is None
    assert target_of(parse_path(f"{base}/ID1/get"), decode(b"")) == Target("ID1")
    assert target_of(parse_path(f"{base}/ext/get"), decode(b"searchByExternalId=true")) == Target("ext", True)
    assert target_of(parse_path(f"{base}/ext/get"), decode(b"searchByExternalId=false")) == Target("ext")
    assert target_of(parse_path(f"{base}/ID1/stop"), decode(b"searchByExternalId=true")) == Target("ID1")


def test_ids_in_reply_and_with_id_rewrite_only_the_id_segment() -> None:
    from omproxy.gms.vocabulary import ids_in_reply, is_not_found, parse_path, with_id

    base = "/genesys/2/openmedia/s"
    assert ids_in_reply(parse_path(base), {"statusCode": 0, "interactionId": "A1"}) == ["A1"]
    assert ids_in_reply(parse_path(f"{base}/A1/get"),
                        {"statusCode": 0, "interactionProperties": {"interactionId": "A1"}}) == ["A1"]
    assert ids_in_reply(parse_path(f"{base}/A1/get"), {"statusCode": 2}) == []
    assert is_not_found({"statusCode": 2, "errors": [{"code": 248}]})
    assert not is_not_found({"statusCode": 2, "errors": [{"code": 902}]})
    assert with_id(f"{base}/A1/update", "A1", "B/2") == f"{base}/B%2F2/update"
    assert with_id(f"{base}/A1/update", "ZZ", "B2") == f"{base}/A1/update"
    assert with_id("/other/A1/update", "A1", "B2") == "/other/A1/update"


def test_one_rule_is_both_a_finding_and_the_simulators_refusal() -> None:
    from omproxy.gms.vocabulary import bad_boolean, empty_update, not_form, parse_path

    update = parse_path("/genesys/2/openmedia/s/ID/update")
    get = parse_path("/genesys/2/openmedia/s/ID/get")
    assert empty_update(update, decode(b"")).kind == "empty-update"
    assert empty_update(update, decode(b"change%5BA%5D=1")) is None
    assert bad_boolean(get, decode(b"searchByExternalId=yes")).kind == "bad-boolean"
    assert not_form(b'{"a":1}', "application/json", decode(b'{"a":1}', "application/json")) is not None
    assert not_form(b"", None, decode(b"")) is None


@pytest.mark.parametrize("body,path,suggestion", [
    (b"userData%255BNote%255D=v", "/genesys/2/openmedia/s", "did you mean 'userData[Note]'?"),
    (b"userData[Note=v", "/genesys/2/openmedia/s", None),
    (b"change[Note=v", "/genesys/2/openmedia/s/ID/update", None),
])
def test_a_malformed_or_twice_encoded_key_never_suggests_an_empty_bracket(body, path, suggestion) -> None:
    from omproxy.gms.vocabulary import findings, parse_path

    messages = [f.message for f in findings(parse_path(path), decode(body))]
    assert not any("[]'" in m for m in messages), messages
    if suggestion:
        assert any(suggestion in m for m in messages), messages


def test_the_word_after_a_raw_ampersand_is_not_also_an_unknown_parameter() -> None:
    from omproxy.gms.vocabulary import findings, parse_path

    got = findings(parse_path("/genesys/2/openmedia/s"), decode(b"userData%5BCompany%5D=Smith&Sons"))
    assert not [f for f in got if f.kind == "unknown-parameter"]


@pytest.mark.parametrize("path", [f"{BASE}/svc/ID1/get", f"{BASE}/svc", f"{BASE}/svc/ID1/update", "/other"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "application/json",
                                          "application/x-www-form-urlencoded; charset=rot13"])
def test_a_bodiless_requests_findings_are_remembered_as_they_are_judged(path, content_type) -> None:
    headers = headers_of({"Content-Type": content_type} if content_type else {})
    twice = [Request("POST", path, "", headers).findings for _ in range(2)]
    form = formcodec.decoded(b"", content_type)
    assert twice[0] == twice[1] == form.findings + gms.findings(gms.parse_path(path), form)
