"""What a production capture keeps: record.only / record.skip, and sampling that keeps each story whole
(its create and everything naming its id), the same stories on every instance with one seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from omproxy.cassette import storage
from omproxy.config.faults import matches_of
from omproxy.config.options import Config, Mode
from omproxy.serve.http.front import build_app
from tests.support import BASE, FORM, FakeGms

SVC = f"{BASE}/customer-support"


async def stories(client, n: int, external: str = "s{i}") -> None:
    for i in range(n):
        created = await (await client.post(SVC, data=f"externalId={external.format(i=i)}".encode(),
                                           headers=FORM)).json()
        iid = created["interactionId"]
        await client.post(f"{SVC}/{iid}/get")
        await client.post(f"{SVC}/{iid}/update", data=b"change%5BA%5D=1", headers=FORM)
        await client.post(f"{SVC}/{iid}/stop")


def kept(path: Path) -> dict[str, list[str]]:
    """Per interaction id, the operations recorded."""
    out: dict[str, list[str]] = {}
    for rec in storage.load(path).interactions:
        op = rec.request.operation
        assert op is not None
        iid = op.id or json.loads(rec.response.body)["interactionId"]
        out.setdefault(iid, []).append(op.kind)
    return out


async def test_sampling_keeps_whole_stories_and_counts_the_rest(aiohttp_client, gms, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(path), sample_rate=0.3),
                                            Mode.RECORD))
    await stories(client, 120)
    counts = (await (await client.get("/_omproxy/journal")).json())["counts"]
    await client.close()
    got = kept(path)
    assert all(ops == ["create", "get", "update", "stop"] for ops in got.values())  # never a part of one
    assert 12 <= len(got) <= 60  # about 36 of 120
    assert counts["recorded"] == 4 * len(got) and counts["not sampled"] == 4 * (120 - len(got))
    assert counts["forwarded"] == 480  # every exchange answered by GMS all the same


async def test_instances_with_one_seed_keep_the_same_stories(aiohttp_client, aiohttp_server, tmp_path) -> None:
    sets = []
    for n in range(2):
        fake = FakeGms()  # each GMS hands out the same ids: the same stories
        server = await aiohttp_server(fake.app)
        path = tmp_path / f"c{n}.yaml"
        client = await aiohttp_client(build_app(Config(upstream=str(server.make_url("")).rstrip("/"),
                                                       cassette=str(path), sample_rate=0.5, sample_seed="prod"),
                                                Mode.RECORD))
        await stories(client, 30)
        await client.close()
        sets.append(set(kept(path)))
    assert sets[0] == sets[1] and 0 < len(sets[0]) < 30


async def test_sampling_by_external_id_keeps_every_interaction_of_one_external_id(aiohttp_client, gms,
                                                                                   tmp_path) -> None:
    path = tmp_path / "c.yaml"
    client = await aiohttp_client(build_app(Config(upstream=gms.url, cassette=str(path), sample_rate=0.5,
                                                   sample_by="external_id"), Mode.RECORD))
    for _ in range(2):  # each external id gets two interactions
        await stories(client, 40, external="order-{i}")
    await client.close()
    by_external: Counter[str] = Counter()
    for rec in storage.load(path).interactions:
        if rec.request.form.get("externalId"):
            by_external[rec.request.form.get("externalId") or ""] += 1
    assert by_external and set(by_external.values()) == {2}  # both creates of an external id, or none
    assert all(ops == ["create", "get", "update", "stop"] for ops in kept(path).values())


async def test_only_and_skip_choose_what_is_recorded_and_forward_everything(aiohttp_client, gms, tmp_path) -> None:
    path = tmp_path / "c.yaml"
    client = await aiohttp_client(build_app(Config(
        upstream=gms.url, cassette=str(path), record_only=matches_of("only", [{"service": "customer-support"}]),
        record_skip=matches_of("skip", [{"operation": "get"}])), Mode.RECORD))
    await stories(client, 2)
    assert (await client.post(f"{BASE}/billing", data=b"externalId=b", headers=FORM)).status == 200
    counts = (await (await client.get("/_omproxy/journal")).json())["counts"]
    await client.close()
    assert [ops for ops in kept(path).values()] == [["create", "update", "stop"]] * 2
    assert counts["filtered out"] == 3 and len(gms.received) == 9
