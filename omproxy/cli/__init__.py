"""The command line: argparse subcommands (each mode's flags come from `config.OPTIONS`), config
resolution (defaults < config.yaml < flags, once), logging set-up and exit codes: 0 ok; 1 `decode`
found anomalies; 2 a user error (one line on stderr). The server side (aiohttp) is imported only
when serving: `--help` and `decode` stay quick. The log set-up is `cli.logs`; each command's work is
its tool's (`tools`, `cassette`, `serve.process`): here only parsing and dispatch (~470 lines, most
of them argparse help text)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from omproxy import __version__
from omproxy.cli.logs import setup_logging
from omproxy.config.file import load
from omproxy.config.options import OPTIONS, Config, Mode, boolean
from omproxy.errors import ConfigError, UsageError
from omproxy.exchange import Outcome
from omproxy.gms import formcodec
from omproxy.gms import vocabulary as gms
from omproxy.model import Request, headers_of

if TYPE_CHECKING:
    from omproxy.model import Recorded
    from omproxy.redaction import Redactor

log = logging.getLogger("omproxy")
DEFAULT_CONFIG = Path("config.yaml")

MODES = {
    Mode.SIMULATE: "serve a stateful GMS Open Media simulator",
    Mode.RECORD: "forward to GMS and record every exchange into a cassette",
    Mode.PASSTHROUGH: "forward to GMS and log decoded bodies; record nothing",
    Mode.REPLAY: "serve recorded answers offline; the simulator answers what was not recorded",
    Mode.AUTO: "replay what was recorded; forward and record the rest (used-up recordings too)",
}


class Parser(argparse.ArgumentParser):
    made: dict[str, Parser] = {}  # every command's parser, by its prog ("omproxy record"): for hints

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Parser.made[self.prog] = self

    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:  # `omproxy recrod`: the command meant
            close = difflib.get_close_matches(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)), 1)
            message += f"; did you mean '{close[0]}'?" if close else ""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def flags(self) -> list[str]:
        """The flags this command takes (read from its own help: argparse has no public list)."""
        return sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", self.format_help())))


# What a flag a user knows from elsewhere is called here
KNOWN_AS = {"--junit": "--report", "--junit-xml": "--report", "--record-mode": "--omproxy-mode (pytest)",
            "--cassette-dir": "--cassette"}


def unknown_flags(args: argparse.Namespace, extra: list[str]) -> str:
    """What to say of arguments a command does not take: its name, and the flag probably meant."""
    prog = f"omproxy {args.command}" + (f" {args.tool}" if getattr(args, "tool", None) else "")
    mine = Parser.made[prog].flags() if prog in Parser.made else []
    said = []
    after_flag = False
    for arg in extra:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("-"):
            if not after_flag:  # else the value of the unknown flag before it
                said.append(f"{arg!r} is not an argument it takes")
            after_flag = False
            continue
        after_flag = "=" not in arg
        others = [p.split(" ", 1)[1] for p, parser in Parser.made.items()
                  if p != prog and " " in p and flag in parser.flags()]
        close = difflib.get_close_matches(flag, mine, 1, 0.7)
        if flag in KNOWN_AS:
            said.append(f"{flag}: here it is {KNOWN_AS[flag]}")
        elif close:
            said.append(f"{flag}: did you mean {close[0]}?")
        elif others:
            note = " (auto forwards what no recording matches)" if args.command == "auto" and flag == "--fallback" \
                else ""
            said.append(f"{flag} is a flag of {', '.join(sorted(others)[:3])}, not of {args.command}{note}")
        else:
            said.append(f"{flag} is not one of its flags")
    return f"{prog}: error: " + "; ".join(said) + f" (see {prog} --help)"


def _flag_type(option: Any) -> Any:
    """The option's own checker as an argparse type: one rule for the file and the flag."""
    def convert(value: str) -> Any:
        try:
            return option.check(option.flag, value)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(e.message.split(": ", 1)[1]) from None
    convert.__name__ = option.key  # argparse names the type in its message
    return convert


def build_parser() -> Parser:
    parser = Parser(prog="omproxy", description="Record, replay and explain Genesys Mobile Services "
                    "Open Media traffic.", formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  omproxy record                                  # record through the built-in simulator (config.yaml)
  omproxy record --upstream http://gms.example:8080 --cassette cassettes/prod.yaml
  omproxy replay --cassette cassettes/ --fallback none
  omproxy decode 'reason%3DRSN-123' --path /genesys/2/openmedia/svc/ID/stop
  omproxy verify --upstream http://staging-gms:8080 --report verify.xml
  omproxy lint cassettes/ && omproxy inspect cassettes/customer-support.yaml

Settings: ./config.yaml (every key commented), overridden by flags. Exit status: 0 ok,
1 decode or lint found something, or verify or diff a difference; 2 a usage, config or cassette error.""")
    parser.add_argument("--version", action="version", version=f"omproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    for mode, help in MODES.items():
        p = sub.add_parser(mode.value, help=help, description=help)
        p.add_argument("--config", type=Path, help="config file (default: ./config.yaml when present)")
        for option in OPTIONS:
            if option.flag and mode in option.modes and option.check is boolean:
                p.add_argument(option.flag, dest=option.attr, action=argparse.BooleanOptionalAction, default=None,
                               help=option.help)
            elif option.flag and mode in option.modes:
                p.add_argument(option.flag, dest=option.attr, type=_flag_type(option), help=option.help,
                               metavar=option.attr.upper())
        p.add_argument("-v", "--verbose", action="count", default=None,
                       help="-v adds headers to each log line; -vv logs at DEBUG")
        p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers N
        p.add_argument("--rewrite-run", default="", help=argparse.SUPPRESS)  # its run's name (--rewrite)

    d = sub.add_parser("decode", help="decode a form body and explain its encoding mistakes",
                       description="Decode an application/x-www-form-urlencoded body, show it readably "
                       "and name every encoding anomaly. Exit 0 when clean, 1 when there are findings.")
    d.add_argument("body", nargs="?", default="-", help="the body as sent on the wire, or - for stdin")
    d.add_argument("--path", help="the request path, to check parameters against the Open Media operation")
    d.add_argument("--content-type", default=formcodec.FORM_TYPE, help="the request's Content-Type")
    d.add_argument("--json", action="store_true", help="print one JSON object")

    v = sub.add_parser("verify", help="re-send recorded requests to a GMS and report what answers differently",
                       description="Re-send every recorded request to a live GMS (a URL, or builtin for the "
                       "simulator), translating interaction ids, and compare each answer with the recorded one, "
                       "ignoring ids, timestamps and sequence numbers. Exit 0 when nothing differs, 1 when "
                       "something does, 2 on a usage error.")
    v.add_argument("--config", type=Path, help="config file (default: ./config.yaml when present)")
    for option in OPTIONS:
        if option.flag and option.key in ("cassette", "upstream", "upstream_timeout", "max_response_body"):
            v.add_argument(option.flag, dest=option.attr, type=_flag_type(option), help=option.help,
                           metavar=option.attr.upper())
    v.add_argument("--concurrency", type=_positive(int), default=1,
                   help="interactions verified at once; each interaction's requests stay in order (default 1)")
    v.add_argument("--speed", type=_positive(float, zero=True), default=0.0,
                   help="keep the recorded gaps between requests divided by X (default 0: as fast as answers come)")
    v.add_argument("--learn-noise", action="store_true",
                   help="first create each service's interaction twice and ignore the fields that differ")
    v.add_argument("--report", type=Path, help="also write the results as JUnit XML to this file")
    v.add_argument("--json", action="store_true", help="print the results as JSON")

    f = sub.add_parser("diff", help="compare two recordings of the same story",
                       description="Pair the interactions of two cassettes by order and request (ids "
                       "translated) and report the answers that differ, as verify does. Exit 0 when nothing "
                       "differs, 1 when something does, 2 on a usage error.")
    f.add_argument("first", type=Path, help="the earlier recording")
    f.add_argument("second", type=Path, help="the later one (another GMS, another configuration)")
    f.add_argument("--config", type=Path, help="config file, for verify.ignore (default: ./config.yaml)")
    f.add_argument("--report", type=Path, help="also write the results as JUnit XML to this file")
    f.add_argument("--json", action="store_true", help="print the results as JSON")

    lint = sub.add_parser("lint", help="find what is wrong in cassettes: encoding, ids, failures, secrets",
                          description="Check every recorded exchange: the decoder's findings, Open Media "
                          "parameters, ids that break GMS's pattern, answers recorded while GMS was failing, "
                          "secrets redaction missed (keys named, never values), duplicates and, given a journal, "
                          "recordings never played. Exit 0 when clean, 1 when anything is found, 2 on a usage "
                          "error.")
    lint.add_argument("cassettes", nargs="+", type=Path, metavar="CASSETTE",
                       help="cassette files, folders, templates or globs (a rotated set: all its files)")
    lint.add_argument("--journal", type=Path, help="the JSON of GET /_omproxy/journal or /_omproxy/cassettes")
    lint.add_argument("--json", action="store_true", help="print one JSON object a finding, a line each")
    lint.add_argument("--fail-on", choices=("any", "secret"), default="any",
                      help="what makes the exit status 1: any finding (default), or only a secret left in clear "
                      "(a pre-commit hook: the other findings are printed all the same)")

    show = sub.add_parser("inspect", help="list a cassette's interactions as a table",
                          description="One row per recorded interaction: index, time, operation, service, "
                          "interaction id, user data, HTTP status, GMS statusCode, duration. Several cassettes "
                          "(or a folder): a table each, under its file's name.")
    show.add_argument("cassettes", nargs="+", type=Path, metavar="CASSETTE",
                       help="cassette files, folders, templates or globs (a rotated set: all its files)")
    show.add_argument("--operation", choices=("create", "get", "update", "stop"), help="only this operation")
    show.add_argument("--service", help="only this service")
    show.add_argument("--id", help="only this interaction id")
    show.add_argument("--status", type=int, help="only this HTTP status")
    show.add_argument("--gms-status", type=int, metavar="CODE",
                      help="only this GMS statusCode (its failures are HTTP 200 with statusCode 2: --gms-status 2)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")

    out = sub.add_parser("export", help="write a cassette as a VCR.py cassette or a HAR 1.2 file",
                         description="Write a cassette (file, folder or template) in another tool's format: "
                         "vcr (VCR.py replays it with its default matchers) or har (HAR 1.2: browsers' developer "
                         "tools, mitmproxy).")
    out.add_argument("cassette", help="a cassette file, a folder of them, or a {service} template")
    out.add_argument("--format", choices=("vcr", "har"), required=True, help="vcr or har")
    out.add_argument("--base-url", default="http://localhost:8080",
                     help="the GMS base URL the requests go to (default http://localhost:8080)")
    out.add_argument("-o", "--output", type=Path, required=True, help="the file to write")
    out.add_argument("--force", action="store_true", help="replace the output file when it exists")

    into = sub.add_parser("import", help="turn a HAR, VCR.py, Betamax or GoReplay file into an omproxy cassette",
                          description="Read what another tool wrote — a HAR 1.1/1.2 capture (browsers, Charles, "
                          "Fiddler, Insomnia, mitmproxy), a VCR.py cassette (YAML or JSON, any client), a Betamax "
                          "or Ruby VCR cassette, a GoReplay .gor file — and write an omproxy cassette: form bodies "
                          "decoded, base64 and compressed bodies honoured, config.yaml's redaction applied. What "
                          "was left out or mended is said, a line each; what cannot be read is one line naming "
                          "the entry and field, exit 2.")
    into.add_argument("file", type=Path, help="the file to import (its format is told by its content)")
    into.add_argument("--from", dest="source", choices=("har", "vcr", "betamax", "gor"),
                      help="its format, to insist on one (default: told by its content)")
    into.add_argument("--all", action="store_true", help="every entry, not only those under /genesys/")
    into.add_argument("--config", type=Path, help="config file, for redact: (default: ./config.yaml)")
    into.add_argument("-o", "--output", type=Path, required=True, help="the cassette to write")
    exists = into.add_mutually_exclusive_group()
    exists.add_argument("--force", action="store_true", help="replace the cassette when it exists")
    exists.add_argument("--append", action="store_true", help="add the entries after the cassette's own")

    tools = sub.add_parser("cassette", help="work on cassette files: merge, pull, accept, prune, dedup, redact")
    tool = tools.add_subparsers(dest="tool", metavar="TOOL", parser_class=Parser, required=True)
    merge = tool.add_parser("merge", help="merge cassettes by recorded_at, each file's order kept",
                            description="Merge cassettes (say, one per omproxy instance) into one, ordered by "
                            "recorded_at, keeping the order within each file. The output is written atomically.")
    merge.add_argument("cassettes", nargs="+", type=Path, metavar="CASSETTE",
                       help="cassette files, folders, templates or globs (a rotated set: all its files)")
    merge.add_argument("-o", "--output", type=Path, required=True, help="the cassette to write")
    merge.add_argument("--force", action="store_true", help="replace the output file when it exists")
    pull = tool.add_parser("pull", help="write what instances recorded into a shared state into cassettes",
                           description="Append what every omproxy recording with --state recorded since the "
                           "last pull into one cassette (or one per service), in arrival order. Pulling twice "
                           "writes nothing twice.")
    pull.add_argument("--state", required=True, help="the Redis URL the instances recorded into")
    pull.add_argument("-o", "--output", type=Path, required=True, help="the cassette (or, split, the folder)")
    pull.add_argument("--split-by", choices=("service",), help="one cassette per service, in the output folder")
    pull.add_argument("--state-namespace", default="omproxy", help="the cluster's state_namespace (default omproxy)")
    accept = tool.add_parser("accept", help="move reviewed pending recordings into their cassette",
                             description="Move what was recorded with --pending (x.pending.yaml, see it with "
                             "omproxy inspect) into the cassette (x.yaml), after its own recordings. Both files are "
                             "written atomically; what is not accepted stays pending.")
    accept.add_argument("cassette", help="the cassette (file, folder or {service} template) whose pending ones to take")
    accept.add_argument("--only", type=_indexes, metavar="0,2,5",
                        help="only these recordings of the pending file (its indexes, as inspect shows them)")
    prune = tool.add_parser("prune", help="drop the recordings a run never played (a dry run unless --apply)",
                            description="List, and with --apply drop, the recordings a run never played, by the "
                            "run's cassette report: GET /_omproxy/cassettes, or pytest --omproxy-report FILE. Each "
                            "cassette is written anew, atomically.")
    prune.add_argument("cassette", help="a cassette file, a folder of them, or a {service} template")
    prune.add_argument("--journal", type=Path, required=True, metavar="REPORT",
                       help="the run's cassette report (JSON of GET /_omproxy/cassettes or --omproxy-report)")
    prune.add_argument("--apply", action="store_true", help="write the cassettes without them (default: only list)")
    dedup = tool.add_parser("dedup", help="reduce a capture to a few stories per class",
                            description="Group a capture's stories (the recordings of one interaction) by class: "
                            "service x operation sequence x user-data key set x status codes (HTTP/GMS). Keep the "
                            "first N of each class in a new cassette, and report the classes and their counts.")
    dedup.add_argument("cassettes", nargs="+", metavar="CASSETTE", help="cassette files, folders or templates")
    dedup.add_argument("--keep", type=int, default=1, metavar="N", help="stories kept per class (default 1)")
    dedup.add_argument("-o", "--output", type=Path, required=True, help="the cassette to write")
    dedup.add_argument("--json", action="store_true", help="print the classes as JSON")

    redact = tool.add_parser("redact", help="apply today's redact: rules to cassettes recorded before them "
                             "(a dry run unless --write)",
                             description="Apply the config file's redact: rules (masks and pseudonyms) to existing "
                             "cassettes: raw bodies, form views, queries, headers, JSON answers and GMS's echoes. "
                             "Prints what would change, by key, never the value; --write writes each cassette anew, "
                             "atomically, and forgets what the index cache held of it. Running it again changes "
                             "nothing.")
    redact.add_argument("cassettes", nargs="+", metavar="CASSETTE",
                        help="cassette files, folders, templates or globs (a rotated set: all its files)")
    redact.add_argument("--config", type=Path, help="config file, for redact: (default: ./config.yaml)")
    redact.add_argument("--write", action="store_true", help="write the cassettes (default: only say what changes)")
    return parser


def _indexes(text: str) -> set[int]:
    try:
        found = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected indexes like 0,2,5, not {text!r}") from None
    if not found or min(found) < 0:
        raise argparse.ArgumentTypeError(f"expected indexes like 0,2,5, not {text!r}")
    return found


def run_cassette(args: argparse.Namespace) -> int:
    import heapq

    if args.tool in ("accept", "prune", "dedup"):
        return run_lifecycle(args)
    if args.tool == "redact":
        return run_redact(args)
    if args.tool == "pull":
        from omproxy.state.redis import pull

        written, files = pull(args.state, args.output, args.split_by == "service", args.state_namespace)
        print(f"pulled {_entries(written)} into {files} cassette(s) at {args.output}", file=sys.stderr)
        return 0

    from omproxy.cassette import storage

    paths = [p for spec in args.cassettes for p in storage.files_of(storage.Template(str(spec)), must_exist=True)]
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:  # every entry would be there twice
            raise UsageError(f"{p}: given twice (as {seen[p.resolve()]} too): merging a file with itself "
                             "doubles every entry")
        seen[p.resolve()] = p
    if args.output.resolve() in seen:
        raise UsageError(f"{args.output}: is one of the cassettes merged; write the merge to another file")
    _refuse_existing(args.output, args.force)
    streams = [storage.stream(p) for p in paths]  # each read as it is merged: never held whole
    merged = heapq.merge(*streams, key=lambda r: r.recorded_at)  # each file's own order is kept
    count = _save(args.output, merged, None)
    print(f"merged {_entries(count)} from {len(streams)} cassettes into {args.output}", file=sys.stderr)
    return 0


def run_lifecycle(args: argparse.Namespace) -> int:
    from omproxy.cassette import storage
    from omproxy.tools import lifecycle

    if args.tool == "accept":
        for done in lifecycle.accepting(args.cassette, args.only):
            _save(done.cassette, lifecycle.into(done), None)  # first: a failure leaves both files as they were
            if done.left:
                _save(done.pending, done.left, None)
            else:
                done.pending.unlink()
            print(f"accepted {len(done.taken)} recording(s) into {done.cassette}"
                  + (f"; {len(done.left)} left in {done.pending}" if done.left else ""), file=sys.stderr)
        return 0
    if args.tool == "prune":
        try:
            report = json.loads(args.journal.read_bytes())
        except (OSError, ValueError) as e:
            raise UsageError(f"{args.journal}: cannot read the report: {getattr(e, 'strerror', None) or e}") from None
        played = lifecycle.report_played(report)
        paths = storage.files_of(storage.Template(args.cassette), must_exist=True)
        total = 0
        for path, gone in lifecycle.never_played(paths, played).items():
            total += len(gone)
            for rec in gone:
                print(f"{path}:{rec.line}: #{rec.index} {rec.request.method} {rec.request.path} never played")
            if gone and args.apply:
                dropped = {r.index for r in gone}
                still = _save(path, (r for r in storage.stream(path) if r.index not in dropped), None)
                print(f"{path}: {len(gone)} dropped, {still} kept", file=sys.stderr)
        if not args.apply:
            print(f"{total} recording(s) would go; --apply writes the cassettes without them", file=sys.stderr)
        return 0
    paths = [p for spec in args.cassettes for p in storage.files_of(storage.Template(spec), must_exist=True)]
    if args.keep < 1:
        raise UsageError("--keep: at least 1 story per class")
    found, kept, recorded = lifecycle.dedup(paths, args.keep)
    count = _save(args.output, recorded, None)
    if args.json:
        print(json.dumps({"classes": found, "stories": sum(c["stories"] for c in found), "kept": len(kept),
                          "interactions": count}))
    else:
        for c in found:
            print(f"{c['stories']:>7} stories, {c['kept']} kept: {c['service']}: {c['operations']}; "
                  f"keys {c['keys']}; status {c['codes']}")
    print(f"{len(found)} classes; {len(kept)} of {sum(c['stories'] for c in found)} stories kept, "
          f"{count} interactions written to {args.output}", file=sys.stderr)
    return 0


def run_redact(args: argparse.Namespace) -> int:
    from omproxy.cassette import indexcache, storage
    from omproxy.redaction import Redactor
    from omproxy.tools import redact

    redactor = Redactor(resolve(args).redact)
    paths = [p for spec in args.cassettes for p in storage.files_of(storage.Template(spec), must_exist=True)]
    changed = values = 0
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise UsageError(f"{path}: cannot read it: {e.strerror or e}") from None
        new, changes = redact.rewritten(raw, str(path), redactor)
        for change in changes:
            print(change.text(str(path)))
        if new is None:
            continue
        changed, values = changed + 1, values + len(changes)
        if args.write:
            try:
                storage.write_atomically(path, [new])
            except OSError as e:
                raise UsageError(f"{path}: cannot write it (left as it was): {e.strerror or e}") from None
            indexcache.forget(raw)
    done = "changed" if args.write else "would change; --write writes them"
    print(f"redact: {values} value(s) in {changed} of {len(paths)} cassette(s) {done}" if values
          else f"redact: nothing to change in {len(paths)} cassette(s)", file=sys.stderr)
    return 0


def _save(output: Path, recorded: Iterable[Recorded], redactor: Redactor | None) -> int:
    """Recorded interactions written as one cassette, an entry at a time as they come, redacted on the
    way when asked; atomically (a failure on the way leaves `output` as it was)."""
    from omproxy.cassette import entry as cassette
    from omproxy.cassette import storage, yamlformat

    count = 0

    def entries() -> Iterator[bytes]:
        nonlocal count
        yield yamlformat.HEADER.encode()
        for r in recorded:
            yield yamlformat.dump_entry(cassette.to_entry(redactor.request(r.request) if redactor else r.request,
                                                          redactor.response(r.response) if redactor else r.response,
                                                          r.duration_ms, r.recorded_at or None,
                                                          r.recorded_from or None, r.note or None))
            count += 1

    try:
        storage.write_atomically(output, entries())
    except OSError as e:
        raise UsageError(f"{output}: cannot write it: {e.strerror or e}") from None
    return count


def run_export(args: argparse.Namespace) -> int:
    """Read a cassette as it is written out (a capture of any size: never held whole); the output is
    written atomically, so a failure (a broken entry, a full disk) leaves no half-written file."""
    from omproxy.cassette import interchange, storage

    paths = storage.files_of(storage.Template(args.cassette), must_exist=True)
    count = 0

    def recorded() -> Iterator[Recorded]:
        nonlocal count
        for path in paths:
            for rec in storage.stream(path):
                count += 1
                yield rec

    _refuse_existing(args.output, args.force)
    from omproxy.serve.runtime import origin

    base = origin(args.base_url)  # user:password@ of --base-url never reaches the file
    text = (interchange.har_text if args.format == "har" else interchange.vcr_text)(recorded(), base)
    try:
        storage.write_atomically(args.output, (part.encode("utf-8") for part in text))
    except BrokenPipeError:  # `-o /dev/stdout | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        raise UsageError(f"{args.output}: cannot write it: {e.strerror or e}") from None
    print(f"wrote {_entries(count)} to {args.output}", file=sys.stderr)
    return 0


def _entries(n: int) -> str:
    """A count of cassette entries, said as entries: "interaction" is GMS's word for what they tell of."""
    return f"{n} recorded exchange{'' if n == 1 else 's'}"


def _refuse_existing(output: Path, force: bool, append: bool | None = None) -> None:
    """An output file that exists is replaced only when asked (`--force`), or added to (import's
    `--append`: `append` is None where a command has none)."""
    if output.is_file() and not force and not append:
        more = ", --append adds to it" if append is not None else ""
        raise UsageError(f"{output}: exists; --force replaces it{more}")


def run_import(args: argparse.Namespace) -> int:
    from omproxy.cassette import interchange, storage, yamlformat
    from omproxy.redaction import Redactor

    config = resolve(args)
    _refuse_existing(args.output, args.force, args.append)
    try:
        raw = args.file.read_bytes()
    except OSError as e:
        raise UsageError(f"{args.file}: cannot read it: {e.strerror or e}") from None
    imported = interchange.read(raw, str(args.file), args.source, everything=args.all)
    for note in imported.notes:
        print(note, file=sys.stderr)
    redactor = Redactor(config.redact)
    if args.append and args.output.is_file():
        from omproxy.cassette import entry as cassette

        storage.check_writable(storage.Template(str(args.output)))
        data = b"".join(yamlformat.dump_entry(cassette.to_entry(
            redactor.request(r.request), redactor.response(r.response), r.duration_ms, r.recorded_at or None,
            r.recorded_from or None, r.note or None)) for r in imported.recorded)
        try:
            storage.append_locked(args.output, data)
        except OSError as e:
            raise UsageError(f"{args.output}: cannot append to it (left as it was): {e.strerror or e}") from None
        count = len(imported.recorded)
        print(f"appended {_entries(count)} to {args.output}", file=sys.stderr)
        return 0
    count = _save(args.output, imported.recorded, redactor)
    print(f"wrote {_entries(count)} to {args.output}", file=sys.stderr)
    return 0


def run_lint(args: argparse.Namespace) -> int:
    from omproxy.cassette import storage
    from omproxy.tools import lint

    played = None
    if args.journal is not None:
        try:
            played = lint.played_in(json.loads(args.journal.read_bytes()))
        except RecursionError:
            raise UsageError(f"{args.journal}: nested too deeply to be a journal") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"{args.journal}: cannot read the journal: {getattr(e, 'strerror', None) or e}") from None
    paths = [p for spec in args.cassettes for p in storage.files_of(storage.Template(str(spec)), must_exist=True)]
    if played is not None:  # the server named its cassettes from where it ran; these are named from here
        played = lint.here(played, paths)
    torn: list[tuple[str, dict[str, Any]]] = []  # a torn last entry is a finding too

    def read(path: Path) -> Iterator[Recorded]:  # as it is checked: never held whole
        return storage.stream(path, lambda report: torn.append(lint.torn_tail(str(path), report)))

    recorded = (r for path in paths for r in read(path))
    found = secrets = 0
    for problem in lint.lint(recorded, played):
        found += 1
        secrets += problem.kind == lint.SECRET
        print(json.dumps(problem.as_dict(), ensure_ascii=False) if args.json else problem.line())
    for line, as_json in torn:
        found += 1
        print(json.dumps(as_json, ensure_ascii=False) if args.json else line)
    if not args.json:
        print(f"lint: {found} finding{'' if found == 1 else 's'}"
              + (f", {secrets} of them a secret in clear" if secrets else ""), file=sys.stderr)
    return 1 if (secrets if args.fail_on == "secret" else found) else 0


def run_inspect(args: argparse.Namespace) -> int:
    from omproxy.cassette import storage
    from omproxy.tools import inspect as listing

    filters = listing.Filters(args.operation, args.service, args.id, args.status, args.gms_status)
    paths = [p for spec in args.cassettes for p in storage.files_of(storage.Template(str(spec)), must_exist=True)]
    for n, path in enumerate(paths):
        if len(paths) > 1 and not args.json:  # JSON rows name their cassette
            print(("\n" if n else "") + str(path))
        for line in listing.lines(storage.stream(path), filters, args.json):
            print(line, flush=False)
    return 0


def _positive(kind: type[int] | type[float], zero: bool = False) -> Any:
    def convert(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {value!r}") from None
        if number < 0 or (number == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be more than 0{' or 0' if zero else ''}, not {value}")
        return number
    return convert


def resolve(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None and not path.is_file():
        raise UsageError(f"{path}: config file not found")
    overrides = {o.attr: getattr(args, o.attr, None) for o in OPTIONS if o.flag}
    overrides["verbose"] = getattr(args, "verbose", None)
    return load(path, overrides)


SUMMARY: dict[Mode, tuple[Outcome, ...]] = {
    Mode.SIMULATE: (Outcome.SIMULATED,),
    Mode.PASSTHROUGH: (Outcome.FORWARDED, Outcome.FAILED_UPSTREAM),
    Mode.RECORD: (Outcome.FORWARDED, Outcome.RECORDED, Outcome.FAILED_UPSTREAM),
    Mode.REPLAY: (Outcome.FROM_CASSETTE, Outcome.SIMULATED, Outcome.MISSED, Outcome.NEVER_PLAYED),
    Mode.AUTO: (Outcome.FROM_CASSETTE, Outcome.FORWARDED, Outcome.RECORDED, Outcome.FAILED_UPSTREAM,
                Outcome.NEVER_PLAYED),
}


def summary(counts: dict[Outcome, int], mode: Mode) -> str:
    extra = [o for o, n in counts.items() if n and o not in SUMMARY[mode]]  # e.g. "write failed"
    return "summary: " + ", ".join(f"{o.value} {counts.get(o, 0)}" for o in (*SUMMARY[mode], *extra))


def startup_line(config: Config, mode: Mode) -> str:
    """What this run will do, in one line (credentials in the upstream URL are not shown)."""
    from omproxy.serve.runtime import origin

    upstream = origin(config.upstream)
    parts = [f"mode {mode.value}", f"config {config.source}"]
    if mode in (Mode.RECORD, Mode.PASSTHROUGH, Mode.AUTO):
        parts.append(f"upstream {upstream}")
    shared = config.state != "memory"
    if mode in (Mode.RECORD, Mode.AUTO):
        stream = f"omproxy:{config.state_namespace}:recorded"
        parts.append(f"recording to the shared state's stream {stream} (omproxy cassette pull writes it into "
                     "cassettes)" if shared else f"recording to {config.cassette}")
    if mode in (Mode.REPLAY, Mode.AUTO):
        parts.append(f"replaying {config.cassette}")
    if mode is Mode.REPLAY:
        parts.append(f"fallback {config.fallback.value}, repeat {config.repeat.value}")
    parts.append(f"state {origin(config.state)}" if shared else "state memory")
    return "; ".join(parts)


def run_server(args: argparse.Namespace) -> int:
    from omproxy.serve import process

    config = resolve(args)
    if args.rewrite_run:
        config = dataclasses.replace(config, rewrite_run=args.rewrite_run)
    mode = Mode(args.command)
    access = setup_logging(config)
    if config.workers > 1 and not args.worker:  # a worker never supervises: no process tree grows
        from omproxy.serve import workers as supervisor

        return supervisor.run(args.argv, config, mode, startup_line(config, mode), summary)
    def reread() -> Config:  # SIGHUP: the same file and flags, read again
        return resolve(args)

    return process.run(config, mode, startup_line(config, mode), summary, access, worker=args.worker,
                       reread=reread)


def decode_input(args: argparse.Namespace) -> bytes:
    if args.body != "-":
        return os.fsencode(args.body)  # the argument's bytes as given, whatever the locale
    if sys.stdin.isatty():
        raise UsageError("give the body as an argument, or pipe it in: omproxy decode - < body.txt")
    return sys.stdin.buffer.read().rstrip(b"\r\n")


def run_decode(args: argparse.Namespace) -> int:
    from omproxy.gms import jetty

    body = decode_input(args)
    req = Request("POST", args.path or "", "", headers_of({"Content-Type": args.content_type}), body)
    findings = list(req.findings) + gms.path_findings(args.path or "")
    op = req.operation
    fixed = gms.repair(op, req.form)
    got, differs = jetty.compared(body, args.content_type, req.form, fixed) if not req.form.not_form else (None, [])
    failed = 1 if findings or differs else 0
    if args.json:
        print(json.dumps({"operation": op.__dict__ if op else None, "fields": [list(f) for f in req.form.fields],
                          "form": req.form.view(), "findings": [f.as_dict() for f in findings],
                          "repaired": fixed.text if fixed else None,
                          "repair_note": fixed.reason if fixed and fixed.text is not None and fixed.reason else None,
                          "unrepairable": fixed.reason if fixed and fixed.text is None else None,
                          "gms_reads": jetty.as_dict(got, differs) if got is not None else None},
                         ensure_ascii=False, indent=2))
        return failed
    if op:
        print(f"operation: {op.kind} on service '{op.service}'" + (f", id {op.id}" if op.id else ""))
    print(f"fields ({len(req.form.fields)}, charset {req.form.charset}):")
    for key, value in req.form.fields:
        print(f"  {key} = {value!r}")
    if not req.form.not_form:
        print("form:")
        for line in json.dumps(req.form.view(), ensure_ascii=False, indent=2).splitlines():
            print(f"  {line}")
    if got is not None and body:
        _print_gms_reads(got, differs)
    if not findings:
        print("findings: none — the body is cleanly encoded")
        return failed
    print(f"findings ({len(findings)}):")
    for f in findings:
        print(f"  {f.kind}: {f.message}")
        if f.fragment:
            print(f"    in: {_visible(f.fragment)}")
    if fixed is not None and fixed.text is not None:
        guess = f" ({fixed.reason})" if fixed.reason else ""
        print(f"correctly encoded, the body would read{guess}:\n  {fixed.text}")
    elif fixed is not None:
        print(f"no repair: {fixed.reason}")
    return 1


def _visible(text: str) -> str:
    """A fragment as one printable line: line breaks and other controls shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_gms_reads(got: Any, differs: list[str]) -> None:
    if got.refused:
        print(f"what GMS will read (Jetty's form rules): nothing — {got.refused}")
        return
    if not differs:
        print(f"what GMS will read (Jetty's form rules, charset {got.charset}): the same fields")
        return
    print(f"what GMS will read (Jetty's form rules, charset {got.charset}):")
    for key, value in got.fields:
        print(f"  {_visible(key)} = {value!r}")
    print("where GMS reads otherwise than the client meant:")
    for line in differs:
        print(f"  {_visible(line)}")


def run_holding(args: argparse.Namespace) -> int:
    """The commands that hold much until they are done — diff a capture's request shapes and every
    result, import a whole imported file — run with the cyclic GC off: it would walk all of that over
    and over (two 100,000-interaction captures: diff 35.7 -> 33.8 s). Those that hold little (export,
    lint, inspect, cassette merge, verify's window) keep it."""
    from omproxy.cassette import storage

    with storage.no_gc():
        if args.command == "diff":
            from omproxy.tools import regression

            return regression.run(args, resolve(args))
        return run_import(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        print(unknown_flags(args, extra), file=sys.stderr)
        return 2
    args.argv = argv  # what `--workers N` runs again in each worker
    try:
        if args.command == "decode":
            return run_decode(args)
        if args.command == "export":
            return run_export(args)
        if args.command == "lint":
            return run_lint(args)
        if args.command == "cassette":
            return run_cassette(args)
        if args.command in ("import", "diff"):
            return run_holding(args)
        if args.command == "inspect":
            return run_inspect(args)
        if args.command == "verify":
            from omproxy.tools import regression

            return regression.run(args, resolve(args))
        return run_server(args)
    except UsageError as e:
        print(f"omproxy {args.command}: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `omproxy inspect big.yaml | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
