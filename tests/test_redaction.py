"""Secrets and personal data: pseudonyms that keep a story correlated (record and replay as real
processes, a fake GMS on a real socket), `cassette redact` after the fact, lint that finds what
people leak and can block a commit, and record refusing to write an unredacted secret."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from omproxy.cassette import entry as cassette
from omproxy.cassette import indexcache, storage, yamlformat
from omproxy.cli import main
from omproxy.config.options import Redaction
from omproxy.errors import ConfigError
from omproxy.model import Request, Response, headers_of
from omproxy.redaction import Redactor, leaks, random_looking
from tests.support import BASE, FORM, FakeGms, har_problems

KEY = "k" * 32
PHONE = "+44 7700 900123"
DIGITS = "7700 900123"  # however it is encoded, these must appear nowhere
CONFIG = """
redact:
  pseudonymize: ['userData[Phone]']
  key_file: key
"""
SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "samples" / "field" / "vcr"


def story(iid: str | None = None) -> list[tuple[str, bytes]]:
    """A create with a phone number, its get (GMS echoes it in interactionUserData), an update naming
    it again (spelt another way) and a get after: (path, body)."""
    target = iid or "{id}"
    return [(f"{BASE}/customer-support", b"externalId=x1&userData%5BPhone%5D=%2B44+7700+900123"),
            (f"{BASE}/customer-support/{target}/get", b""),
            (f"{BASE}/customer-support/{target}/update", b"change%5BPhone%5D=%2B44%207700%20900123"),
            (f"{BASE}/customer-support/{target}/get", b"")]


async def start(*args: str, cwd: Path) -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omproxy", *args, "--port", "0", cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    assert "listening on http://" in line, line
    return proc, line.rsplit(" ", 1)[1].strip()


async def stop(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return err.decode()


async def tell(base: str, steps: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The story told through omproxy; the answers. The create's id goes into the paths after it."""
    answers: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        iid = ""
        for path, body in steps:
            async with http.post(base + path.replace("{id}", iid), data=body, headers=FORM) as resp:
                assert resp.status == 200, await resp.text()
                answers.append(await resp.json())
            iid = iid or answers[0]["interactionId"]
    return answers


async def admin(base: str) -> str:
    """What the admin API shows of the exchanges: the journal and the inspector's details."""
    shown = []
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/_omproxy/journal") as resp:
            shown.append(await resp.text())
        for n in range(12):
            async with http.get(f"{base}/_omproxy/exchange?id={n}") as resp:
                if resp.status == 200:
                    shown.append(await resp.text())
    assert len(shown) > 4, "the inspector kept the story's exchanges"
    return "\n".join(shown)


def pseudonyms(text: str) -> set[str]:
    return set(re.findall(r"PSEUDO-[0-9a-f]{12}", text))


async def test_a_pseudonymised_phone_is_nowhere_yet_the_story_correlates_and_replays(aiohttp_server,
                                                                                       tmp_path: Path) -> None:
    fake = FakeGms()
    upstream = str((await aiohttp_server(fake.app)).make_url("")).rstrip("/")
    (tmp_path / "key").write_text(KEY)
    (tmp_path / "config.yaml").write_text(CONFIG)
    proc, base = await start("record", "--upstream", upstream, "--cassette", "c.yaml", "-v", cwd=tmp_path)
    await tell(base, story())
    shown = await admin(base)
    logs = await stop(proc)
    assert b"%5BPhone%5D=%2B44+7700+900123" in fake.received[0]["body"]  # forwarded as the client sent it
    text = (tmp_path / "c.yaml").read_text()
    subprocess.run([sys.executable, "-m", "omproxy", "export", "c.yaml", "--format", "har", "-o", "c.har"],
                   cwd=tmp_path, check=True, capture_output=True)
    har = (tmp_path / "c.har").read_text()
    assert har_problems(json.loads(har)) == []
    cache = "".join(p.read_text(errors="replace") for p in (tmp_path / "cache").rglob("*") if p.is_file())
    for where, seen in (("cassette", text), ("logs", logs), ("journal and inspector", shown), ("HAR", har),
                        ("index cache", cache)):
        assert DIGITS not in seen and "900123" not in seen, where
    # one pseudonym in the create, GMS's echo (both gets) and the update: the story still correlates
    assert len(pseudonyms(text)) == 1, text
    (pseudo,) = pseudonyms(text)
    entries = storage.load(tmp_path / "c.yaml").interactions
    assert entries[0].request.form.get("userData[Phone]") == pseudo
    assert entries[2].request.form.get("change[Phone]") == pseudo
    for get in (entries[1], entries[3]):
        echoed = {d["key"]: d["value"] for d in get.response.reply["interactionProperties"]["interactionUserData"]}
        assert echoed["Phone"] == pseudo
    assert pseudo in logs and pseudo in shown

    # Replay, with no GMS: the same client story (the real number) matches the pseudonymised recordings.
    proc, base = await start("replay", "--cassette", "c.yaml", "--fallback", "none", cwd=tmp_path)
    answers = await tell(base, story())
    logs = await stop(proc)
    assert "from cassette 4" in logs and "missed 0" in logs, logs
    assert answers[1]["interactionProperties"]["interactionId"] == entries[0].response.reply["interactionId"]

    # A second instance with the same key (another folder, another process) makes the same pseudonym.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tmp_path / "key", other / "key")
    shutil.copy(tmp_path / "config.yaml", other / "config.yaml")
    proc, base = await start("record", "--upstream", upstream, "--cassette", "c.yaml", cwd=other)
    await tell(base, story())
    await stop(proc)
    assert pseudonyms((other / "c.yaml").read_text()) == {pseudo}


async def test_record_refuses_to_start_without_the_pseudonyms_key(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("redact:\n  pseudonymize: ['userData[Phone]']\n")
    env = {k: v for k, v in os.environ.items() if k != "OMPROXY_REDACT_KEY"}
    done = subprocess.run([sys.executable, "-m", "omproxy", "record", "--upstream", "builtin", "--port", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "redact.pseudonymize needs a secret key" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "key").write_text("short")
    (tmp_path / "config.yaml").write_text(CONFIG)
    done = subprocess.run([sys.executable, "-m", "omproxy", "record", "--upstream", "builtin", "--port", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "16 at least" in done.stderr and "short" not in done.stderr


def test_the_key_comes_from_the_environment_and_the_same_value_gets_the_same_pseudonym(monkeypatch) -> None:
    monkeypatch.setenv("OMPROXY_REDACT_KEY", KEY)
    one = Redactor(Redaction(pseudonymize=("userData[Phone]",)))
    two = Redactor(Redaction(pseudonymize=("userData[Phone]",)))
    assert one.pseudonym(PHONE) == two.pseudonym(PHONE) != one.pseudonym("+44 7700 900124")
    assert one.pseudonym(one.pseudonym(PHONE)) == one.pseudonym(PHONE)  # idempotent
    monkeypatch.setenv("OMPROXY_REDACT_KEY", "another key, 16 bytes or more")
    assert Redactor(Redaction(pseudonymize=("userData[Phone]",))).pseudonym(PHONE) != one.pseudonym(PHONE)
    monkeypatch.delenv("OMPROXY_REDACT_KEY")
    with pytest.raises(ConfigError):
        Redactor(Redaction(pseudonymize=("userData[Phone]",)))


# ---- cassette redact: after the fact -------------------------------------------------------

SECRET = "s3cr3t-Value-9"


def leaky(path: Path) -> Path:
    """A cassette recorded without rules, holding SECRET in every place: the raw body and the form
    view, the query, a request header, an answer header, a JSON answer field and GMS's echo."""
    req = Request("POST", f"{BASE}/customer-support", f"token={SECRET}&page=1",
                  headers_of({"Content-Type": "application/x-www-form-urlencoded", "X-Api-Key": SECRET}),
                  f"userData%5BSecretNote%5D={SECRET}&externalId=x1".encode())
    answer = {"statusCode": 0, "interactionId": "01QG0Q255S50G000", "session": SECRET,
              "interactionUserData": [{"key": "SecretNote", "type": "str", "value": SECRET}]}
    resp = Response(200, json.dumps(answer).encode(), headers_of({"Content-Type": "application/json",
                                                                  "X-Session-Token": SECRET}))
    clean = Request("POST", f"{BASE}/customer-support/01QG0Q255S50G000/get", "",
                    headers_of({"Content-Type": "application/x-www-form-urlencoded"}), b"")
    path.write_bytes(b"# recorded by omproxy (provenance)\n" + yamlformat.HEADER.encode() + b"".join(
        yamlformat.dump_entry(cassette.to_entry(q, r, 1.0, "2026-12-01T10:00:00.000Z"))
        for q, r in ((req, resp), (clean, Response(200, b'{"statusCode":0}')))))
    return path


RULES = """
redact:
  headers: [X-Api-Key, X-Session-Token]
  form_keys: ['userData[SecretNote]', token]
  json_fields: [session]
"""


def redact(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["cassette", "redact", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cassette_redact_removes_the_value_everywhere_by_key_atomically_and_idempotently(tmp_path, capsys) -> None:
    path = leaky(tmp_path / "c.yaml")
    (tmp_path / "rules.yaml").write_text(RULES)
    before = path.read_bytes()
    code, out, err = redact(capsys, str(path), "--config", str(tmp_path / "rules.yaml"))
    assert code == 0 and path.read_bytes() == before  # a dry run by default
    assert "--write" in err and SECRET not in out + err
    said = {line.split(": #0 ", 1)[1] for line in out.splitlines()}
    assert said == {"request header X-Api-Key: masked", "query token: masked", "form userData[SecretNote]: masked",
                    "response header X-Session-Token: masked", "answer session: masked",
                    "answer interactionUserData[SecretNote]: masked"}, said
    code, out, err = redact(capsys, str(path), "--config", str(tmp_path / "rules.yaml"), "--write")
    assert code == 0
    after = path.read_text()
    assert SECRET not in after
    assert after.startswith("# recorded by omproxy (provenance)\n")  # its provenance kept
    assert before.split(b"\n- ")[2] == path.read_bytes().split(b"\n- ")[2]  # the clean entry byte for byte
    got = storage.load(path).interactions
    assert got[0].request.form.get("externalId") == "x1" and got[0].recorded_at == "2026-12-01T10:00:00.000Z"
    assert storage.in_layout(path.read_bytes(), yamlformat.entry_starts(path.read_bytes()))  # appendable still
    again = path.read_bytes()
    code, out, err = redact(capsys, str(path), "--config", str(tmp_path / "rules.yaml"), "--write")
    assert (code, out, path.read_bytes()) == (0, "", again) and "nothing to change" in err


def test_cassette_redact_pseudonymises_and_forgets_the_index_cache(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OMPROXY_REDACT_KEY", KEY)
    monkeypatch.setattr(indexcache, "MIN_SIZE", 0)  # every cassette remembered, as a big capture is
    path = leaky(tmp_path / "c.yaml")
    storage.load(path)
    assert any(SECRET in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    (tmp_path / "rules.yaml").write_text("redact:\n  pseudonymize: ['userData[SecretNote]']\n")
    code, out, _ = redact(capsys, str(path), "--config", str(tmp_path / "rules.yaml"), "--write")
    assert code == 0 and "form userData[SecretNote]: pseudonymised" in out
    assert "answer interactionUserData[SecretNote]: pseudonymised" in out
    text = path.read_text()
    # left for the masks' rules: the query, two headers, the answer's `session` (in its body and its view)
    assert len(pseudonyms(text)) == 1 and text.count(SECRET) == 5
    assert not any(SECRET in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_a_failed_cassette_redact_leaves_the_file_as_it_was(tmp_path, capsys) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        path = leaky(disk / "c.yaml")
        with (disk / "filler").open("wb", buffering=0) as f, pytest.raises(OSError, match="No space"):
            while True:  # the disk filled: the rewrite cannot be written beside the cassette
                f.write(b"x" * 4096)
        (tmp_path / "rules.yaml").write_text(RULES)
        before = path.read_bytes()
        code = main(["cassette", "redact", str(path), "--config", str(tmp_path / "rules.yaml"), "--write"])
        _, err = capsys.readouterr()
        assert code == 2 and "left as it was" in err and SECRET not in err
        assert path.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["c.yaml", "filler"]  # no temporary file left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---- lint: what people leak ----------------------------------------------------------------

def test_lint_flags_a_password_in_an_imported_vcr_cassette_and_an_api_key_header(tmp_path, capsys) -> None:
    # The Mastodon.py cassette's shape, with its login's form (a password in clear), as VCR.py wrote it.
    raw = (SAMPLES / "mastodonpy-test_push_set.yaml").read_text()
    login = "grant_type=password&username=admin%40localhost&password=mastodonadmin&scope=read+write"
    vcr = tmp_path / "login.yaml"
    vcr.write_text(re.sub(r"(?m)^    body: subscription.*$", f"    body: {login}", raw, count=1))
    assert main(["import", str(vcr), "-o", str(tmp_path / "imported.yaml")]) == 0
    capsys.readouterr()
    code = main(["lint", str(tmp_path / "imported.yaml"), "--fail-on", "secret"])
    out, err = capsys.readouterr()
    assert code == 1, out
    assert "form password: named like a secret" in out and "mastodonadmin" not in out + err
    assert "unredacted-secret" in out and "of them a secret in clear" in err

    req = Request("POST", f"{BASE}/customer-support/01QG0Q255S50G000/get", "",
                  headers_of({"X-Api-Key": "abc123", "Content-Type": "application/x-www-form-urlencoded"}), b"")
    clean = tmp_path / "api.yaml"
    clean.write_bytes(yamlformat.HEADER.encode() + yamlformat.dump_entry(cassette.to_entry(
        req, Response(200, b'{"statusCode":0}'), 1.0)))
    code = main(["lint", str(clean), "--fail-on", "secret"])
    out, _ = capsys.readouterr()
    assert code == 1 and "header X-Api-Key: a header that carries secrets" in out and "abc123" not in out


def test_fail_on_secret_passes_other_findings(tmp_path, capsys) -> None:
    req = Request("POST", f"{BASE}/customer-support/01QG0Q255S50G000/get", "", FORM_HEADERS, b"")
    path = tmp_path / "c.yaml"
    path.write_bytes(yamlformat.HEADER.encode() + yamlformat.dump_entry(cassette.to_entry(
        req, Response(503, b"busy"), 1.0)))
    assert main(["lint", str(path)]) == 1  # a server error recorded: a finding
    assert main(["lint", str(path), "--fail-on", "secret"]) == 0  # but not a secret
    assert "server-error" in capsys.readouterr().out


FORM_HEADERS = headers_of({"Content-Type": "application/x-www-form-urlencoded"})


@pytest.mark.parametrize(("header", "secret"), [
    ("X-Api-Key", True), ("Api-Key", True), ("X-Auth-Token", True), ("X-Refresh-Token", True),
    ("Client-Secret", True), ("X-Signing-Key", True), ("Authorization", True),
    ("Idempotency-Key", False), ("X-Request-Id", False), ("Content-Type", False), ("Keep-Alive", False)])
def test_header_names_that_carry_secrets(header, secret) -> None:
    req = Request("POST", "/x", "", headers_of({header: "value-1"}), b"")
    assert bool(leaks(req)) is secret


@pytest.mark.parametrize(("body", "found"), [
    (b"password=hunter2", ["form password"]), (b"passwd=x", ["form passwd"]),
    (b"client_secret=x", ["form client_secret"]),
    (b"refresh_token=x", ["form refresh_token"]), (b"userData%5BToken%5D=x", ["form userData[Token]"]),
    (b"userData%5BCard%5D=4111111111111111", ["form userData[Card]"]),
    (b"userData%5BKey%5D=NNhKMYXSMSEyZlXls8jI8A%3D%3D", ["form userData[Key]"]),  # a random-looking value
    (b"userData%5BOrder%5D=MyCompanyOrderNumber12345", []), (b"userData%5BNote%5D=Test+value", []),
    (b"password=REDACTED", []), (b"password=", []), (b"externalId=01QG0Q255S50G000", []),
    (b"userData%5BPhone%5D=PSEUDO-0123456789ab", [])])
def test_form_keys_and_values_that_look_like_secrets(body, found) -> None:
    req = Request("POST", "/x", "", FORM_HEADERS, body)
    assert [leak.where for leak in leaks(req)] == found


def test_answers_and_queries_are_checked_too() -> None:
    req = Request("POST", "/x", "access_token=abc&page=2", FORM_HEADERS, b"")
    resp = Response(200, json.dumps({"statusCode": 0, "auth": {"refresh_token": "r"}, "interactionUserData": [
        {"key": "Password", "type": "str", "value": "p"}, {"key": "Order", "type": "str", "value": "A1"}],
        "id": "01QG0Q255S50G000"}).encode(), headers_of({"Set-Cookie": "sid=1"}))
    assert {leak.where for leak in leaks(req, resp)} == {
        "query access_token", "response header Set-Cookie", "answer auth.refresh_token",
        "answer interactionUserData[Password]"}


def test_random_looking_tells_tokens_from_words_and_ids() -> None:
    assert random_looking("BLcSMNjxDR3vLP3RglYJM9QPaxip8f7MijHqKIEC5441JdPjH+qY+0mdKUw7if8GbqWxhaxVm8THBSUffsdSx0M=")
    for plain in ("01QG0Q255S50G000", "b72c00ba-4c6a-475f-846a-a88fb6ac74eb", "CustomerReferenceNumber2026XY",
                  "2026-12-01T10:00:00.000Z", "PSEUDO-0123456789ab", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"):
        assert not random_looking(plain), plain


def test_the_repository_offers_a_pre_commit_hook_that_blocks_on_secrets() -> None:
    import yaml

    hooks = yaml.safe_load((Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "omproxy-lint-secrets" and hook["entry"] == "omproxy lint --fail-on secret"
    assert hook["language"] == "python" and re.search(hook["files"], "tests/cassettes/test_x/story.yaml")


# ---- redact.block_on: secret, before the write ---------------------------------------------

async def test_block_on_secret_answers_but_does_not_record_and_says_which_key(aiohttp_server, tmp_path) -> None:
    fake = FakeGms()
    upstream = str((await aiohttp_server(fake.app)).make_url("")).rstrip("/")
    (tmp_path / "config.yaml").write_text("redact:\n  block_on: secret\n")
    proc, base = await start("record", "--upstream", upstream, "--cassette", "c.yaml", cwd=tmp_path)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}{BASE}/customer-support", headers=FORM,
                             data=b"externalId=x1&userData%5BPassword%5D=hunter2hunter2") as resp:
            assert resp.status == 200 and (await resp.json())["statusCode"] == 0  # answered all the same
        async with http.post(f"{base}{BASE}/customer-support", headers=FORM, data=b"externalId=x2") as resp:
            assert resp.status == 200
    logs = await stop(proc)
    assert "NOT RECORDED (unredacted secret in form userData[Password])" in logs, logs
    assert "hunter2" not in logs
    assert "not recorded (unredacted secret) 1" in logs
    got = storage.load(tmp_path / "c.yaml").interactions
    assert [r.request.form.get("externalId") for r in got] == ["x2"]


def test_16_a_cassette_scrubbed_by_hand_leaves_no_old_copy_in_the_index_cache(tmp_path, monkeypatch) -> None:
    """Reliability finding 16: the index cache, named by content, kept the old values of a cassette
    edited by hand; now the next read of that path removes what its earlier content left there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(indexcache, "MIN_SIZE", 0)
    path = leaky(tmp_path / "c.yaml")
    storage.load(path)
    assert any(SECRET in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    path.write_text(path.read_text().replace(SECRET, "scrubbed-by-hand"))  # an editor, not omproxy
    storage.load(path)
    assert not any(SECRET in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
