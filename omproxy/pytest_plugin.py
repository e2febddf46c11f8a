"""omproxy's pytest plugin (registered through the `pytest11` entry point: installing omproxy is enough).

    @pytest.mark.omproxy(cassette="cassettes/customer-support.yaml")
    def test_order_flow(omproxy_url):   # base URL of an omproxy serving that cassette
        ...

`omproxy_url` starts omproxy in the test process (the command line's own front, `server.start`, on a
thread with its own loop, so sync and async tests alike), one server per distinct cassette and settings
for the whole session,
and gives each test its own session (its node id, in the URL's path: `/_omproxy/session/<id>`), so
playback positions and simulator state never leak between tests, in any order, under xdist too.
Record modes by pytest-recording's names (`--omproxy-mode`, or the marker's `mode=`): none (replay, the
default: nothing leaves the machine), once, new_episodes, all, rewrite (the run's recordings replace
the cassette when the run ends). A miss with fallback none fails the test with the near-miss report;
the terminal summary says per cassette what was played, simulated, missed and never played."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import threading
import tomllib
import warnings
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from omproxy.cassette import storage, yamlformat
from omproxy.config.file import load
from omproxy.config.options import Config, Fallback, Mode, age, from_mapping
from omproxy.errors import ConfigError, RequestRefused, UsageError
from omproxy.exchange import Outcome
from omproxy.model import SESSION_PREFIX
from omproxy.modes import faults
from omproxy.serve.http import front
from omproxy.serve.observers import entry
from omproxy.serve.runtime import Runtime, build_runtime

T = TypeVar("T")

# Record modes by pytest-recording's names, and the command line's words for the same: a mode and
# whether the run's recordings replace the cassette. `once` is decided per cassette (`_mode_of`).
MODES: dict[str, tuple[Mode, bool]] = {
    "none": (Mode.REPLAY, False), "replay": (Mode.REPLAY, False),
    "new_episodes": (Mode.AUTO, False), "auto": (Mode.AUTO, False),
    "all": (Mode.RECORD, False), "record": (Mode.RECORD, False),
    "rewrite": (Mode.RECORD, True),
    "once": (Mode.REPLAY, False),
    "passthrough": (Mode.PASSTHROUGH, False),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("omproxy", "omproxy: record and replay GMS Open Media traffic")
    group.addoption("--omproxy-mode", choices=tuple(MODES), default=None,
                    help="none (default: replay, offline), once (record a cassette that does not exist yet, "
                    "replay one that does), new_episodes (replay, record what is new), all (record, appending), "
                    "rewrite (record; the run's recordings replace the cassette), passthrough; replay, auto and "
                    "record are the command line's words for none, new_episodes and all")
    group.addoption("--omproxy-upstream", default=None,
                    help="the GMS to record from (a base URL, or builtin); default: the config's upstream")
    group.addoption("--omproxy-fallback", choices=("simulator", "none"), default=None,
                    help="who answers a request no recording matches (default: the marker's, else simulator)")
    group.addoption("--omproxy-pending", action="store_true", default=None,
                    help="what the run records goes to a pending cassette beside each one (x.pending.yaml), "
                    "replayed by new_episodes, never by none, until `omproxy cassette accept` moves it in")
    group.addoption("--omproxy-fail-on-new", action="store_true",
                    help="fail a test whose cassette holds pending (unreviewed) recordings when it ends")
    group.addoption("--omproxy-max-age", default=None, metavar="AGE",
                    help="fail a test answered from a recording older than AGE (180d, 12h; default: the "
                    "project's replay.max_age, else no limit)")
    group.addoption("--omproxy-report", type=Path, default=None, metavar="FILE",
                    help="write the run's cassette report (what was played, over every worker) as JSON: "
                    "what `omproxy cassette prune --journal FILE` reads")
    group.addoption("--omproxy-old", choices=("fail", "warn"), default="fail",
                    help="what a recording older than the max age does to its test: fail (default) or warn")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "omproxy(cassette=None, mode=None, upstream=None, fallback=None, match=None, "
                            "faults=None, config=None): "
                            "serve this test's GMS traffic from a cassette (omproxy_url)")
    config.stash[SERVERS] = {}
    # a rewrite under xdist: every worker appends to one partial file per cassette, named by the run;
    # the controller renames them once all workers are done (pytest_sessionfinish)
    workerinput = getattr(config, "workerinput", None)
    config.stash[RUN] = workerinput.get("omproxy_run", "") if workerinput is not None else secrets.token_hex(4)


RUN = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: each worker is told the run's name."""
    node.workerinput["omproxy_run"] = node.config.stash[RUN]


class Server:
    """One omproxy on a background thread, for the session."""

    def __init__(self, config: Config, mode: Mode) -> None:
        self.config, self.mode = config, mode
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="omproxy", daemon=True)
        self.thread.start()
        self.listener: front.Listener | None = None
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)

    async def _start(self) -> str:
        rt = build_runtime(self.config, self.mode)
        rt.warn_stale = False  # the run's summary says what was never played, over every process
        self.listener = await front.start(rt, self.config)
        return f"http://127.0.0.1:{self.listener.port}"

    @property
    def runtime(self) -> Runtime:
        assert self.listener is not None
        return self.listener.front.rt

    def call(self, what: Callable[[Runtime], Coroutine[Any, Any, T]]) -> T:
        """`what` of the runtime, awaited on omproxy's own loop."""
        return asyncio.run_coroutine_threadsafe(what(self.runtime), self.loop).result(10)

    def set_faults(self, session: str, rules: list[Any] | None, add: bool = True) -> None:
        """Add fault rules for one session (checked: a wrong one raises RequestRefused), or clear them (None)."""
        async def change(rt: Runtime) -> None:
            _, own = await rt.state.fault_rules(session)
            text = faults.added(own if add else "", json.dumps(rules).encode(), session) if rules is not None else ""
            await rt.state.set_fault_rules(session, text)

        self.call(change)

    def read(self, what: Callable[[Runtime], T]) -> T:
        """`what` of the runtime, read on omproxy's own loop once what it answered is observed (the
        observers run at the end of the loop's turn: a test may be done before that turn is)."""
        async def read() -> T:
            self.runtime.pipeline.flush()
            return what(self.runtime)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)

    def stop(self) -> None:
        if self.listener is not None:
            asyncio.run_coroutine_threadsafe(self.listener.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


SERVERS = pytest.StashKey[dict[tuple[Any, ...], Server]]()


@pytest.fixture
def omproxy_config() -> Config | None:
    """The project's defaults (override it in a conftest.py): a Config, or None for `omproxy.yaml` or
    `[tool.omproxy]` in pyproject.toml when present, else the built-in defaults."""
    return None


def project_config(root: Path) -> Config:
    """The project's omproxy settings: `omproxy.yaml` at its root, else `[tool.omproxy]` in its
    pyproject.toml, else the defaults — never an application's own `config.yaml`."""
    own = root / "omproxy.yaml"
    if own.is_file():
        return load(own, {})
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{pyproject}: not valid TOML ({e})") from None
        section = data.get("tool", {}).get("omproxy")
        if section is not None:
            return from_mapping(section, f"{pyproject} [tool.omproxy]", root)
    return Config()


RECORDING = (Mode.RECORD, Mode.AUTO, Mode.PASSTHROUGH)  # the modes that ask an upstream


def _settings(request: pytest.FixtureRequest, base: Config | None) -> tuple[Config, Mode]:
    marker = request.node.get_closest_marker("omproxy")
    kwargs = dict(marker.kwargs) if marker else {}
    options = request.config.option
    if kwargs.get("config"):
        base = load(Path(kwargs["config"]), {})
    elif base is None:
        base = project_config(Path(request.config.rootpath))
    here = Path(str(request.node.path))
    test = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    if kwargs.get("cassette"):
        cassette = Path(str(kwargs["cassette"]))
        if not cassette.is_absolute():
            cassette = Path(request.config.rootpath) / cassette
    else:  # beside the test, as pytest-recording keeps them
        cassette = here.parent / "cassettes" / here.stem / f"{test}.yaml"
    changes: dict[str, Any] = {"cassette": str(cassette), "host": "127.0.0.1", "port": 0}
    fallback = options.omproxy_fallback or kwargs.get("fallback")
    if fallback:
        changes["fallback"] = Fallback(fallback)
    named = options.omproxy_upstream or kwargs.get("upstream")
    if named:
        changes["upstream"] = named
    if kwargs.get("match") is not None:
        changes["match"] = replace(base.match, **kwargs["match"])
    if options.omproxy_pending:
        changes["pending"] = True
    if options.omproxy_max_age:
        changes["max_age"] = age("--omproxy-max-age", options.omproxy_max_age)
    word = options.omproxy_mode or kwargs.get("mode") or "none"  # the command line's, else the marker's
    if word not in MODES:
        raise UsageError(f"mode={word!r} is not a record mode; use one of {', '.join(MODES)}")
    mode, changes["rewrite"] = MODES[word]
    if word == "once":
        mode = Mode.REPLAY if _holds_recordings(str(cassette)) else Mode.RECORD
    config = replace(base, **changes)
    if mode in RECORDING and config.upstream == "builtin" and named != "builtin" and "upstream" not in (
            base.given):
        raise UsageError(f"mode {word} needs the GMS to record from: --omproxy-upstream URL (or the marker's "
                         "upstream=); to record the built-in simulator, name it: --omproxy-upstream builtin")
    return config, mode


def _holds_recordings(cassette: str) -> bool:
    from omproxy.cassette.storage import Template

    template = Template(cassette)
    paths = template.files() if template.per_service else [Path(cassette)]
    return any(p.is_file() and p.stat().st_size > 0 for p in paths)


@pytest.fixture
def omproxy_url(request: pytest.FixtureRequest, omproxy_config: Config | None) -> Iterator[str]:
    try:
        config, mode = _settings(request, omproxy_config)
    except UsageError as e:  # a config file or a marker that is wrong: one line, no traceback
        pytest.fail(f"omproxy: {e.message}", pytrace=False)
    if config.rewrite and hasattr(request.config, "workerinput"):
        config = replace(config, rewrite_run=request.config.stash[RUN])
    servers = request.config.stash[SERVERS]
    key = (repr(config), mode)
    if key not in servers:
        problem = None
        try:
            servers[key] = Server(config, mode)
        except UsageError as e:
            problem = e.message
        if problem is not None:
            hint = "; record it with --omproxy-mode record (and --omproxy-upstream URL)" if mode is Mode.REPLAY else ""
            pytest.fail(f"omproxy: {problem}{hint}", pytrace=False)
    server = servers[key]
    session = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    request.node.stash[SESSION] = (server, session)
    marker = request.node.get_closest_marker("omproxy")
    rules = marker.kwargs.get("faults") if marker else None
    if rules:
        try:
            server.set_faults(session, list(rules), add=False)
        except RequestRefused as e:
            pytest.fail(f"omproxy: faults=: {e.message}", pytrace=False)
    try:
        yield f"{server.url}{SESSION_PREFIX}{session}"
    finally:
        server.set_faults(session, None)  # this test's rules end with it


SESSION = pytest.StashKey[tuple[Server, str]]()


class Playback:
    """The `omproxy` fixture: the test's omproxy (`url`) and what its session has done so far, for
    assertions — `played` (the recordings it was answered from), `all_played`, `misses` (the miss
    reports), `exchanges` (the journal's rows of its session: its last 200 requests at most)."""

    def __init__(self, url: str, server: Server, session: str) -> None:
        self.url, self.server, self.session = url, server, session

    def __str__(self) -> str:
        return self.url

    @property
    def played(self) -> list[str]:
        """`cassette #index` of every recording this test was answered from, in cassette order."""
        played = self.server.read(lambda rt: rt.journal.session(self.session))
        return [f"{c} #{i}" for c, i in sorted(played.recordings)]

    @property
    def all_played(self) -> bool:
        """Whether this test played every recording of its cassette(s)."""
        def read(rt: Runtime) -> bool:
            pb = rt.playback
            return pb is not None and rt.journal.session(self.session).recordings >= {
                (r.cassette, r.index) for r in pb.index.all}

        return self.server.read(read)

    @property
    def misses(self) -> list[str]:
        """The reports of this test's requests no recording matched (fallback none; the first 5)."""
        return self.server.read(lambda rt: rt.journal.session(self.session).reports)

    def add_fault(self, *rules: dict[str, Any]) -> None:
        """Fault rules for the rest of this test (as config.yaml's `faults:` writes them)."""
        self.server.set_faults(self.session, list(rules))

    def clear_faults(self) -> None:
        """No more fault rules of this test's own (the marker's included)."""
        self.server.set_faults(self.session, None)

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        def read(rt: Runtime) -> list[dict[str, Any]]:
            return [entry(ex, rt.redactor) for ex in rt.journal.of_session(self.session)]

        return self.server.read(read)


@pytest.fixture
def omproxy(request: pytest.FixtureRequest, omproxy_url: str) -> Playback:
    """`omproxy_url` and what the test's session played: `omproxy.url`, `.played`, `.all_played`, `.misses`,
    `.exchanges`."""
    server, session = request.node.stash[SESSION]
    return Playback(omproxy_url, server, session)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    result = yield
    found = item.stash.get(SESSION, None)
    if found is not None:
        server, session = found
        played = server.read(lambda rt: rt.journal.session(session))
        if played.misses:
            left = played.misses - len(played.reports)
            more = f"\n... and {left} more" if left else ""
            pytest.fail(f"omproxy: {played.misses} request(s) matched no recording (fallback none):\n" + "\n".join(
                played.reports) + more, pytrace=False)
        if played.too_old:
            again = f"re-record it: pytest --omproxy-mode rewrite --omproxy-upstream URL '{item.nodeid}'"
            text = "omproxy: answered from a recording older than the max age:\n" + "\n".join(
                f"{where}: {said}" for where, said in played.too_old.items()) + "\n" + again
            if item.config.option.omproxy_old == "fail":
                pytest.fail(text, pytrace=False)
            warnings.warn(pytest.PytestWarning(text), stacklevel=1)
        if item.config.option.omproxy_fail_on_new:
            waiting = [p for p in storage.files_of(storage.Template(server.config.cassette).pending, must_exist=False)
                       if p.stat().st_size > len(yamlformat.HEADER)]
            if waiting:
                pytest.fail(f"omproxy: {', '.join(map(str, waiting))} hold(s) recordings not reviewed yet "
                            f"(--omproxy-fail-on-new): review them, then omproxy cassette accept "
                            f"{server.config.cassette}", pytrace=False)
    return result


# ---- the summary: one section for the run, whichever process served ----------------------------

REPORTS = pytest.StashKey[list[dict[str, Any]]]()


def _report(server: Server, root: Path) -> dict[str, Any]:
    """What one server did, as plain data (an xdist worker sends it to the controller)."""
    def read(rt: Runtime) -> dict[str, Any]:
        return {o.value: n for o, n in rt.journal.counts.items()}

    counts = server.read(read)
    never: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    rt = server.runtime
    if rt.playback is not None:
        played = asyncio.run_coroutine_threadsafe(rt.state.played(), server.loop).result(10)
        for c in rt.playback.cassettes:
            never[c.path] = [r.index for r in c.interactions if (c.path, r.index) not in played]
            sizes[c.path] = len(c.interactions)
    cassette = server.config.cassette
    if Path(cassette).is_relative_to(root):
        cassette = str(Path(cassette).relative_to(root))
    settings = f", fallback {server.config.fallback.value}" if server.mode is Mode.REPLAY else ""
    rewritten = [str(storage.Template(server.config.cassette).folder)] if server.config.rewrite_run else []
    return {"line": f"{server.mode.value} {cassette}{settings}", "counts": counts, "never": never, "sizes": sizes,
            "rewritten": rewritten}


def never_played(reports: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Per cassette file, the recordings no process played under any settings."""
    never: dict[str, set[int]] = {}
    for r in reports:
        for path, indexes in r["never"].items():
            never[path] = never[path] & set(indexes) if path in never else set(indexes)
    return never


def cassette_report(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's cassette report, in the shape of GET /_omproxy/cassettes (never_played whole)."""
    never = never_played(reports)
    sizes = {path: n for r in reports for path, n in r.get("sizes", {}).items()}
    return {"cassettes": [{"cassette": path, "interactions": sizes.get(path, 0),
                           "played": sizes.get(path, 0) - len(indexes), "never_played": sorted(indexes)}
                          for path, indexes in sorted(never.items())]}


def summary_lines(reports: list[dict[str, Any]]) -> list[str]:
    """One line per cassette and settings (sorted), counts added up over every process; a recording is never
    played when no test of the run played it, in any process, under any settings."""
    never = never_played(reports)
    lines: dict[str, tuple[Counter[str], set[str]]] = {}
    for r in reports:
        counts, paths = lines.setdefault(r["line"], (Counter(), set()))
        counts.update(r["counts"])
        paths.update(r["never"])
    out = []
    for line, (counts, paths) in sorted(lines.items()):
        text = f"{line}: " + ", ".join(f"{o.value} {counts[o.value]}" for o in (
            Outcome.FROM_CASSETTE, Outcome.SIMULATED, Outcome.MISSED, Outcome.RECORDED))
        if paths:
            stale = [f"{Path(p).name} #{i}" for p in sorted(paths) for i in sorted(never[p])]
            text += f", never played {len(stale)}"
            if stale:
                text += f" ({', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''})"
        out.append(text)
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    reports = [_report(s, Path(config.rootpath)) for s in config.stash.get(SERVERS, {}).values()]
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints the run's one section
        workeroutput["omproxy"] = reports
        return
    everything = config.stash.setdefault(REPORTS, [])
    everything.extend(reports)
    folders = [Path(f) for r in everything for f in r.get("rewritten", [])]
    if folders and exitstatus != pytest.ExitCode.INTERRUPTED:  # the workers' rewrites, now all done
        storage.finish_rewrite(folders, config.stash[RUN])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: a worker finished; what its servers did joins the run's summary."""
    reports = getattr(node, "workeroutput", {}).get("omproxy")
    if reports:
        node.config.stash.setdefault(REPORTS, []).extend(reports)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reports = config.stash.get(REPORTS, [])
    if reports:
        terminalreporter.section("omproxy")
        for line in summary_lines(reports):
            terminalreporter.write_line(line)
    target = config.option.omproxy_report
    if target is not None and not hasattr(config, "workeroutput"):
        try:
            storage.write_atomically(target, [json.dumps(cassette_report(reports), indent=1).encode() + b"\n"])
        except OSError as e:
            terminalreporter.write_line(f"omproxy: cannot write {target}: {e.strerror or e}", red=True)
        else:
            terminalreporter.write_line(f"omproxy: cassette report written to {target}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in config.stash.get(SERVERS, {}).values():
        server.stop()
