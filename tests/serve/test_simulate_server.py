"""`omproxy simulate` over real sockets."""

from __future__ import annotations

import asyncio

from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM


async def test_story_over_http(aiohttp_client, make_simulator) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE, simulator=make_simulator()))
    resp = await client.post(f"{BASE}/customer-support", data=b"externalId=xy932&userData%5BOrderNumber%5D=A",
                             headers=FORM)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    assert await resp.json() == {"statusCode": 0, "interactionId": "01QG0Q2S5S50G000"}
    got = await (await client.post(f"{BASE}/customer-support/01QG0Q2S5S50G000/get")).json()
    assert got["interactionProperties"]["interactionUserData"] == [
        {"key": "ExternalId", "type": "str", "value": "xy932"}, {"key": "OrderNumber", "type": "str", "value": "A"}]


async def test_health_answers_in_simulate_mode(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    resp = await client.get("/_omproxy/health")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"


async def test_non_post_is_405_never_500(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        resp = await client.request(method, f"{BASE}/s")
        assert resp.status == 405, method
        assert (await resp.json())["statusCode"] == 2


async def test_garbage_bodies_never_answer_500(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))
    bodies = [bytes(range(256)), b"%%%%", b"=" * 1000, b"&" * 1000, b"\x00\xff", "é".encode() * 100]
    for body in bodies:
        for path in ("/s", "/s/X/get", "/s/X/update", "/s/X/stop"):
            resp = await client.post(BASE + path, data=body, headers=FORM)
            assert resp.status == 200, (path, body[:10])
            assert "statusCode" in await resp.json()


async def test_concurrent_creates_get_distinct_ids_and_all_are_readable(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE))

    async def create(i: int) -> str:
        resp = await client.post(f"{BASE}/s", data=f"externalId=e{i}".encode(), headers=FORM)
        return (await resp.json())["interactionId"]

    ids = await asyncio.gather(*(create(i) for i in range(200)))
    assert len(set(ids)) == 200

    async def update_then_get(i: int, iid: str) -> dict:
        await client.post(f"{BASE}/s/{iid}/update", data=f"change%5BN%5D={i}".encode(), headers=FORM)
        return await (await client.post(f"{BASE}/s/{iid}/get")).json()

    replies = await asyncio.gather(*(update_then_get(i, iid) for i, iid in enumerate(ids)))
    for i, reply in enumerate(replies):
        data = {e["key"]: e["value"] for e in reply["interactionProperties"]["interactionUserData"]}
        assert data == {"ExternalId": f"e{i}", "N": str(i)}


async def test_reset_empties_the_simulator_in_simulate_mode(aiohttp_client, make_simulator) -> None:
    """D3: reset answered {"status":"reset"} but left every interaction in place."""
    client = await aiohttp_client(build_app(Config(), Mode.SIMULATE, simulator=make_simulator()))
    iid = (await (await client.post(f"{BASE}/s", data=b"externalId=x", headers=FORM)).json())["interactionId"]
    assert (await (await client.post(f"{BASE}/s/{iid}/get")).json())["statusCode"] == 0
    assert (await client.post("/_omproxy/reset", json={})).status == 200
    assert (await (await client.post(f"{BASE}/s/{iid}/get")).json())["errors"][0]["code"] == 248


async def test_sessions_are_apart_in_simulate_mode_and_with_the_builtin_upstream(aiohttp_client, tmp_path) -> None:
    for mode in (Mode.SIMULATE, Mode.RECORD, Mode.PASSTHROUGH):
        client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / f"{mode.value}.yaml")), mode))
        a = {**FORM, "X-Omproxy-Session": "a"}
        iid = (await (await client.post(f"{BASE}/s", data=b"externalId=x", headers=a)).json())["interactionId"]
        other = await (await client.post(f"{BASE}/s/{iid}/get", headers={"X-Omproxy-Session": "b"})).json()
        assert other["errors"][0]["code"] == 248, mode
        assert (await (await client.post(f"{BASE}/s/{iid}/get", headers=a)).json())["statusCode"] == 0, mode
        await client.post("/_omproxy/reset", json={}, headers={"X-Omproxy-Session": "a"})
        assert (await (await client.post(f"{BASE}/s/{iid}/get", headers=a)).json())["statusCode"] == 2, mode
        await client.close()


async def test_metrics_are_scraped_in_the_prometheus_format(aiohttp_client, tmp_path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = await aiohttp_client(build_app(Config(cassette=str(tmp_path / "c.yaml")), Mode.RECORD))
    await client.post(f"{BASE}/customer-support", data=b"externalId=x&userData%5BA%5D=a b", headers=FORM)
    for i in range(80):  # a scan of random paths: their services collapse into one label
        await client.post(f"{BASE}/random-{i}", data=b"externalId=x", headers=FORM)
    resp = await client.get("/_omproxy/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    requests = families["omproxy_requests"].samples
    created = [s for s in requests if s.labels["service"] == "customer-support" and s.name.endswith("_total")]
    assert created[0].labels == {"mode": "record", "source": "simulator", "operation": "create",
                                 "service": "customer-support", "status": "200"} and created[0].value == 1
    assert len({s.labels["service"] for s in requests}) <= 51
    assert any(s.labels["kind"] == "literal-space" for s in families["omproxy_encoding_findings"].samples)
    assert any(s.name == "omproxy_cassette_append_seconds_count" and s.value == 81
               for s in families["omproxy_cassette_append_seconds"].samples)
    assert any(s.name == "omproxy_upstream_seconds_count" and s.value == 81
               for s in families["omproxy_upstream_seconds"].samples)
