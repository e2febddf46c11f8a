"""Every cache omproxy keeps is keyed by its whole input (the function's arguments, all immutable),
so the cached and the uncached function answer alike: requests and values differing in one field,
through each, give equal results, in any order. A cache keyed by a hand-written list of what its
function reads would fail here the day the function reads one thing more."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from omproxy import model
from omproxy.cassette import yamlformat
from omproxy.gms import formcodec
from omproxy.gms import vocabulary as gms
from omproxy.model import Request, headers_of
from omproxy.tools import compare

FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = st.sampled_from([FORM, f"{FORM}; charset=utf-8", f"{FORM}; charset=iso-8859-1", "application/json",
                                 "text/plain", None])
PIECES = st.sampled_from([b"a=1", b"userData%5BA%5D=x", b"change[B]=%ZZ", b"+", b"&", b"=", b"%E9", b"\xe9",
                          b"reason%3DR%26d%3DX", b"delete%5BK%5D=", b"externalId=e1", b"x" * 40])
BODIES = st.lists(PIECES, max_size=6).map(b"&".join) | st.binary(max_size=30)
PATHS = st.sampled_from(["/genesys/2/openmedia/customer-support", "/genesys/2/openmedia/s/01QG/get",
                         "/genesys/2/openmedia/s/01QG/update", "/genesys/2/openmedia/s/01QG/stop",
                         "/genesys/2/openmedia/s/x1/get", "/other", "/genesys/2/openmedia/%73vc"])


@given(st.lists(st.tuples(BODIES, CONTENT_TYPES), min_size=2, max_size=8))
def test_a_remembered_decoding_is_the_decoding(calls) -> None:
    for body, content_type in calls + calls:  # each asked twice: the second time it is remembered
        assert formcodec.decoded(body, content_type) == formcodec.decode(body, content_type)


def test_a_body_over_the_limit_is_decoded_each_time_and_never_kept() -> None:
    big = b"a=" + b"x" * formcodec.SMALL
    before = formcodec._remembered.cache_info().currsize
    assert formcodec.decoded(big, FORM) == formcodec.decode(big, FORM)
    assert formcodec._remembered.cache_info().currsize == before


@given(st.lists(st.tuples(PATHS, BODIES, CONTENT_TYPES), min_size=2, max_size=8))
def test_remembered_findings_are_the_findings(calls) -> None:
    for path, body, content_type in calls + calls:
        op = gms.parse_path(path)
        form = formcodec.decode(body, content_type)
        assert gms.findings(op, form) == (gms._findings(op, form) if op is not None else ())
        req = Request("POST", path, "", headers_of({"Content-Type": content_type} if content_type else {}), body)
        fresh = formcodec.decode(body, content_type)
        assert req.findings == fresh.findings + (gms._findings(op, fresh) if op is not None else ())


@given(st.lists(st.tuples(PATHS, CONTENT_TYPES), min_size=2, max_size=8))
def test_a_bodiless_requests_remembered_findings_are_its_findings(calls) -> None:
    for path, content_type in calls + calls:
        form = formcodec.decode(b"", content_type)
        op = gms.parse_path(path)
        assert model._bodiless_findings(path, content_type) == form.findings + (
            gms._findings(op, form) if op is not None else ())


@given(st.lists(PATHS | st.text(max_size=30), min_size=2, max_size=8))
def test_remembered_paths_are_parsed_as_they_would_be(paths) -> None:
    for path in paths + paths:
        assert gms.parse_path(path) == gms.parse_path.__wrapped__(path)
        assert gms.service_of(path) == gms.service_of.__wrapped__(path)


@given(st.lists(st.text(max_size=20), min_size=2, max_size=8))
def test_a_remembered_scalar_is_written_as_it_would_be(texts) -> None:
    for text in texts + texts:
        assert yamlformat._string(text) == yamlformat._string.__wrapped__(text)


@given(st.lists(st.tuples(st.lists(st.sampled_from(["interactionId", "a", "b", "0", "*At", "x1"]), max_size=4)
                          .map(tuple), st.sampled_from([(), ("a.*",), ("*.b", "x1")])), min_size=2, max_size=8))
def test_remembered_noise_is_judged_as_it_would_be(calls) -> None:
    for path, extra in calls + calls:
        noise = compare.Noise().plus(extra)
        assert compare._ignores(noise, path) == compare._ignores.__wrapped__(noise, path)
