"""Matching as pure logic: which requests are the same, and how a miss explains itself."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omproxy.cassette.entry import Recorded
from omproxy.config.options import Matching
from omproxy.model import Request, Response, headers_of
from omproxy.modes.matching import Index, Rules, differences, key, miss_report, views
from tests.support import BASE, FORM

RULES = Rules.of(Matching())


def req(body: bytes = b"", path: str = f"{BASE}/s", query: str = "", method: str = "POST", **headers: str) -> Request:
    return Request(method, path, query, headers_of({**FORM, **headers}), body)


SAME = [
    ("order", b"a=1&b=2", b"b=2&a=1"),
    ("bracket-encoding", b"userData%5BK%5D=v", b"userData[K]=v"),
    ("lowercase-escapes", b"userData%5bK%5d=v", b"userData%5BK%5D=v"),
    ("plus-vs-%20", b"a=x+y", b"a=x%20y"),
    ("literal-space", b"a=x y", b"a=x+y"),
    ("optional-escapes", b"a=%41%42", b"a=AB"),
    ("repeats-any-order", b"k=1&k=2", b"k=2&k=1"),
]


@pytest.mark.parametrize("a,b", [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_same_request_whatever_the_encoding(a: bytes, b: bytes) -> None:
    assert key(req(a), RULES) == key(req(b), RULES)


DIFFERENT = [
    ("value", req(b"a=1"), req(b"a=2")),
    ("repeat-count", req(b"k=1&k=1"), req(b"k=1")),
    ("path", req(path=f"{BASE}/s/A/get"), req(path=f"{BASE}/s/B/get")),
    ("query", req(query="x=1"), req(query="x=2")),
    ("method", req(method="POST"), req(method="PUT")),
]


@pytest.mark.parametrize("a,b", [c[1:] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT])
def test_different_requests(a: Request, b: Request) -> None:
    assert key(a, RULES) != key(b, RULES)


def test_headers_do_not_matter_unless_named() -> None:
    a, b = req(b"a=1", gms_user="x"), req(b"a=1", gms_user="y")
    assert key(a, RULES) == key(b, RULES)
    named = Rules.of(Matching(headers=("GMS_USER",)))
    assert key(a, named) != key(b, named)


def test_matchers_can_be_dropped() -> None:
    rules = Rules.of(Matching(on=("method", "path")))
    assert key(req(b"a=1"), rules) == key(req(b"a=2"), rules)


def test_differences_are_per_decoded_field() -> None:
    got = differences(req(b"userData%5BOrderNumber%5D=ABC123456789&x=1"),
                      req(b"userData[OrderNumber]=ABC123456780&y=2"), RULES)
    assert got == ["userData[OrderNumber]: recorded 'ABC123456789', received 'ABC123456780'",
                   "x: recorded '1', received nothing", "y: recorded nothing, received '2'"]


def recorded(i: int, request: Request) -> Recorded:
    return Recorded("c.yaml", i, i + 3, request, Response(200, b"{}"))


def test_index_keeps_recorded_order_per_key_and_explains_misses() -> None:
    index = Index([recorded(0, req(b"a=1")), recorded(1, req(b"a=2")), recorded(2, req(b"a=1")),
                   recorded(3, req(b"z=9", path=f"{BASE}/other"))], RULES)
    assert [r.index for r in index.lookup(req(b"a=1"))] == [0, 2]
    misses = index.near_misses(req(b"a=3"))
    assert [m.recorded.index for m in misses] == [0, 1, 2]
    assert misses[0].differences == ("a: recorded '1', received '3'",)
    report = miss_report(req(b"a=3"), misses)
    assert report.startswith("no recorded interaction matches create on 's'; nearest: [c.yaml #0] a: recorded '1'")


def test_near_misses_fall_back_to_the_same_operation_then_anything() -> None:
    index = Index([recorded(0, req(path=f"{BASE}/s/ID1/get")), recorded(1, req(b"x=1", path="/elsewhere"))], RULES)
    (miss,) = index.near_misses(req(path=f"{BASE}/s/ID2/get"), 1)
    assert miss.recorded.index == 0
    assert miss.differences == (f"path: recorded '{BASE}/s/ID1/get', received '{BASE}/s/ID2/get'",)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(st.tuples(text, text), max_size=6), st.randoms(use_true_random=False))
def test_any_careful_encoding_in_any_order_is_the_same_request(pairs, rnd) -> None:
    def encode(fields, quoter) -> bytes:
        return "&".join(f"{quoter(k, safe='')}={quoter(v, safe='')}" for k, v in fields).encode()

    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    a = req(encode(pairs, quote_plus))
    b = req(encode(shuffled, quote))  # %20 for spaces, a different order
    assert key(a, RULES) == key(b, RULES)


@pytest.mark.parametrize("req", [
    Request("post", "/genesys/2/openmedia/s/01QG/get"),
    Request("POST", "/genesys/2/openmedia/s%2Fx/update", "a=1&b=%20", headers_of(FORM),
            b"change%5BB%5D=2&change%5BA%5D=1"),
    Request("POST", "/genesys/2/openmedia/s", "", headers_of({"Content-Type": "application/json"}), b'{"a":1}'),
    Request("POST", "/genesys/2/openmedia/s", "", headers_of({"Content-Type": "application/json"}), b""),
    Request("POST", "/x", "", headers_of({"Content-Type": "application/x-www-form-urlencoded; charset=klingon"}), b""),
])
def test_the_default_match_key_is_every_view_in_order(req) -> None:
    rules = Rules.of(Matching(), {"token"})
    assert key(req, rules) == tuple(views(req, rules).values())
