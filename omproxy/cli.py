"""The command line: argparse subcommands, config resolution (defaults < config.yaml < flags, once),
logging set-up and exit codes. 0 ok; 1 `decode` found anomalies; 2 a user error (one line on stderr)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web
from yarl import URL

from omproxy import __version__, formcodec, gms
from omproxy.accesslog import findings_of
from omproxy.config import Config, Mode, load
from omproxy.errors import UsageError
from omproxy.model import Request, headers_of

log = logging.getLogger("omproxy")
DEFAULT_CONFIG = Path("config.yaml")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="omproxy", description="Record, replay and explain Genesys Mobile Services "
                    "Open Media traffic.", formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  omproxy record                                  # record through the built-in simulator (config.yaml)
  omproxy record --upstream http://gms.example:8080 --cassette cassettes/prod.yaml
  omproxy replay --cassette cassettes/ --fallback none
  omproxy decode 'reason%3DRSN-123' --path /genesys/2/openmedia/svc/ID/stop

Settings: ./config.yaml (every key commented), overridden by flags. Exit status: 0 ok,
1 decode found anomalies, 2 a usage, config or cassette error.""")
    parser.add_argument("--version", action="version", version=f"omproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)

    def server(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", type=Path, help="config file (default: ./config.yaml when present)")
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free one)")
        p.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON lines")
        p.add_argument("-v", "--verbose", action="count", default=None, help="add headers to each log line")
        p.add_argument("--max-body", type=int, help="largest request body accepted, bytes (default 1 MiB)")
        return p

    def upstream(p: argparse.ArgumentParser) -> None:
        p.add_argument("--upstream", help="GMS base URL, e.g. http://gms.example:8080, or 'builtin' for "
                       "the in-process simulator (default)")
        p.add_argument("--upstream-timeout", type=float, help="seconds to wait for GMS (default 30)")

    def cassette(p: argparse.ArgumentParser, help: str) -> None:
        p.add_argument("--cassette", help=help)

    def replay(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fallback", choices=("simulator", "none"),
                       help="who answers a request no recording matches (default simulator)")
        p.add_argument("--repeat", choices=("last", "miss"),
                       help="when a request's recordings are used up: repeat the last, or miss (default last)")

    server("simulate", "serve a stateful GMS Open Media simulator")
    p = server("record", "forward to GMS and record every exchange into a cassette")
    upstream(p)
    cassette(p, "cassette file; may contain {service} (default cassettes/{service}.yaml)")
    p = server("passthrough", "forward to GMS and log decoded bodies; record nothing")
    upstream(p)
    p = server("replay", "serve recorded answers offline; the simulator answers what was not recorded")
    cassette(p, "a cassette file or a folder of them (default: the folder of config.yaml's cassette)")
    replay(p)
    p = server("auto", "replay what was recorded; forward and record the rest")
    upstream(p)
    cassette(p, "cassette file to replay from and append to")
    replay(p)

    d = sub.add_parser("decode", help="decode a form body and explain its encoding mistakes",
                       description="Decode an application/x-www-form-urlencoded body, show it readably "
                       "and name every encoding anomaly. Exit 0 when clean, 1 when there are findings.")
    d.add_argument("body", nargs="?", default="-", help="the body as sent on the wire, or - for stdin")
    d.add_argument("--path", help="the request path, to check parameters against the Open Media operation")
    d.add_argument("--content-type", default=formcodec.FORM_TYPE, help="the request's Content-Type")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def resolve(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None and not path.is_file():
        raise UsageError(f"{path}: config file not found")
    overrides = {k: getattr(args, k, None) for k in ("host", "port", "upstream", "upstream_timeout",
                                                      "cassette", "log_format", "verbose", "fallback",
                                                      "repeat", "max_body")}
    return load(path, overrides)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                                "level": record.levelname.lower(), "logger": record.name}
        entry = getattr(record, "entry", None)
        data.update(entry if isinstance(entry, dict) else {"message": record.getMessage()})
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("omproxy")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if (config.verbose or 0) > 1 else logging.INFO)
    root.propagate = False


async def serve(app: web.Application, config: Config, mode: Mode) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    port = runner.addresses[0][1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"omproxy {mode.value} listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second signal while finishing: the user wants out now. Every answered request is on disk
        # already; requests still in flight were answered to no one and are recorded nowhere.
        log.warning("second signal: stopping now, without waiting for requests in flight")
        logging.shutdown()
        os._exit(1)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("stopping: finishing requests in flight")
    await runner.cleanup()  # waits for in-flight handlers, then runs cleanup_ctx (flushes cassettes)


SUMMARY = {
    Mode.SIMULATE: ("simulated",),
    Mode.PASSTHROUGH: ("forwarded", "failed upstream"),
    Mode.RECORD: ("forwarded", "recorded", "failed upstream"),
    Mode.REPLAY: ("from cassette", "simulated", "missed", "never played"),
    Mode.AUTO: ("from cassette", "forwarded", "recorded", "failed upstream", "never played"),
}


def summary(app: web.Application, mode: Mode) -> str:
    from omproxy.app import RUNTIME

    counts = app[RUNTIME].journal.counts
    extra = [name for name, n in counts.items() if n and name not in SUMMARY[mode]]  # e.g. "write failed"
    return "summary: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in (*SUMMARY[mode], *extra))


def startup_line(config: Config, mode: Mode) -> str:
    """What this run will do, in one line (credentials in the upstream URL are not shown)."""
    upstream = config.upstream if config.upstream == "builtin" else str(URL(config.upstream).with_user(None))
    parts = [f"mode {mode.value}", f"config {config.source}"]
    if mode in (Mode.RECORD, Mode.PASSTHROUGH, Mode.AUTO):
        parts.append(f"upstream {upstream}")
    if mode in (Mode.RECORD, Mode.AUTO):
        parts.append(f"recording to {config.cassette}")
    if mode in (Mode.REPLAY, Mode.AUTO):
        parts.append(f"replaying {config.cassette}")
    if mode is Mode.REPLAY:
        parts.append(f"fallback {config.fallback}, repeat {config.repeat}")
    return "; ".join(parts)


def run_server(args: argparse.Namespace) -> int:
    from omproxy.app import build_app

    config = resolve(args)
    mode = Mode(args.command)
    setup_logging(config)
    app = build_app(config, mode)
    log.info("%s", startup_line(config, mode))
    started = time.monotonic()
    asyncio.run(serve(app, config, mode))
    log.info("%s (%.0f s)", summary(app, mode), time.monotonic() - started)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    if args.body == "-" and sys.stdin.isatty():
        raise UsageError("give the body as an argument, or pipe it in: omproxy decode - < body.txt")
    body = sys.stdin.buffer.read().rstrip(b"\r\n") if args.body == "-" else args.body.encode("utf-8")
    req = Request("POST", args.path or "", "", headers_of({"Content-Type": args.content_type}), body)
    findings = findings_of(req) + gms.path_findings(args.path or "")
    op = req.operation
    fixed = formcodec.repaired(req.form)
    if args.json:
        print(json.dumps({"operation": op.__dict__ if op else None, "fields": [list(f) for f in req.form.fields],
                          "form": req.form.view(), "findings": [f.as_dict() for f in findings],
                          "repaired": fixed.decode("ascii") if fixed is not None else None},
                         ensure_ascii=False, indent=2))
        return 1 if findings else 0
    if op:
        print(f"operation: {op.kind} on service '{op.service}'" + (f", id {op.id}" if op.id else ""))
    print(f"fields ({len(req.form.fields)}, charset {req.form.charset}):")
    for key, value in req.form.fields:
        print(f"  {key} = {value!r}")
    print("form:")
    for line in json.dumps(req.form.view(), ensure_ascii=False, indent=2).splitlines():
        print(f"  {line}")
    if not findings:
        print("findings: none — the body is cleanly encoded")
        return 0
    print(f"findings ({len(findings)}):")
    for f in findings:
        print(f"  {f.kind}: {f.message}")
        if f.fragment:
            print(f"    in: {f.fragment}")
    if fixed is not None:
        print(f"correctly encoded, the body would read:\n  {fixed.decode('ascii')}")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "decode":
            return run_decode(args)
        return run_server(args)
    except UsageError as e:
        print(f"omproxy {args.command}: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
