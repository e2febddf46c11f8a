"""omproxy's upstream client over real sockets, against raw HTTP servers that answer as real ones do
and as broken ones do: keep-alive reuse, connections the upstream closes, 1xx before the answer,
bodies delimited by the close, cut short, not HTTP, too slow, HEAD, compressed, too large."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from omproxy.errors import UpstreamTimeout, UpstreamTooLarge, UpstreamUnreachable
from omproxy.serve.http.upstream import Client
from tests.support import loop_turn


class Upstream:
    """A raw HTTP server: each request head read (and its Content-Length body) gets the next of
    `answers` (bytes, or None to close the connection without answering; a missing one: hang)."""

    def __init__(self, *answers: bytes | None, close_after: bool = False) -> None:
        self.answers = list(answers)
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Client:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Client("http", "127.0.0.1", port, 5.0, 1000, f"http://127.0.0.1:{port}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + await reader.readexactly(length))
                if not self.answers:
                    await asyncio.Event().wait()  # never answers
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


def ok(body: bytes = b'{"statusCode":0}', *headers: bytes) -> bytes:
    return b"\r\n".join([b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *headers]) + b"\r\n\r\n" + body


@pytest.fixture
async def upstream():
    made: list[tuple[Upstream, Client]] = []

    async def make(*answers: bytes | None, **options: bool) -> tuple[Upstream, Client]:
        up = Upstream(*answers, **options)
        made.append((up, await up.start()))
        return made[-1]

    yield make
    for up, client in made:
        await client.close()
        await up.close()


async def test_keep_alive_one_connection_and_the_request_as_sent(upstream) -> None:
    up, client = await upstream(ok(b"1"), ok(b"2"), ok(b"3"))
    answers = [await client.send("POST", f"/g/{i}?a=%20", [("Host", "gms"), ("X-A", "b")], b"") for i in range(3)]
    assert [a.body for a in answers] == [b"1", b"2", b"3"] and answers[0].status == 200
    assert up.connections == 1
    assert up.requests[0] == b"POST /g/0?a=%20 HTTP/1.1\r\nHost: gms\r\nX-A: b\r\nContent-Length: 0\r\n\r\n"


async def test_a_connection_the_upstream_closed_is_never_reused(upstream) -> None:
    up, client = await upstream(ok(b"1"), ok(b"2"))
    assert (await client.send("GET", "/a", [], b"")).body == b"1"
    up.writers[0].close()  # the upstream closes the idle connection, without a word
    await up.writers[0].wait_closed()
    assert (await client.send("GET", "/b", [], b"")).body == b"2"
    assert up.connections == 2


async def test_connection_close_is_honoured(upstream) -> None:
    up, client = await upstream(ok(b"1", b"Connection: close"), ok(b"2"), close_after=True)
    assert (await client.send("GET", "/a", [], b"")).body == b"1"
    assert (await client.send("GET", "/b", [], b"")).body == b"2"
    assert up.connections == 2  # the first was not asked again


async def test_a_100_continue_comes_before_the_answer(upstream) -> None:
    _, client = await upstream(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"x"))
    answer = await client.send("POST", "/a", [], b"a=1")
    assert answer.status == 200 and answer.body == b"x"


async def test_a_body_delimited_by_the_close_and_a_head_answer(upstream) -> None:
    _, client = await upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end", close_after=True)
    assert (await client.send("GET", "/a", [], b"")).body == b"to the end"
    up, client = await upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", ok(b"after"))
    assert (await client.send("HEAD", "/a", [], b"")).body == b""
    assert (await client.send("GET", "/b", [], b"")).body == b"after" and up.connections == 1


async def test_gzip_is_decoded_within_the_limit(upstream) -> None:
    _, client = await upstream(ok(gzip.compress(b"z" * 900), b"Content-Encoding: gzip"),
                               ok(gzip.compress(b"z" * 5000), b"Content-Encoding: gzip"))
    answer = await client.send("GET", "/a", [], b"")
    assert answer.body == b"z" * 900 and answer.headers["Content-Encoding"] == "gzip"
    with pytest.raises(UpstreamTooLarge, match="max_response_body"):
        await client.send("GET", "/b", [], b"")


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
                                    b"SSH-2.0-OpenSSH\r\n\r\n", None])
async def test_cut_short_not_http_or_no_answer_is_unreachable(upstream, answer) -> None:
    """GMS's operations are POSTs, never sent twice (aiohttp retries only an idempotent request whose
    kept-alive connection turned out closed, as RFC 9112 allows)."""
    _, client = await upstream(answer, close_after=True)
    with pytest.raises(UpstreamUnreachable, match=r"failed \(\w+: the connection closed or the answer was not valid"):
        await client.send("POST", "/secret?token=abc", [], b"a=1")


async def test_a_status_that_is_no_http_status_is_unreachable_and_its_connection_dropped(upstream) -> None:
    up, client = await upstream(b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n{}", ok(b"after"))
    with pytest.raises(UpstreamUnreachable, match="answered with status 999, which is not an HTTP status"):
        await client.send("GET", "/a", [], b"")
    assert (await client.send("GET", "/b", [], b"")).body == b"after"


async def test_too_slow_is_a_timeout_and_the_connection_is_dropped(upstream) -> None:
    up, client = await upstream()
    client.timeout = 0.3
    with pytest.raises(UpstreamTimeout, match="did not answer within 0.3 s"):
        await client.send("GET", "/a", [], b"")


async def test_each_request_in_flight_times_out_at_its_own_deadline(upstream) -> None:
    """A request sent later with a nearer deadline is not left waiting for the deadline of the one
    before it, nor that one cut short by it."""
    up, client = await upstream()  # never answers
    loop = asyncio.get_running_loop()

    async def timed(timeout: float) -> float:
        client.timeout = timeout  # read once, when the request starts
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await client.send("GET", f"/{timeout}", [], b"")
        return loop.time() - started

    patient = asyncio.create_task(timed(3.0))
    while not up.requests:  # it was sent: its deadline is the one the timer is armed for
        await loop_turn()
    hasty = await timed(0.2)
    assert 0.2 <= hasty < 2.5 and not patient.done()  # not at the patient one's deadline, 3 s
    assert await patient >= 3.0
    assert len(up.requests) == 2


async def test_a_refused_port_is_unreachable(unused_tcp_port) -> None:
    client = Client("http", "127.0.0.1", unused_tcp_port, 5.0, 1000, "http://gms.example:8080")
    with pytest.raises(UpstreamUnreachable, match=r"GMS at http://gms.example:8080 is unreachable \(.*refused"):
        await client.send("GET", "/a", [], b"")
    await client.close()


@pytest.fixture
def certificates(tmp_path):
    """A CA and a certificate it signed for localhost, made with Debian's openssl."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (.ci/run installs it)")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=omproxy test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "gms.key", "-out", "gms.csr", "-subj", "/CN=localhost")
    (tmp_path / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "gms.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "gms.pem", "-days", "2", "-extfile", "san.ext")
    return tmp_path


async def test_an_https_upstream_is_verified_against_the_system_certificates(certificates, monkeypatch) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "gms.pem", certificates / "gms.key")
    up = Upstream(ok(b"over tls"), ok(b"again"))
    up.server = server = await asyncio.start_server(up.handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        untrusted = Client("https", "localhost", port, 5.0, 1000, f"https://localhost:{port}")
        with pytest.raises(UpstreamUnreachable, match="is unreachable .*certificate"):
            await untrusted.send("GET", "/a", [], b"")
        await untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(certificates / "ca.pem"))  # as a system CA would be
        client = Client("https", "localhost", port, 5.0, 1000, f"https://localhost:{port}")
        assert (await client.send("GET", "/a", [("Host", "localhost")], b"")).body == b"over tls"
        assert (await client.send("GET", "/b", [], b"")).body == b"again"
        assert up.connections == 1  # one, kept alive (the refused one never got past its handshake)
        await client.close()
    finally:
        await up.close()


async def test_at_most_limit_connections_are_opened_and_more_requests_wait_for_one(upstream, monkeypatch) -> None:
    from omproxy.serve.http import upstream as module

    monkeypatch.setattr(module, "LIMIT", 2)
    up, client = await upstream(*(ok(b"%d" % n) for n in range(6)))
    answers = await asyncio.gather(*(client.send("GET", f"/{n}", [], b"") for n in range(6)))
    assert sorted(a.body for a in answers) == [b"%d" % n for n in range(6)]
    assert up.connections == 2 and len(up.requests) == 6


def test_every_client_error_aiohttp_exports_has_a_row_in_the_table() -> None:
    """One table maps aiohttp's client errors (as httpx maps httpcore's); none is left to be a 500."""
    import inspect

    import aiohttp

    from omproxy.serve.http.upstream import FAILURES

    exported = [getattr(aiohttp, name) for name in aiohttp.__all__]
    errors = [e for e in exported if inspect.isclass(e) and issubclass(e, aiohttp.ClientError)]
    assert len(errors) > 10
    for error in errors:
        assert any(issubclass(error, kind) for kind, _ in FAILURES), error
    rows = [kind for kind, _ in FAILURES]
    for i, kind in enumerate(rows):  # a subclass never comes after its base: it would never be reached
        assert not any(issubclass(kind, earlier) for earlier in rows[:i]), kind
