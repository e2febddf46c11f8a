"""The pytest plugin, run by pytest's own pytester in subprocesses: a sync and an async test replay
offline, a miss fails with the report, record mode records against the repo's fake GMS, tests sharing a
cassette do not see each other's state, and two xdist workers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from omproxy.cassette import storage
from tests.support import FakeGms, ThreadedApp

STORY = Path(__file__).resolve().parent.parent / "cassettes" / "examples" / "reference-story.yaml"
CREATE = (b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
          b"&userData%5BKeyToDelete%5D=value+to+delete")
UPDATE = b"change%5BOrderNumber%5D=ABC123456780&change%5BTestKey2%5D=Test+value+2&delete%5BKeyToDelete%5D="
STOP = b"reasonSystemName=RSN-123&reasonDescription=ORDER+CANCELLED"
HELPERS = f'''
import json, urllib.request
import aiohttp
import pytest

STORY = {str(STORY)!r}
CREATE = {CREATE!r}
BODIES = {{"update": {UPDATE!r}, "stop": {STOP!r}}}
SVC = "/genesys/2/openmedia/customer-support"

def post(url, body=b""):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={{"Content-Type": "application/x-www-form-urlencoded"}})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_sync_and_async_tests_replay_offline_each_in_its_own_session(project) -> None:
    project.makepyfile(test_story=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_sync_story(omproxy_url):
            status, created = post(omproxy_url + SVC, CREATE)
            assert (status, created["interactionId"]) == (200, "01QG0Q2S5S50G000")
            status, got = post(omproxy_url + SVC + "/01QG0Q2S5S50G000/get")
            assert got["statusCode"] == 0

        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_same_cassette_starts_from_the_beginning_again(omproxy_url):
            status, got = post(omproxy_url + SVC + "/01QG0Q2S5S50G000/get")
            assert got["interactionProperties"]["interactionUserData"][2]["value"] == "ABC123456789"

        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        async def test_async_story(omproxy_url):
            async with aiohttp.ClientSession() as http:
                async with http.post(omproxy_url + SVC, data=CREATE,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                    assert (await r.json())["interactionId"] == "01QG0Q2S5S50G000"
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*omproxy*", f"replay {STORY}, fallback none: from cassette 4, simulated 0*"])


def test_a_miss_with_fallback_none_fails_the_test_with_the_report(project) -> None:
    project.makepyfile(test_miss=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_off_script(omproxy_url):
            post(omproxy_url + SVC, b"externalId=someone-else")
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*1 request(s) matched no recording*", "*externalId: recorded 'xy932', received "
                                 "'someone-else'*"])


def test_a_miss_followed_by_many_requests_still_fails_its_test(project) -> None:
    """Misses are counted per session, never looked for among the recent exchanges (a ring of 200)."""
    project.makepyfile(test_busy=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_off_script_then_busy(omproxy_url):
            post(omproxy_url + SVC, b"externalId=someone-else")
            for _ in range(500):
                post(omproxy_url + SVC + "/01QG0Q2S5S50G000/get")

        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_on_script_after_it(omproxy_url):
            assert post(omproxy_url + SVC, CREATE)[0] == 200
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*_ test_off_script_then_busy _*", "omproxy: 1 request(s) matched no recording*"])


def test_record_mode_records_against_a_real_upstream_then_replays(project) -> None:
    fake = FakeGms()
    upstream = ThreadedApp(fake.app)
    try:
        project.makepyfile(test_rec=HELPERS + textwrap.dedent('''
            @pytest.mark.omproxy(fallback="none")
            def test_recorded(omproxy_url):
                status, created = post(omproxy_url + SVC, b"externalId=rec-1")
                assert created["interactionId"].startswith("FAKEGMS")
        '''))
        result = project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-mode", "record",
                                              "--omproxy-upstream", upstream.url)
        result.assert_outcomes(passed=1)
    finally:
        upstream.stop()
    assert len(fake.received) == 1
    (cassette,) = (project.path / "cassettes" / "test_rec").glob("*.yaml")
    assert cassette.name == "test_recorded.yaml"
    assert [r.request.form.get("externalId") for r in storage.load(cassette).interactions] == ["rec-1"]
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)  # and replays offline


def test_a_missing_cassette_in_replay_says_how_to_record_it(project) -> None:
    project.makepyfile(test_new=HELPERS + textwrap.dedent('''
        def test_never_recorded(omproxy_url):
            pass
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # at set-up: the test never ran
    result.stdout.fnmatch_lines(["*cassette not found; record it with --omproxy-mode record*"])
    assert "During handling" not in result.stdout.str()


def test_two_xdist_workers(project) -> None:
    pytest.importorskip("xdist")
    project.makepyfile(test_par=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        @pytest.mark.parametrize("n", range(6))
        def test_each(omproxy_url, n):
            status, created = post(omproxy_url + SVC, CREATE)
            assert created["interactionId"] == "01QG0Q2S5S50G000"
    '''))
    project.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=6)



PARTS = HELPERS + textwrap.dedent('''
    ID = "01QG0Q2S5S50G000"

    @pytest.mark.omproxy(cassette=STORY, fallback="none")
    def test_create_and_get(omproxy_url):  # recordings #0 and #1
        assert post(omproxy_url + SVC, CREATE)[1]["interactionId"] == ID
        assert post(omproxy_url + SVC + f"/{ID}/get")[1]["statusCode"] == 0

    @pytest.mark.omproxy(cassette=STORY)
    def test_the_rest(omproxy_url):  # #2 and #4, and the three gets #1, #3, #5 (another setting)
        for op in ("update", "get", "stop", "get", "get"):
            post(omproxy_url + SVC + f"/{ID}/{op}", BODIES.get(op, b""))
''')


@pytest.mark.parametrize("workers", [(), ("-p", "xdist", "-n", "2")], ids=["one process", "xdist -n 2"])
def test_one_summary_for_the_run_and_never_played_means_by_no_one(project, workers) -> None:
    """D7: under xdist the summary was missing and each worker printed "never played" for what the other
    had played; two settings of one cassette each said the other's plays were never played."""
    if workers:
        pytest.importorskip("xdist")
    project.makepyfile(test_parts=PARTS)
    result = project.runpytest_subprocess("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert out.count("= omproxy =") == 1 and "recorded but never played" not in out
    result.stdout.fnmatch_lines([f"replay {STORY}, fallback none: from cassette 2, *, never played 0",
                                 f"replay {STORY}, fallback simulator: from cassette 5, simulated 0, *, never played 0"
                                 ],
                                consecutive=True)


def test_the_summary_adds_up_every_process_and_intersects_never_played() -> None:
    from omproxy.pytest_plugin import summary_lines

    a = {"line": "replay s.yaml", "counts": {"from cassette": 2}, "never": {"/p/s.yaml": [2, 3]}}
    b = {"line": "replay s.yaml", "counts": {"from cassette": 3, "missed": 1}, "never": {"/p/s.yaml": [0, 1, 3]}}
    c = {"line": "replay s.yaml, other", "counts": {}, "never": {"/p/s.yaml": [0, 1, 2, 3, 4]}}
    assert summary_lines([a, b, c]) == [
        "replay s.yaml: from cassette 5, simulated 0, missed 1, recorded 0, never played 1 (s.yaml #3)",
        "replay s.yaml, other: from cassette 0, simulated 0, missed 0, recorded 0, never played 1 (s.yaml #3)"]


def test_the_omproxy_fixture_tells_the_test_what_it_played(project) -> None:
    project.makepyfile(test_fixture=HELPERS + textwrap.dedent('''
        ID = "01QG0Q2S5S50G000"

        @pytest.mark.omproxy(cassette=STORY)
        def test_played(omproxy):
            post(omproxy.url + SVC, CREATE)
            post(f"{omproxy}{SVC}/{ID}/get")
            assert [p.rsplit(" ", 1)[1] for p in omproxy.played] == ["#0", "#1"]
            assert not omproxy.all_played and omproxy.misses == []
            assert [e["operation"] for e in omproxy.exchanges] == ["create", "get"]
            assert omproxy.exchanges[0]["cassette"] == STORY

        @pytest.mark.omproxy(cassette=STORY)
        def test_all_played(omproxy):
            post(omproxy.url + SVC, CREATE)
            for op in ("get", "update", "get", "stop", "get"):
                post(f"{omproxy}{SVC}/{ID}/{op}", BODIES.get(op, b""))
            assert omproxy.all_played

        @pytest.mark.omproxy(cassette=STORY, fallback="none")
        def test_misses(omproxy):
            post(omproxy.url + SVC, b"externalId=nobody")
            assert len(omproxy.misses) == 1 and "externalId: recorded 'xy932', received 'nobody'" in omproxy.misses[0]
            pytest.skip("checked; the plugin would fail it for the miss")
    '''))
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2, skipped=1)


def test_recording_needs_an_upstream_named_and_entries_say_which(project) -> None:
    """D19: `--omproxy-mode record` with no upstream recorded the built-in simulator, as if it were GMS."""
    project.makepyfile(test_rec=HELPERS + textwrap.dedent('''
        def test_recorded(omproxy_url):
            post(omproxy_url + SVC, b"externalId=rec-1")
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-mode", "record")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*omproxy: mode record needs the GMS to record from: --omproxy-upstream URL*"])
    project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-mode", "record", "--omproxy-upstream",
                                 "builtin").assert_outcomes(passed=1)
    (rec,) = storage.load(project.path / "cassettes" / "test_rec" / "test_recorded.yaml").interactions
    assert rec.recorded_from == "builtin"


def test_cassettes_go_beside_the_tests_by_default(project) -> None:
    project.mkdir("tests").joinpath("test_orders.py").write_text(HELPERS + textwrap.dedent('''
        def test_create(omproxy_url):
            post(omproxy_url + SVC, b"externalId=o-1")
    '''))
    project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-mode", "once", "--omproxy-upstream",
                                 "builtin").assert_outcomes(passed=1)
    assert (project.path / "tests" / "cassettes" / "test_orders" / "test_create.yaml").is_file()
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)  # replayed from there


@pytest.mark.parametrize("workers", [(), ("-p", "xdist", "-n", "2")], ids=["one process", "xdist -n 2"])
def test_new_recordings_wait_for_review_and_fail_on_new_says_so(project, workers) -> None:
    if workers:
        pytest.importorskip("xdist")
    project.makepyfile(test_new=HELPERS + textwrap.dedent('''
        @pytest.mark.parametrize("n", range(2))
        def test_create(omproxy_url, n):
            post(omproxy_url + SVC, f"externalId=new-{n}".encode())
    '''))
    args = ("-p", "no:cacheprovider", *workers)
    result = project.runpytest_subprocess(*args, "--omproxy-mode", "new_episodes", "--omproxy-upstream", "builtin",
                                          "--omproxy-pending", "--omproxy-fail-on-new")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*test_create_0_.pending.yaml hold(s) recordings not reviewed yet*cassette accept*"])
    folder = project.path / "cassettes" / "test_new"
    assert sorted(p.name for p in folder.iterdir()) == ["test_create_0_.pending.yaml", "test_create_1_.pending.yaml"]
    from omproxy.cli import main

    for n in range(2):
        assert main(["cassette", "accept", str(folder / f"test_create_{n}_.yaml")]) == 0
    project.runpytest_subprocess(*args, "--omproxy-fail-on-new", "--omproxy-fallback", "none").assert_outcomes(passed=2)


def test_a_recording_older_than_the_max_age_fails_its_test_with_how_to_re_record(project) -> None:
    project.makepyfile(test_old=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY)
        def test_story(omproxy_url):
            post(omproxy_url + SVC, CREATE)
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-max-age", "1d")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*omproxy: answered from a recording older than the max age:",
                                 "*reference-story.yaml #0: recorded * days ago*",
                                 "re-record it: pytest --omproxy-mode rewrite --omproxy-upstream URL "
                                 "'test_old.py::test_story'"])
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-max-age", "1d", "--omproxy-old", "warn")
    result.assert_outcomes(passed=1, warnings=1)
    project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-max-age", "3650d").assert_outcomes(passed=1)


def test_the_runs_report_is_what_prune_reads(project, tmp_path) -> None:
    import json

    from omproxy.cli import main

    copy = project.path / "story.yaml"
    copy.write_bytes(STORY.read_bytes())
    project.makepyfile(test_some=HELPERS.replace(repr(str(STORY)), repr(str(copy))) + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY)
        def test_create(omproxy_url):
            post(omproxy_url + SVC, CREATE)
    '''))
    report = tmp_path / "report.json"
    project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-report", str(report)).assert_outcomes(passed=1)
    assert json.loads(report.read_text())["cassettes"] == [
        {"cassette": str(copy), "interactions": 6, "played": 1, "never_played": [1, 2, 3, 4, 5]}]
    assert main(["cassette", "prune", str(copy), "--journal", str(report), "--apply"]) == 0
    assert len(storage.load(copy).interactions) == 1


def test_faults_by_marker_and_by_fixture_for_one_test_only(project) -> None:
    project.makepyfile(test_faults=HELPERS + textwrap.dedent('''
        RETRY = {"match": {"operation": "create"}, "times": 2, "answer": "retry"}

        @pytest.mark.omproxy(cassette=STORY, faults=[RETRY])
        def test_the_client_retries(omproxy_url):
            codes = [post(omproxy_url + SVC, CREATE)[1]["statusCode"] for _ in range(3)]
            assert codes == [1, 1, 0]

        @pytest.mark.omproxy(cassette=STORY)
        def test_the_next_test_has_none(omproxy_url):
            assert post(omproxy_url + SVC, CREATE)[1]["statusCode"] == 0

        @pytest.mark.omproxy(cassette=STORY)
        def test_a_fault_added_and_cleared_inside(omproxy):
            omproxy.add_fault({"match": {"operation": "get"}, "answer": {"gms_error": 249}})
            assert post(f"{omproxy}{SVC}/01QG0Q2S5S50G000/get")[1]["errors"][0]["code"] == 249
            omproxy.clear_faults()
            assert post(f"{omproxy}{SVC}/01QG0Q2S5S50G000/get")[1]["statusCode"] == 0

        @pytest.mark.omproxy(cassette=STORY, faults=[{"answer": "explode"}])
        def test_a_wrong_rule(omproxy_url):
            pass
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "xdist", "-n", "2")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["omproxy: faults=: faults?0?.answer: expected one of retry, reset*"])


def test_the_readmes_plugin_example_passes_as_written(project) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    project.makepyfile(test_readme=example.replace('"cassettes/examples/reference-story.yaml"', repr(str(STORY))))
    project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_re_recording_with_rewrite_replaces_what_offline_tests_get(project) -> None:
    """The newcomer's D1: GMS changes, the suite is re-recorded, offline replay must serve the new
    answers. `all` appends (the old answers stay first); `rewrite` replaces them."""
    from tests.support import deterministic_simulator

    fake = FakeGms()
    upstream = ThreadedApp(fake.app)
    cassette = project.path / "cassettes" / "test_story" / "test_create.yaml"

    def run(mode: str, expect: str, *more: str) -> None:
        project.makepyfile(test_story=HELPERS + textwrap.dedent(f'''
            @pytest.mark.omproxy(fallback="none")
            def test_create(omproxy_url):
                status, created = post(omproxy_url + SVC, b"externalId=d1")
                assert created["interactionId"].startswith({expect!r})
        '''))
        project.runpytest_subprocess("-p", "no:cacheprovider", "--omproxy-mode", mode, *more).assert_outcomes(passed=1)

    try:
        run("all", "FAKEGMS", "--omproxy-upstream", upstream.url)  # GMS v1
        fake.simulator = deterministic_simulator(prefix="GMSVERSION2")  # GMS v2 answers otherwise
        run("all", "GMSVERSION2", "--omproxy-upstream", upstream.url)
        assert len(storage.load(cassette).interactions) == 2
        run("none", "FAKEGMS")  # appended: offline, the old answer comes first
        run("rewrite", "GMSVERSION2", "--omproxy-upstream", upstream.url)
        assert len(storage.load(cassette).interactions) == 1
        run("none", "GMSVERSION2")  # offline, the new answer
        run("once", "GMSVERSION2")  # the cassette exists: replayed, nothing recorded
        assert len(storage.load(cassette).interactions) == 1
    finally:
        upstream.stop()


def test_rewrite_under_xdist_keeps_what_every_worker_recorded(project) -> None:
    """Two workers rewriting one shared cassette: each renamed its own partial file over it at its stop,
    so the last one to stop won and the other's recordings were lost."""
    pytest.importorskip("xdist")
    project.makepyfile(test_shared=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette="shared.yaml", fallback="none")
        @pytest.mark.parametrize("n", range(6))
        def test_create(omproxy_url, n):
            assert post(omproxy_url + SVC, f"externalId=x{n}".encode())[0] == 200
    '''))
    cassette = project.path / "shared.yaml"
    run = ("-p", "no:cacheprovider", "-p", "xdist", "-n", "2", "--omproxy-upstream", "builtin")
    project.runpytest_subprocess(*run, "--omproxy-mode", "all").assert_outcomes(passed=6)
    assert len(storage.load(cassette).interactions) == 6
    result = project.runpytest_subprocess(*run, "--omproxy-mode", "rewrite")
    result.assert_outcomes(passed=6)
    assert sorted(r.request.form.get("externalId") for r in storage.load(cassette).interactions) == [
        f"x{n}" for n in range(6)]
    assert not list(project.path.glob("*.partial"))
    project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "xdist", "-n", "2").assert_outcomes(passed=6)
    before = cassette.read_bytes()
    project.runpytest_subprocess(*run, "--omproxy-mode", "once").assert_outcomes(passed=6)  # it exists: replayed
    assert cassette.read_bytes() == before


def test_a_mode_that_is_not_one_fails_in_one_line(project) -> None:
    project.makepyfile(test_bad=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY, mode="sometimes")
        def test_it(omproxy_url):
            pass
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*omproxy: mode='sometimes' is not a record mode*"])
    assert "Traceback" not in result.stdout.str()


def test_the_plugin_reads_its_own_settings_never_an_applications_config_yaml(project) -> None:
    """The newcomer's D12: an application's config.yaml broke every test with a traceback."""
    project.makefile(".yaml", config="database:\n  url: postgres://db/app\n")  # the application's own
    project.makefile(".toml", pyproject='[tool.omproxy]\nreplay = {fallback = "none"}\n')
    project.makepyfile(test_own=HELPERS + textwrap.dedent('''
        @pytest.mark.omproxy(cassette=STORY)
        def test_a_miss_is_a_failure_by_the_projects_setting(omproxy_url):
            post(omproxy_url + SVC, b"externalId=someone-else")
    '''))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)  # fallback none came from [tool.omproxy]; config.yaml was not read
    result.stdout.fnmatch_lines(["*1 request(s) matched no recording*"])
    project.makefile(".yaml", omproxy="replay:\n  fallbak: none\n")  # omproxy.yaml wins, and is wrong
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*omproxy: *omproxy.yaml: replay.fallbak: unknown key — did you mean 'fallback'?"])
    assert "Traceback" not in result.stdout.str()
