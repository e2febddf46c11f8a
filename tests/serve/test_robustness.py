"""Arbitrary requests through `record` (builtin upstream): never a 500, every answer recorded, and
the cassette always loads back. Seeded, so a failure reproduces."""

from __future__ import annotations

import random

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app

SEGMENTS = ["genesys", "2", "openmedia", "customer-support", "01QG0Q2S5S50G000", "get", "update", "stop", "..",
            "%2F", "%00", "%zz", "é", "a b", "%252F", "", "_omproxy"]
TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=ISO-8859-1",
         "application/x-www-form-urlencoded; charset=bogus", "application/json", "multipart/form-data; boundary=x",
         "text/plain", ""]


def random_body(rnd: random.Random) -> bytes:
    kind = rnd.randrange(4)
    if kind == 0:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
    parts = []
    for _ in range(rnd.randrange(6)):
        key = rnd.choice(["externalId", "userData%5BK%5D", "change[K]", "delete%5BK%5D", "searchByExternalId",
                          "reason%3DRSN", "userData%5B", "%zz", "k k", "\u00e9"])
        value = rnd.choice(["v", "a+b", "a b", "%FF", "%", "true", "x" * rnd.randrange(50), "\u2028", "'\"{}"])
        parts.append(f"{key}={value}")
    return "&".join(parts).encode("utf-8")


async def test_random_requests_never_500_and_all_are_recorded(aiohttp_client, tmp_path) -> None:
    rnd = random.Random(20261128)
    target = tmp_path / "fuzz.yaml"
    client = await aiohttp_client(build_app(Config(cassette=str(target)), Mode.RECORD))
    recorded = 0
    for _ in range(300):
        path = "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randrange(1, 7)))
        if path.startswith(("/_omproxy", "//")):  # ours / not a path the test client can send
            continue
        headers = {"Content-Type": rnd.choice(TYPES)} if rnd.random() < 0.9 else {}
        method = rnd.choice(["POST", "POST", "POST", "GET", "PUT"])
        resp = await client.request(method, path, data=random_body(rnd), headers=headers,
                                    skip_auto_headers=["Content-Type"])
        assert resp.status != 500, (method, path, await resp.text())
        assert "statusCode" in await resp.json(content_type=None)
        recorded += 1
    loaded = storage.load(target)
    assert loaded.dropped is None
    assert len(loaded.interactions) == recorded


async def test_random_requests_in_replay_never_500(aiohttp_client) -> None:
    from pathlib import Path

    example = Path(__file__).parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"
    rnd = random.Random(28112026)
    for fallback in ("simulator", "none"):
        client = await aiohttp_client(build_app(Config(cassette=str(example), fallback=fallback), Mode.REPLAY))
        for _ in range(150):
            path = "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randrange(1, 7)))
            if path.startswith(("/_omproxy", "//")):
                continue
            resp = await client.request(rnd.choice(["POST", "POST", "GET"]), path, data=random_body(rnd),
                                        headers={"Content-Type": rnd.choice(TYPES), "X-Omproxy-Session":
                                                 rnd.choice(["", "a", "b"])}, skip_auto_headers=["Content-Type"])
            assert resp.status in (200, 404, 405), (path, await resp.text())
            assert "statusCode" in await resp.json(content_type=None)
