"""GMS vocabulary: paths to operations, parameter findings per operation."""

from __future__ import annotations

import pytest

from omproxy import gms
from omproxy.formcodec import decode

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
