"""What GMS will read: Jetty's `UrlEncoded` rules against the careful decoder, on the real clients'
encodings of `../shared/samples/field/gms/` and on generated bodies; and decode's promises (D9, D10,
D13, D14, D28) as the newcomer's reproductions gave them."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from omproxy.cli import main
from omproxy.gms import formcodec, jetty

VECTORS = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "samples" / "field" / "gms" / \
    "gms-field-requests.yaml"
FORM = "application/x-www-form-urlencoded"
SVC = "/genesys/2/openmedia/customer-support"


def vectors() -> list[tuple[str, bytes, str]]:
    """(name, the bytes on the wire, Content-Type) of every client vector in the field file."""
    data = yaml.safe_load(VECTORS.read_text())
    out = []
    for client in data["clients"]:
        for v in client.get("vectors") or []:
            raw = v.get("wire_body")
            body = raw.encode() if raw is not None else ast.literal_eval(v["wire_body_python_bytes"])
            out.append((v["name"], body, v["content_type"]))
    return out


def test_the_field_vectors_are_there() -> None:
    assert {name for name, _, _ in vectors()} >= {"unencoded-value-with-ampersand-percent-plus-latin1-euro",
                                                   "utf8-emoji-shrug"}


@pytest.mark.parametrize(("name", "body", "content_type"), vectors(), ids=[v[0] for v in vectors()])
def test_decode_says_where_gms_reads_otherwise_on_each_field_vector(name, body, content_type, monkeypatch,
                                                                     capsys) -> None:
    stdin(monkeypatch, body)
    code = main(["decode", "-", "--content-type", content_type, "--path", "/genesys/2/chat/x/send", "--json"])
    reads = json.loads(capsys.readouterr().out)["gms_reads"]
    if name == "utf8-emoji-shrug":  # a careful client: GMS reads what it meant
        assert code == 0 and reads["differences"] == []
        assert dict(reads["fields"])["message"] == "Hello from Chatbot ¯\\_(ツ)_/¯ !!!"
    else:  # Tom & Jerry: 50% off + Müller ?5, unencoded, latin-1: Jetty refuses the whole body
        assert code == 1 and reads["fields"] == []
        assert "'% o' is not a valid percent escape" in reads["refused"]
        assert reads["differences"] == [f"GMS will read nothing: {reads['refused']}"]


@pytest.mark.parametrize(("body", "content_type", "fields", "refused"), [
    (b"a=1&b=2", FORM, [("a", "1"), ("b", "2")], ""),
    (b"note=Smith & Sons", FORM, [("note", "Smith "), (" Sons", "")], ""),  # a raw & splits
    (b"a=b=c", FORM, [("a", "b=c")], ""),  # a later = is the value's
    (b"a=1&&b=&=x&c", FORM, [("a", "1"), ("b", ""), ("", "x"), ("c", "")], ""),  # an empty field dropped
    (b"q=a+b%20c", FORM, [("q", "a b c")], ""),
    (b"name=M\xfcller", FORM, [("name", "M\ufffdller")], ""),  # not UTF-8: U+FFFD
    (b"name=M\xfcller", FORM + "; charset=ISO-8859-1", [("name", "Müller")], ""),
    (b"name=M%FCller", FORM + "; charset=iso-8859-1", [("name", "Müller")], ""),
    (b"name=M%C3%BCller", FORM, [("name", "Müller")], ""),
    (b"off=50% off", FORM, [], "'% o'"),
    (b"end=100%", FORM, [], "'%'"),
    (b"bad=%zz", FORM, [], "'%zz'"),
])
def test_jetty_reads_as_its_code_says(body, content_type, fields, refused) -> None:
    got = jetty.read(body, content_type)
    assert list(got.fields) == fields
    assert (refused in got.refused) if refused else got.refused == ""


pairs = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), max_size=5)


@given(pairs)
def test_a_careful_encoding_is_read_by_jetty_as_it_was_meant(fields) -> None:
    body = formcodec.encode(fields)
    assert list(jetty.read(body, FORM).fields) == fields
    assert jetty.compared(body, FORM, formcodec.decode(body, FORM))[1] == []


def test_the_differences_name_each_field() -> None:
    meant = [("note", "Smith & Sons"), ("id", "7")]
    got = jetty.read(b"note=Smith & Sons&id=7&id=8", FORM)
    assert jetty.differences(meant, got) == [
        "GMS will store 'note' = 'Smith ' where the client meant 'Smith & Sons'",
        "GMS will also see a field ' Sons' with no value"]  # the second id: getParameter reads the first
    lost = jetty.differences([("m", "5 €")], jetty.read(b"m=5 ?&n=M\xfcller", FORM), raw_bytes=True)
    assert any("ISO-8859-1 (Java's default)" in line for line in lost)


# ---- decode's promises -----------------------------------------------------------------------

def stdin(monkeypatch, body: bytes) -> None:
    """`omproxy decode -` reads these bytes from standard input."""
    import sys
    from io import BytesIO, TextIOWrapper

    monkeypatch.setattr(sys, "stdin", TextIOWrapper(BytesIO(body)))


def decode(capsys, *args: str) -> tuple[int, str]:
    code = main(["decode", *args])
    return code, capsys.readouterr().out


def test_d9_the_cp1252_guess_is_said_in_text_and_json(monkeypatch, capsys) -> None:
    stdin(monkeypatch, b"userData%5BName%5D=M\xfcller")
    _, out = decode(capsys, "-", "--path", SVC)
    assert "correctly encoded, the body would read (the bytes that were not utf-8 read as cp1252, a guess)" in out
    stdin(monkeypatch, b"userData%5BName%5D=M\xfcller")
    _, out = decode(capsys, "-", "--path", SVC, "--json")
    got = json.loads(out)
    assert got["repaired"] == "userData%5BName%5D=M%C3%BCller"
    assert got["repair_note"] == "the bytes that were not utf-8 read as cp1252, a guess"


def test_d10_a_malformed_key_alone_says_no_repair(capsys) -> None:
    code, out = decode(capsys, "userData[Order=ABC", "--path", SVC)
    assert code == 1 and "no repair: a malformed key cannot be repaired" in out
    _, out = decode(capsys, "userData[Order=ABC", "--path", SVC, "--json")
    assert "malformed key" in json.loads(out)["unrepairable"]


@pytest.mark.parametrize(("value", "said"), [("u'ABC123456789'", "Python 2 repr"), ("b'ABC123'", "str() of bytes"),
                                             ('b"ABC"', "str() of bytes"), ("uABC123456789", "Python 2")])
def test_d13_python_reprs_are_found(capsys, value, said) -> None:
    code, out = decode(capsys, f"userData[OrderNumber]={value}", "--path", SVC)
    assert code == 1 and "python-repr" in out and said in out


def test_d13_a_quote_inside_a_value_is_not_a_repr(capsys) -> None:
    code, out = decode(capsys, "userData%5BNote%5D=it%27s+fine", "--path", SVC)
    assert code == 0 and "python-repr" not in out


def test_d14_a_repair_under_a_declared_latin1_charset(monkeypatch, capsys) -> None:
    stdin(monkeypatch, b"userData%5BName%5D=M\xfcller")
    code, out = decode(capsys, "-", "--content-type", FORM + "; charset=ISO-8859-1", "--path", SVC)
    assert "correctly encoded, the body would read:\n  userData%5BName%5D=M%FCller" in out
    assert "in: userData%5BName%5D=Müller" in out and "\ufffd" not in out  # shown in its charset


def test_d28_fields_one_a_line_are_named_and_repaired_into_fields(capsys) -> None:
    code, out = decode(capsys, "externalId=a\r\nuserData%5BX%5D=2", "--path", SVC)
    assert "line-separated: the fields are separated by line breaks (CR LF)" in out
    assert "externalId=a&userData%5BX%5D=2" in out
    assert "\r" not in out  # the `in:` line shows the break, as \r\n


def test_d28_bytes_are_listed_in_the_order_they_come(capsys) -> None:
    _, out = decode(capsys, "userData[Name]=Müller", "--path", SVC)  # ü: C3 BC
    assert "byte 0xC3, byte 0xBC" in out


def test_d28_the_stop_repair_uses_the_names_the_findings_suggest(capsys) -> None:
    _, out = decode(capsys, "reason%3DRSN-123%26description%3DORDER%2BCANCELLED", "--path",
                    f"{SVC}/01QG0Q255S50G000/stop")
    assert out.rstrip().endswith("reasonSystemName=RSN-123&reasonDescription=ORDER+CANCELLED")


async def test_the_inspector_and_lint_show_what_gms_reads(aiohttp_client, tmp_path, capsys) -> None:
    from omproxy.config.options import Config, Mode
    from omproxy.serve.http.front import build_app

    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml"), upstream="builtin"),
                                            Mode.RECORD))
    resp = await client.post(SVC, data=b"externalId=x1&userData%5BNote%5D=Smith & Sons",
                             headers={"Content-Type": FORM})
    assert resp.status == 200
    detail = await (await client.get("/_omproxy/exchange?id=1")).json()
    assert "GMS will store 'userData[Note]' = 'Smith ' where the client meant 'Smith & Sons'" in \
        detail["gms_reads"]["differences"]
    assert main(["lint", str(tmp_path / "c.yaml")]) == 1
    out = capsys.readouterr().out
    assert "gms-reads-otherwise: GMS will also see a field ' Sons' with no value" in out
