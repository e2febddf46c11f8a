"""The command line as a user meets it: decode, exit codes, bad config, a real server process."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from omproxy.cli import main
from omproxy.model import Request

STOP_PATH = "/genesys/2/openmedia/customer-support/01QG0Q255S50G000/stop"


def test_decode_explains_the_double_encoded_stop(capsys) -> None:
    code = main(["decode", "reason%3DRSN-123%26description%3DORDER%2BCANCELLED", "--path", STOP_PATH])
    out = capsys.readouterr().out
    assert code == 1
    assert "double-encoded" in out
    assert "did you mean 'reasonSystemName'" in out
    assert "did you mean 'reasonDescription'" in out
    fixed = ("correctly encoded, the body would read (renamed as the findings suggest: reason -> reasonSystemName, "
             "description -> reasonDescription):\n  reasonSystemName=RSN-123&reasonDescription=ORDER+CANCELLED")
    assert out.rstrip().endswith(fixed)
    assert "GMS will not see 'reasonSystemName' (meant 'RSN-123')" in out


def test_decode_clean_body_exits_0(capsys) -> None:
    assert main(["decode", "externalId=xy932&userData%5BOrderNumber%5D=ABC",
                 "--path", "/genesys/2/openmedia/s"]) == 0
    assert "findings: none" in capsys.readouterr().out


@pytest.mark.parametrize("body,path,kind", [
    ("externalId=xy932&userData%5BKeyToDelete%5D=value to delete", "/genesys/2/openmedia/s", "literal-space"),
    ("change%5BOrderNumber%5D=uABC123456789", "/genesys/2/openmedia/s/ID/update", "python-repr"),
    ("userData%5B0rderNumber%5D=ABC123456789", "/genesys/2/openmedia/s", "zero-for-o"),
    ("change%5BA%5D=1", "genesys/2/openmedia/test/0000KaA0C8XH003Y/stop", "path-without-slash"),
], ids=["literal-space", "python-repr", "zero-for-o", "path-without-slash"])
def test_decode_json_names_each_reference_defect(capsys, body, path, kind) -> None:
    assert main(["decode", body, "--path", path, "--json"]) == 1
    assert kind in [f["kind"] for f in json.loads(capsys.readouterr().out)["findings"]]


def test_decode_reads_stdin(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a=1&a=2\n")))
    assert main(["decode", "-"]) == 1
    assert "conflicting-duplicate" in capsys.readouterr().out


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omproxy", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


@pytest.mark.parametrize("content,message", [
    ("match:\n  ignore: 3\n", "match.ignore: expected a list of strings"),
    ("match:\n  on: [method, body]\n", "match.on: expected one of"),
    ("prot: 1\n", "prot: unknown key — did you mean 'port'?"),
    ("port: [\n", "not valid YAML"),
    ("simulator:\n  sections:\n    billing: {}\n", "simulator.sections.billing"),
], ids=["ignore-not-list", "unknown-matcher", "typo-key", "bad-yaml", "bad-section"])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    out = run("simulate", "--config", str(cfg))
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_missing_config_file_and_bad_flag_exit_2(tmp_path: Path) -> None:
    out = run("simulate", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "config file not found" in out.stderr
    out = run("simulate", "--port", "eighty")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_shipped_config_is_valid_and_on_parses_as_a_key() -> None:
    from omproxy.config.file import load

    config = load(Path(__file__).parent.parent / "config.yaml")
    assert config.match.on == ("method", "path", "query", "form")
    assert config.sections["openmedia.customer-support"] == {"allow_overwrite": True}


def test_every_option_has_a_commented_line_in_config_yaml_with_its_default() -> None:
    """Options are declared once (config.OPTIONS); the shipped file documents each, at its default."""
    import dataclasses

    from omproxy import yamlsafe
    from omproxy.config.file import load
    from omproxy.config.options import OPTIONS, Config

    path = Path(__file__).parent.parent / "config.yaml"
    lines = path.read_text().splitlines()
    data = yamlsafe.load(path.read_text())  # YAML 1.2 booleans: `on:` is a key
    for option in OPTIONS:
        head, _, tail = option.key.partition(".")
        assert head in data and (not tail or tail in data[head]), option.key
        name = tail or head
        assert any(line.strip().startswith(f"{name}:") and "#" in line for line in lines), option.key
    shipped, default = load(path), Config()
    for f in dataclasses.fields(Config):
        if f.name not in ("sections", "source", "cassette", "given"):
            assert getattr(shipped, f.name) == getattr(default, f.name), f.name


@pytest.mark.parametrize("args,message", [
    (["simulate", "--port", "99999"], "between 0 and 65535"),
    (["record", "--upstream-timeout", "0"], "more than 0"),
    (["record", "--upstream-timeout", "nan"], "number of seconds"),
    (["replay", "--fallback", "maybe"], "simulator, none"),
    (["simulate", "--log-format", "xml"], "text, json"),
])
def test_a_bad_flag_is_one_line_and_exit_2_by_the_same_rule_as_the_file(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_each_mode_offers_only_the_flags_it_honours(capsys) -> None:
    for mode, absent, present in (("auto", ("--fallback", "--repeat"), ("--upstream", "--cassette")),
                                  ("simulate", ("--upstream", "--cassette", "--fallback"), ("--port",)),
                                  ("replay", ("--upstream",), ("--fallback", "--repeat", "--cassette"))):
        with pytest.raises(SystemExit):
            main([mode, "--help"])
        out = capsys.readouterr().out
        assert all(flag not in out for flag in absent) and all(flag in out for flag in present), mode


def start_server(*args: str, cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "omproxy", *args, "--port", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)  # the ready line, or fail within 30 s
    assert ready, "no ready line within 30 s"
    line = proc.stdout.readline()
    assert " listening on http://127.0.0.1:" in line, proc.stderr.read() if proc.stderr else line
    return proc, line.rsplit(" ", 1)[1].strip()


def post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_simulate_process_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc, base = start_server("simulate", cwd=tmp_path)
    try:
        with urllib.request.urlopen(base + "/_omproxy/health", timeout=10) as resp:
            assert json.loads(resp.read())["mode"] == "simulate"
        assert post(base + "/genesys/2/openmedia/customer-support", b"externalId=xy932")["statusCode"] == 0
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "summary: simulated 1" in err
    assert "Traceback" not in err


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    proc, base = start_server("simulate", cwd=tmp_path)
    try:
        port = base.rsplit(":", 1)[1]
        out = subprocess.run([sys.executable, "-m", "omproxy", "simulate", "--port", port], capture_output=True,
                             text=True, timeout=30, cwd=tmp_path, env={**os.environ})
        assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
        story = Path(__file__).resolve().parent.parent / "cassettes" / "examples" / "reference-story.yaml"
        out = subprocess.run([sys.executable, "-m", "omproxy", "replay", "--port", port, "--cassette", str(story)],
                             capture_output=True, text=True, timeout=30, cwd=tmp_path, env={**os.environ})
        assert out.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
        assert "never played" not in out.stderr, out.stderr  # D24: a start that failed served nothing
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.parametrize("upstream", ["gms.example:8080", "ftp://gms", "http://", "http://gms?x=1"])
def test_bad_upstream_is_a_usage_error(tmp_path: Path, upstream: str) -> None:
    out = run("record", "--upstream", upstream, cwd=tmp_path)
    assert out.returncode == 2
    assert "--upstream: expected 'builtin' or a GMS base URL" in out.stderr


def test_decode_takes_the_arguments_raw_bytes_even_when_they_are_not_utf8(tmp_path: Path) -> None:
    body = b"externalId=x1&userData[Name]=M\xfcller"
    out = subprocess.run([sys.executable, "-m", "omproxy", "decode", body], capture_output=True, timeout=60)
    assert out.returncode == 1 and b"Traceback" not in out.stderr, out.stderr
    assert b"invalid-charset" in out.stdout or b"unencoded-character" in out.stdout


@pytest.mark.parametrize("target", ["config.yaml", "notes.txt"])
def test_record_refuses_a_file_that_is_not_a_cassette_and_leaves_it_alone(tmp_path: Path, target: str) -> None:
    victim = tmp_path / target
    victim.write_text("port: 8080\n" if target == "config.yaml" else "just notes\n")
    before = victim.read_bytes()
    out = run("record", "--cassette", str(victim), "--port", "0", "--config", str(_empty(tmp_path)))
    assert out.returncode == 2 and str(victim) in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert victim.read_bytes() == before


def test_record_checks_at_start_that_it_can_write(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run("record", "--cassette", str(blocker / "sub" / "c.yaml"), "--port", "0", "--config", str(_empty(tmp_path)))
    assert out.returncode == 2 and "cannot record here" in out.stderr
    # D25: as root every access check passes; the check makes a file and removes it
    out = run("record", "--cassette", "/proc/x.yaml", "--port", "0", "--config", str(_empty(tmp_path)))
    assert out.returncode == 2 and "/proc: cannot record here" in out.stderr


@pytest.mark.parametrize("spec,message", [("", "non-empty string"), ("  ", "non-empty string")])
def test_an_empty_cassette_spec_is_a_usage_error(tmp_path: Path, spec: str, message: str) -> None:
    out = run("record", "--cassette", spec, "--port", "0", "--config", str(_empty(tmp_path)))
    assert out.returncode == 2 and message in out.stderr


def test_paths_in_a_config_file_are_relative_to_its_folder(tmp_path: Path) -> None:
    from omproxy.config.file import load

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.yaml").write_text("cassette: recordings/{service}.yaml\n")
    config = load(elsewhere / "config.yaml", {})
    assert config.cassette == str(elsewhere / "recordings" / "{service}.yaml")
    assert load(elsewhere / "config.yaml", {"cassette": "mine.yaml"}).cassette == "mine.yaml"  # flags: the cwd


def test_help_and_decode_do_not_import_the_server() -> None:
    code = "import sys; from omproxy.cli import main; main(['decode', 'a=1']); print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty-config.yaml"
    path.write_text("{}\n")
    return path


def test_the_start_up_line_says_where_recordings_go_and_which_state() -> None:
    """D23: with a shared state, record said `recording to cassettes/{service}.yaml`, where nothing went."""
    from omproxy.cli import startup_line
    from omproxy.config.options import Config, Mode

    shared = startup_line(Config(state="redis://:s3cret@redis.example:6379/0", state_namespace="ci"), Mode.RECORD)
    assert "recording to the shared state's stream omproxy:ci:recorded" in shared
    assert "state redis://redis.example:6379/0" in shared and "s3cret" not in shared
    assert "cassettes/{service}.yaml" not in shared
    alone = startup_line(Config(), Mode.RECORD)
    assert "recording to cassettes/{service}.yaml" in alone and alone.endswith("state memory")


@pytest.mark.parametrize(("argv", "said"), [
    (["record", "--prot", "8080"], "omproxy record: error: --prot: did you mean --port? (see omproxy record --help)"),
    (["verify", "--junit", "x.xml"], "--junit: here it is --report"),
    (["auto", "--fallback", "none"], "--fallback is a flag of replay, not of auto (auto forwards what no recording"),
    (["recrod"], "did you mean 'record'?"),
    (["lint", "x.yaml", "--fial-on", "secret"], "--fial-on: did you mean --fail-on?")])
def test_d27_a_mistyped_flag_or_command_gets_its_command_and_a_hint(argv, said, capsys) -> None:
    with contextlib.suppress(SystemExit):
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err


def test_d27_friction_a_config_as_cassette_the_help_a_broken_pipe(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("port: 8080\nhost: 127.0.0.1\n")
    assert main(["inspect", str(config)]) == 2
    assert "not a cassette: it has neither 'version' nor 'interactions' (its keys: port, host)" in \
        capsys.readouterr().err
    with contextlib.suppress(SystemExit):
        main(["--help"])
    assert "merge, pull, accept, prune, dedup, redact" in " ".join(capsys.readouterr().out.split())
    from omproxy.cassette import entry as cassette
    from omproxy.cassette import yamlformat
    from omproxy.model import Response

    big = tmp_path / "big.yaml"
    one = yamlformat.dump_entry(cassette.to_entry(Request("POST", "/genesys/2/openmedia/s/ID/get"),
                                                  Response(200, b'{"statusCode":0}' + b" " * 2000), 1.0))
    big.write_bytes(yamlformat.HEADER.encode() + one * 2000)
    proc = subprocess.Popen([sys.executable, "-m", "omproxy", "export", str(big), "--format", "har", "-o",
                             "/dev/stdout"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stdout.read(10)
    proc.stdout.close()  # `| head -c 10`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Broken pipe" not in err and b"Traceback" not in err, err


def test_inspect_filters_on_gms_status_and_merge_refuses_a_file_twice(tmp_path: Path, capsys) -> None:
    story = Path(__file__).resolve().parent.parent / "cassettes" / "examples" / "reference-story.yaml"
    assert main(["inspect", str(story), "--gms-status", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["statusCode"] for r in rows] == [2] and rows[0]["status"] == 200  # the 248 after the stop
    assert main(["cassette", "merge", str(story), str(story), "-o", str(tmp_path / "m.yaml")]) == 2
    assert "given twice" in capsys.readouterr().err and not (tmp_path / "m.yaml").exists()
