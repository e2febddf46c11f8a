"""The shipped example cassette replays the reference page's story, as the README says."""

from __future__ import annotations

from pathlib import Path

from omproxy.cassette import storage
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM

EXAMPLE = Path(__file__).parent.parent / "cassettes" / "examples" / "reference-story.yaml"


async def test_example_cassette_replays_the_reference_story(aiohttp_client) -> None:
    recorded = storage.load(EXAMPLE)
    client = await aiohttp_client(build_app(Config(cassette=str(EXAMPLE), fallback="none"), Mode.REPLAY))
    for rec in recorded.interactions:
        resp = await client.post(rec.request.path, data=rec.request.body, headers=dict(rec.request.headers))
        assert (resp.status, await resp.read()) == (rec.response.status, rec.response.body)
    assert [r.response.reply["statusCode"] for r in recorded.interactions] == [0, 0, 0, 0, 0, 2]


async def test_readme_off_script_update_against_the_example(aiohttp_client) -> None:
    client = await aiohttp_client(build_app(Config(cassette=str(EXAMPLE)), Mode.REPLAY))
    svc = f"{BASE}/customer-support"
    await client.post(svc, data=b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D="
                                 b"Test+value&userData%5BKeyToDelete%5D=value+to+delete", headers=FORM)
    resp = await client.post(f"{svc}/01QG0Q2S5S50G000/update", data=b"change%5BPriority%5D=high", headers=FORM)
    assert resp.headers["X-Omproxy-Source"] == "simulator"
    got = await (await client.post(f"{svc}/01QG0Q2S5S50G000/get")).json()
    keys = [e["key"] for e in got["interactionProperties"]["interactionUserData"]]
    assert keys == ["ExternalId", "KeyToDelete", "OrderNumber", "Priority", "TestKey2"]
