"""The form decoder: table-driven over the reference page's bodies and the edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omproxy.gms import formcodec
from omproxy.gms.formcodec import FORM_TYPE, decode, encode


def kinds(body: bytes, content_type: str | None = FORM_TYPE) -> list[str]:
    return [f.kind for f in decode(body, content_type).findings]


DECODE_CASES = [
    ("reference-create",
     b"externalId=xy932&userData%5B0rderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
     b"&userData%5BKeyToDelete%5D=value to delete",
     [("externalId", "xy932"), ("userData[0rderNumber]", "ABC123456789"), ("userData[TestKey2]", "Test value"),
      ("userData[KeyToDelete]", "value to delete")]),
    ("reference-update",
     b"change%5B0rderNumber%5D=uABC123456789&change%5BTestKey2%5D=uTest+value&delete%5BKeyToDelete%5D=",
     [("change[0rderNumber]", "uABC123456789"), ("change[TestKey2]", "uTest value"), ("delete[KeyToDelete]", "")]),
    ("reference-stop-double-encoded", b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED",
     [("reason=RSN-123&description=ORDER+CANCELLED", "")]),
    ("literal-brackets", b"userData[OrderNumber]=ABC", [("userData[OrderNumber]", "ABC")]),
    ("plus-and-%20-are-spaces", b"a=x+y%20z", [("a", "x y z")]),
    ("encoded-plus-is-plus", b"a=1%2B1", [("a", "1+1")]),
    ("order-and-repeats-kept", b"b=2&a=1&b=3", [("b", "2"), ("a", "1"), ("b", "3")]),
    ("empty-value", b"delete%5BK%5D=", [("delete[K]", "")]),
    ("key-without-equals", b"flag&a=1", [("flag", ""), ("a", "1")]),
    ("empty-segments-skipped", b"a=1&&b=2&", [("a", "1"), ("b", "2")]),
    ("empty-body", b"", []),
    ("utf8-value", b"userData%5BName%5D=Zo%C3%AB", [("userData[Name]", "Zoë")]),
    ("invalid-escape-kept-literally", b"a=100%zz", [("a", "100%zz")]),
    ("truncated-escape-kept", b"a=5%", [("a", "5%")]),
    ("invalid-utf8-replaced", b"a=%FF", [("a", "\ufffd")]),
    ("key-with-dots-and-spaces", b"userData%5Bmy.key+x%5D=1", [("userData[my.key x]", "1")]),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode_fields(body: bytes, expected: list[tuple[str, str]]) -> None:
    assert list(decode(body).fields) == expected


def test_decode_uses_declared_charset() -> None:
    form = decode(b"a=Zo%EB", "application/x-www-form-urlencoded; charset=ISO-8859-1")
    assert form.fields == (("a", "Zoë"),)
    assert form.charset == "iso8859-1"
    assert form.findings == ()


FINDING_CASES = [
    ("double-encoded-body", b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED", FORM_TYPE, "double-encoded"),
    ("double-encoded-value", b"userData%5BK%5D=a%2520b", FORM_TYPE, "double-encoded"),
    ("double-encoded-key", b"userData%255BK%255D=v", FORM_TYPE, "double-encoded"),
    ("literal-space", b"userData%5BKeyToDelete%5D=value to delete", FORM_TYPE, "literal-space"),
    ("unencoded-quote", b'a="x"', FORM_TYPE, "unencoded-character"),
    ("raw-non-ascii", "a=Zoë".encode(), FORM_TYPE, "unencoded-character"),
    ("invalid-escape", b"a=100%zz", FORM_TYPE, "invalid-escape"),
    ("invalid-utf8", b"a=%FF%FE", FORM_TYPE, "invalid-charset"),
    ("unclosed-bracket", b"userData%5BOrder=1", FORM_TYPE, "malformed-key"),
    ("empty-bracket", b"userData%5B%5D=1", FORM_TYPE, "malformed-key"),
    ("nested-bracket", b"userData%5Ba%5D%5Bb%5D=1", FORM_TYPE, "malformed-key"),
    ("conflicting-duplicate", b"a=1&a=2", FORM_TYPE, "conflicting-duplicate"),
    ("json-under-form-type", b'{"externalId": "xy932"}', FORM_TYPE, "not-form"),
    ("multipart-under-form-type", b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--xyz--',
     FORM_TYPE, "not-form"),
    ("form-under-json-type", b"externalId=xy932", "application/json", "content-type"),
    ("no-content-type", b"externalId=xy932", None, "content-type"),
]


@pytest.mark.parametrize("body,ctype,kind", [c[1:] for c in FINDING_CASES], ids=[c[0] for c in FINDING_CASES])
def test_findings_name_each_anomaly(body: bytes, ctype: str | None, kind: str) -> None:
    findings = decode(body, ctype).findings
    assert kind in [f.kind for f in findings]
    found = next(f for f in findings if f.kind == kind)
    assert found.message and len(found.message) > 20


CLEAN = [
    ("careful-client", b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BNote%5D=Test+value"),
    ("same-key-same-value", b"a=1&a=1"),
    ("empty", b""),
    ("get-body", b"searchByExternalId=true"),
]


@pytest.mark.parametrize("body", [c[1] for c in CLEAN], ids=[c[0] for c in CLEAN])
def test_clean_bodies_have_no_findings(body: bytes) -> None:
    assert kinds(body) == []


def test_double_encoded_message_shows_the_body_decoded_once_more() -> None:
    (finding,) = decode(b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED").findings
    assert "reason=RSN-123&description=ORDER CANCELLED" in finding.message
    assert finding.fragment == "reason%3DRSN-123%26description%3DORDER%2BCANCELLED"


def test_bracket_view_groups_and_keeps_repeats_and_malformed_keys() -> None:
    view = decode(b"externalId=x&userData%5BA%5D=1&userData%5BB%5D=2&userData%5BA%5D=3"
                  b"&change%5BC%5D=4&delete%5BD%5D=&userData%5Bx%5D%5By%5D=5").view()
    assert view == {"externalId": "x", "userData": {"A": ["1", "3"], "B": "2"}, "change": {"C": "4"},
                    "delete": {"D": ""}, "userData[x][y]": "5"}


def test_bracket_view_keeps_unicode_keys_verbatim() -> None:
    assert decode(b"userData%5BCl%C3%A9+%C3%A0%5D=v").view() == {"userData": {"Clé à": "v"}}


def test_encode_percent_encodes_brackets_and_spaces() -> None:
    assert encode([("userData[Order Number]", "A B&C")]) == b"userData%5BOrder+Number%5D=A+B%26C"


def test_decode_never_raises_on_any_bytes() -> None:
    for i in range(256):
        form = decode(bytes([i]) * 3 + b"=%" + bytes([i]))
        assert form.fields and all(isinstance(k, str) and isinstance(v, str) for k, v in form.fields)
        assert "invalid-escape" in [f.kind for f in form.findings]  # a lone % before any byte


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.tuples(text, text), max_size=8))
def test_decode_of_encode_is_identity(pairs: list[tuple[str, str]]) -> None:
    assert list(decode(encode(pairs)).fields) == pairs


@given(st.lists(st.tuples(text, text), max_size=8))
def test_encoded_bodies_decode_without_encoding_findings(pairs: list[tuple[str, str]]) -> None:
    found = {f.kind for f in decode(encode(pairs)).findings}
    assert not found & {"literal-space", "unencoded-character", "invalid-escape", "invalid-charset"}


@given(st.binary(max_size=64))
def test_decode_total_on_random_bytes(body: bytes) -> None:
    form = decode(body)
    assert isinstance(form.fields, tuple)


def test_charset_of() -> None:
    assert formcodec.charset_of("application/x-www-form-urlencoded; charset=\"ISO-8859-1\"") == "iso8859-1"
    assert formcodec.charset_of("application/x-www-form-urlencoded") == "utf-8"
    assert formcodec.charset_of("application/x-www-form-urlencoded; charset=bogus") == "utf-8"


@pytest.mark.parametrize("body,expected", [
    (b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED", b"reason=RSN-123&description=ORDER+CANCELLED"),
    (b"userData[KeyToDelete]=value to delete", b"userData%5BKeyToDelete%5D=value+to+delete"),
    (b"a=100%zz", b"a=100%25zz"),
    (b"a=%22x%22&b=\"y\"", b"a=%22x%22&b=%22y%22"),
], ids=["double-encoded", "literal-space", "invalid-escape", "unencoded-quote"])
def test_repaired_is_what_a_careful_client_sends(body: bytes, expected: bytes) -> None:
    assert formcodec.repaired(decode(body)) == formcodec.Repair(expected.decode())
    assert formcodec.repaired(decode(expected)) is None  # and that is clean


def test_nothing_to_repair_in_a_clean_or_merely_odd_body() -> None:
    assert formcodec.repaired(decode(b"a=1&a=2")) is None  # conflicting, but encoded fine


def test_a_json_body_is_reported_once_as_not_form() -> None:
    form = decode(b'{"externalId": "xy932", "userData": {"a": "b c"}}')
    assert [f.kind for f in form.findings] == ["not-form"]
    assert formcodec.repaired(form) is None


REPAIR_CASES = [
    ("double-encoded-value", b"userData%5BNote%5D=a%2520b%252Fc", "userData%5BNote%5D=a+b%2Fc"),
    ("double-encoded-key", b"userData%255BNote%255D=v", "userData%5BNote%5D=v"),
    ("latin-1-byte", b"externalId=x1&userData%5BName%5D=M%FCller", "externalId=x1&userData%5BName%5D=M%C3%BCller"),
    ("raw-ampersand", b"userData%5BCompany%5D=Smith&Sons", "userData%5BCompany%5D=Smith%26Sons"),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in REPAIR_CASES], ids=[c[0] for c in REPAIR_CASES])
def test_a_repair_fixes_what_the_finding_names(body: bytes, expected: str) -> None:
    fixed = formcodec.repaired(decode(body))
    assert fixed is not None and fixed.text == expected
    assert not {f.kind for f in decode(expected.encode()).findings}  # and the repair is clean


@pytest.mark.parametrize("body,ctype", [
    (b'{"externalId":"x"}', FORM_TYPE),  # JSON is not repaired into one form key
    (b'{"externalId":"x"}', "application/json"),
    (b"userData[Order=1&externalId=a b", FORM_TYPE),  # a malformed key stays unrepaired, and says so
])
def test_no_repair_line_when_a_repair_cannot_fix_it(body: bytes, ctype: str) -> None:
    fixed = formcodec.repaired(decode(body, ctype))
    assert fixed is None or (fixed.text is None and fixed.reason)


def test_a_url_value_legitimately_holding_escapes_is_not_double_encoded() -> None:
    body = b"userData%5BLink%5D=https%3A%2F%2Fx.example%2Fa%252520b"
    assert decode(body).fields[0][1] == "https://x.example/a%2520b"
    assert "double-encoded" not in kinds(body)


def test_double_encoding_says_its_confidence() -> None:
    (likely,) = decode(b"userData%5BNote%5D=a%2520b").findings
    assert "likely encoded twice" in likely.message
    (possibly,) = decode(b"userData%5BToken%5D=ab%2541c").findings  # %41 is 'A': no encoder encodes it
    assert "possibly encoded twice" in possibly.message


@pytest.mark.parametrize("body,ctype", [
    (b'{"externalId":"xy932","userData":{"a b":"c"}}', "application/json"),
    (b'--XyZ\r\nContent-Disposition: form-data; name="externalId"\r\n\r\nxy932\r\n--XyZ--\r\n',
     "multipart/form-data; boundary=XyZ"),
    (b'{"externalId":"xy932"}', FORM_TYPE),
])
def test_a_body_that_is_not_a_form_is_one_finding_and_no_form_view(body: bytes, ctype: str) -> None:
    form = decode(body, ctype)
    assert [f.kind for f in form.findings] == ["not-form"] and form.fields == () and form.view() == {}


def test_a_raw_ampersand_in_a_value_is_named() -> None:
    form = decode(b"userData%5BCompany%5D=Smith&Sons")
    (finding,) = [f for f in form.findings if f.kind == "unencoded-ampersand"]
    assert "needed %26" in finding.message and "Smith&Sons" in finding.message


def test_a_whole_body_encoded_as_one_string_says_what_happened() -> None:
    (finding,) = decode(b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED").findings
    assert "percent-encoded as one string" in finding.message and "twice" not in finding.message


@pytest.mark.parametrize("charset", ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "idna",
                                     "punycode", "no-such-charset"])
def test_a_charset_that_is_not_a_text_charset_is_a_finding_not_a_crash(charset: str) -> None:
    form = decode(b"externalId=x%FF&a=b", f"{FORM_TYPE}; charset={charset}")
    assert "unknown-charset" in [f.kind for f in form.findings]
    assert form.fields[1] == ("a", "b")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "application/json",
                                          "application/x-www-form-urlencoded; charset=klingon"])
def test_an_empty_body_is_decoded_once_per_content_type_as_it_would_be_each_time(content_type) -> None:
    first = formcodec.decoded(b"", content_type)
    assert first == formcodec.decode(b"", content_type) and formcodec.decoded(b"", content_type) is first


def _unescape_byte_by_byte(raw: bytes) -> tuple[bytes, list[str]]:
    """The rule as first written, a byte at a time: what `unescape` must do, faster."""
    out, bad, i, n = bytearray(), [], 0, len(raw)
    hexdigits = b"0123456789abcdefABCDEF"
    while i < n:
        b = raw[i]
        if b == 0x25 and i + 2 < n and raw[i + 1] in hexdigits and raw[i + 2] in hexdigits:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
            continue
        if b == 0x25:
            bad.append(raw[i : i + 3].decode("latin-1"))
        out.append(0x20 if b == 0x2B else b)
        i += 1
    return bytes(out), bad


@given(st.binary(max_size=40) | st.lists(st.sampled_from([b"%", b"+", b"2", b"B", b"g", b"%4", b"x"])).map(b"".join))
def test_unescape_is_the_byte_by_byte_rule(raw: bytes) -> None:
    from omproxy.gms.formcodec import unescape

    assert unescape(raw) == _unescape_byte_by_byte(raw)


def test_a_megabyte_of_percent_signs_takes_memory_linear_in_the_body() -> None:
    """Reliability finding 5: each invalid escape held its own copy of the whole field (40 KB -> 1.6 GB)."""
    import tracemalloc

    body = b"userData%5BNote%5D=" + b"%" * 1_000_000  # max_body's default
    tracemalloc.start()
    form = decode(body, FORM_TYPE)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2**20, peak  # was quadratic: gigabytes
    (bad,) = [f for f in form.findings if f.kind == "invalid-escape"]
    assert "(and many more)" in bad.message and len(bad.fragment) < 300


@pytest.mark.parametrize("charset", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf_16"])
def test_a_utf16_or_utf32_form_is_read_whole_never_a_crash(charset) -> None:
    """Reliability finding 3: split on & before decoding, UTF-16 characters were cut in two (a 500, and a
    cassette replay refused to load)."""
    body = "externalId=x1&userData[Note]=Müller".encode(charset)
    form = decode(body, f"{FORM_TYPE}; charset={charset}")
    assert form.fields == (("externalId", "x1"), ("userData[Note]", "Müller"))
    assert "wide-charset" in {f.kind for f in form.findings}
    assert form.exact == form.fields
