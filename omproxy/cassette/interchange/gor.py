"""GoReplay's `.gor` captures (`--output-file`): payload blocks split by a line of three monkeys, each
a header line `TYPE ID TIMESTAMP_NS LATENCY_NS` (1 a request, 2 its response, 3 a replayed response)
and the raw HTTP/1.x message. Requests are paired with their responses by id; a request whose
response was not captured (GoReplay records them only with `--output-http-track-response` or
`--input-raw-track-response`) is left out and counted. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from omproxy.cassette.interchange.common import GOR_SEPARATOR, Imported, answer_of, kept_headers
from omproxy.errors import UsageError
from omproxy.model import Recorded, Request, Response, Source, headers_of


def from_gor(raw: bytes, name: str, *, everything: bool = False) -> Imported:
    requests: dict[bytes, tuple[int, int, Request]] = {}  # id -> (block number, start ns, request)
    answers: dict[bytes, tuple[Response, int]] = {}  # id -> (response, latency ns)
    out = Imported()
    blocks = [b for b in raw.split(GOR_SEPARATOR) if b.strip()]
    for n, block in enumerate(blocks):
        at = f"{name}: payload #{n}"
        head, sep, message = block.partition(b"\n")
        meta = head.split()
        if not sep or len(meta) < 3 or meta[0] not in (b"1", b"2", b"3") or not meta[2].isdigit():
            raise UsageError(f"{at}: not a GoReplay payload (its first line is {head[:60]!r}, not "
                             "'TYPE ID TIMESTAMP [LATENCY]')")
        kind, ident, start = meta[0], meta[1], int(meta[2])
        latency = int(meta[3]) if len(meta) > 3 and meta[3].lstrip(b"-").isdigit() else 0
        if kind == b"1":
            requests[ident] = (n, start, _request(message, at))
        elif kind == b"2":
            answers[ident] = (_response(message, at, out), latency)
        # 3, a replayed response (what the replay target answered): not what production answered
    unanswered = left_out = 0
    for ident, (_, start, request) in sorted(requests.items(), key=lambda item: item[1][0]):
        if ident not in answers:
            unanswered += 1
            continue
        if not everything and not request.path.startswith("/genesys/"):
            left_out += 1
            continue
        response, latency = answers[ident]
        when = datetime.fromtimestamp(start / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        out.recorded.append(Recorded(name, len(out.recorded), 0, request, response, when, max(latency, 0) / 1e6))
    if unanswered:
        out.notes.append(f"{name}: {unanswered} request(s) without their response left out (capture with "
                         "--input-raw-track-response to keep answers)")
    if left_out:
        out.notes.append(f"{name}: {left_out} request(s) not under /genesys/ left out (--all takes them)")
    return out


def _split(message: bytes, at: str) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """The first line, the headers and the body of a raw HTTP/1.x message (chunked bodies joined)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = message.partition(b"\n\n")
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise UsageError(f"{at}: header line {line[:60]!r} has no ':'")
        headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers):
        body = _dechunked(body, at)
    else:
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if length is not None and length.isdigit():
            body = body[:int(length)]
    return lines[0], headers, body


def _dechunked(body: bytes, at: str) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise UsageError(f"{at}: a chunked body cut short")
        try:
            size = int(body[pos:end].split(b";")[0], 16)
        except ValueError:
            raise UsageError(f"{at}: a chunk size {body[pos:end][:20]!r} is not hexadecimal") from None
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def _request(message: bytes, at: str) -> Request:
    first, headers, body = _split(message, at)
    parts = first.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise UsageError(f"{at}: {first[:60]!r} is not an HTTP request line")
    target = urlsplit(parts[1].decode("latin-1"))
    return Request(parts[0].decode("ascii", "replace").upper(), target.path or "/", target.query,
                   headers_of(kept_headers(headers)), body)


def _response(message: bytes, at: str, out: Imported) -> Response:
    first, headers, body = _split(message, at)
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise UsageError(f"{at}: {first[:60]!r} is not an HTTP status line")
    answer, kept, encoding = answer_of(body, headers, at, out, decoded_already=False)
    return Response(int(parts[1]), answer, headers_of(kept), Source.CASSETTE, content_encoding=encoding,
                    reason=parts[2].decode("latin-1") if len(parts) > 2 else "")
