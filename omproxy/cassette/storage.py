"""Where cassettes live: which files a `--cassette` spec names (a file, a folder, a `{service}`
template), loading them (a torn last entry dropped and reported), the safe append engine that
`record` and `auto` write through, and a plain atomic `save` for tools and tests.

Appending: an entry is on disk (fsync'd) before its client gets an answer; concurrent entries are
group-committed in one write; an flock lets two processes record into one file; a failed write is
truncated back, so the file is exactly as it was; every append starts from a whole entry.

Why one module of ~560 lines: the reader and the writer share the rule for a torn last entry and the
layout of an entry in the file (where it starts, how it ends); kept side by side until that rule is
one function both call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import glob
import logging
import os
import re
import secrets
import stat
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from omproxy import yamlsafe
from omproxy.cassette import entry as cassette
from omproxy.cassette import indexcache, quickyaml, yamlformat
from omproxy.cassette.entry import Cassette
from omproxy.errors import BackPressure, CassetteChanged, CassetteError, ConfigError
from omproxy.model import Recorded, Response

log = logging.getLogger(__name__)
T = TypeVar("T")

SUFFIXES = (".yaml", ".yml")
SYNC_EVERY = 0.1  # seconds: durability interval's fsync period (the loss window on a power cut)
# seconds: durability interval gathers what comes this long before writing it (no client waits for the
# write, so without it each entry is its own batch, a thread hop each: 0.89x of `each` on the benchmark)
GATHER = 0.005
PENDING = ".pending"  # x.pending.yaml: recordings waiting to be reviewed into x.yaml (never replayed)
TAIL_WINDOW = 16 << 20  # how far back from the end a torn last entry is looked for


def safe_name(service: str | None) -> str:
    """A service name usable as one file name: no separators, no leading dots, no NUL."""
    name = re.sub(r"[^A-Za-z0-9._-]|\.{2,}", "_", service or "_other").lstrip(".")
    return (name or "_")[:120]


_TIME_FIELD = re.compile(r"%[a-zA-Z]")  # a strftime field: a new file when the formatted name changes
_GLOB = re.compile(r"[*?\[]")
NUMBERED = "[0-9]" * 4  # a size-rotated file: name.0001.yaml, name.0002.yaml, ...


def numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.stem}.{n:04d}{path.suffix}")


class Template:
    """What `--cassette` names. A file (`c.yaml`); a folder (`cassettes/`, an existing directory, or a
    new name without a .yaml suffix), meaning `folder/{service}.yaml`; or a template with
    `{service}`, one file per Open Media service. Any part may hold strftime fields (UTC:
    `prod-%Y%m%d-%H/{service}.yaml`, a new file each hour) or, to read, glob patterns. Reading, a
    file's size-rotated parts (`c.0001.yaml`, ...) come with it. Replay reads exactly the files it matches."""

    def __init__(self, spec: str) -> None:
        if not spec.strip():
            raise ConfigError("cassette: empty; give a file (c.yaml), a folder (cassettes/) or a template "
                              "(cassettes/{service}.yaml)")
        path = Path(spec)
        self.folder_given = spec.endswith("/") or path.is_dir() or (
            "{service}" not in spec and not path.exists() and path.suffix not in SUFFIXES)
        self.spec = str(path / "{service}.yaml") if self.folder_given else spec
        if self.spec.count("{service}") > 1 or "{service}" in str(Path(self.spec).parent):
            raise ConfigError(f"cassette: {spec}: {{service}} may appear once, in the file name")
        self._paths: dict[str | None, Path] = {}

    @property
    def per_service(self) -> bool:
        return "{service}" in self.spec

    @property
    def timed(self) -> bool:
        return bool(_TIME_FIELD.search(self.spec.replace("%%", "")))

    @property
    def pattern(self) -> str | None:
        """The glob of every file this spec names, when it is one (strftime fields and globs)."""
        if not self.timed and not _GLOB.search(self.spec):
            return None
        return _TIME_FIELD.sub("*", self.spec.replace("%%", "\0")).replace("\0", "%").replace("{service}", "*")

    @property
    def folder(self) -> Path:
        return Path(self.spec).parent

    def path_for(self, service: str | None) -> Path:
        if self.timed:  # formatted as it is now: a new file when the name changes
            return Path(time.strftime(self.spec.replace("{service}", safe_name(service)), time.gmtime()))
        found = self._paths.get(service)
        if found is None:
            if len(self._paths) >= 1024:  # services are few; names sent at random are not kept
                self._paths.clear()
            found = self._paths[service] = Path(self.spec.replace("{service}", safe_name(service)))
        return found

    def files(self) -> list[Path]:
        """The existing files this spec names, in name order (rotated sets: in the order written)."""
        pattern = self.pattern
        if pattern is not None:
            suffix = Path(self.spec).suffix
            pending = () if Path(self.spec).stem.endswith(PENDING) else tuple(PENDING + s for s in SUFFIXES)
            return sorted(p for p in map(Path, glob.glob(pattern)) if p.is_file() and p.name.endswith(
                suffix or SUFFIXES) and not (pending and p.name.endswith(pending)))
        if not self.per_service:
            path = Path(self.spec)
            parts = sorted(Path(p) for p in glob.glob(glob.escape(str(path.with_name(path.stem))) + "." + NUMBERED
                                                      + glob.escape(path.suffix)))
            return ([path] if path.is_file() else []) + parts
        if not self.folder.is_dir():
            return []
        prefix, _, suffix = Path(self.spec).name.partition("{service}")
        suffixes = SUFFIXES if self.folder_given else (suffix,)
        pending = () if suffix.startswith(PENDING) else tuple(PENDING + s for s in SUFFIXES)
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.name.startswith(prefix)
                      and p.name.endswith(suffixes) and len(p.name) > len(prefix) + len(suffix)
                      and not (pending and p.name.endswith(pending)))

    @property
    def pending(self) -> Template:
        """Where recordings waiting for review go: `x.pending.yaml` beside each `x.yaml`."""
        path = Path(self.spec)
        return Template(str(path.with_name(path.stem + PENDING + path.suffix)))

    def __str__(self) -> str:
        return self.spec


# ---- loading --------------------------------------------------------------------------------

def give_back_memory() -> None:
    """Return the heap a big load freed to the system (glibc's malloc_trim): parsing leaves free
    memory scattered among what is kept, which the process would otherwise hold for its lifetime.
    Nothing happens where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def no_gc() -> Iterator[None]:
    """Building millions of small objects triggers the cyclic GC over and over for nothing (none of
    them is garbage yet): off during a load, it halves the time of a 100,000-interaction cassette."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(path: Path, *, lazy: bool = False) -> Cassette:
    """Load and validate a cassette. A torn last entry (no final newline, or an entry omproxy wrote
    that lacks what it writes last) is dropped and reported in `dropped`; any other broken entry is
    refused with file:line. `lazy` (replay): a file in omproxy's layout keeps its answers on disk, each
    read when first asked for (`AnswerOnDisk`), checked against what was loaded."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CassetteError(f"{name}: cassette not found") from None
    except OSError as e:
        raise CassetteError(f"{name}: cannot read the cassette: {e.strerror or e}") from None
    indexcache.seen(path, raw)
    try:
        with no_gc():
            return _load(raw, name, path if lazy else None)
    finally:
        quickyaml.forget()


def _load(raw: bytes, name: str, lazy: Path | None = None) -> Cassette:
    if not raw.strip():  # an empty file (a full disk's leftover, or `touch`): a cassette with nothing in it
        return Cassette(name, ())
    key = indexcache.key_of(raw)
    if lazy is not None and raw.endswith(b"\n"):  # remembered with where each entry is: nothing to find
        remembered = indexcache.get(key, requests_only=True)
        if remembered is not None and remembered[1]:
            try:
                return Cassette(name, tuple(_on_disk(remembered[0], name, lazy)))
            except (CassetteError, KeyError, TypeError, ValueError):
                pass  # an index that is not what omproxy wrote is not believed: the cassette is read
    starts = yamlformat.entry_starts(raw)
    lines = yamlformat.entry_lines(raw, starts)
    try:
        recorded = _records(raw, name, lines, starts, lazy, key)
        if raw.endswith(b"\n") or not starts:
            return Cassette(name, tuple(recorded))
    except CassetteError:
        if not starts or (raw.endswith(b"\n") and not _cut_short(raw[starts[-1]:])):
            raise
    recorded = _records(raw[:starts[-1]], name, lines, None, lazy)  # all before the torn entry must be whole
    return Cassette(name, tuple(recorded), f"{name}:{lines[-1]}: dropped a torn last interaction "
                    f"(#{len(recorded)}, cut short while being written)")


def _cut_short(last: bytes) -> bool:
    """Whether a last entry that ends with a newline was cut short while omproxy wrote it: it starts as
    omproxy's entries do and lacks what omproxy writes last (`duration_ms`). One that has it was
    written whole: if it does not read, it was edited, and that is an error to show, never a tail to
    drop."""
    if not last.startswith(b"- recorded_at:"):
        return False
    if b"\n  duration_ms:" not in last:
        return True
    try:
        (entry,) = yamlsafe.load(last)
    except (yaml.YAMLError, ValueError, TypeError):
        return False
    return not cassette.whole(entry)


def _records(raw: bytes, name: str, lines: list[int], starts: list[int] | None = None,
             lazy: Path | None = None, key: str | None = None) -> list[Recorded]:
    starts = yamlformat.entry_starts(raw) if starts is None else [s for s in starts if s < len(raw)]
    key = indexcache.key_of(raw) if key is None else key
    entries, alone = _entries(raw, name, starts, lazy is not None, key)
    if lazy is None or not alone or not in_layout(raw, starts) or len(entries) != len(starts):
        return [cassette.from_entry(e, name, i, lines[i] if i < len(lines) else 0) for i, e in enumerate(entries)]
    view, bounds = memoryview(raw), [*starts, len(raw)]
    located = [{**_request_only(e), "at": [lines[i], start, end, zlib.crc32(view[start:end])]}
               for i, (e, start, end) in enumerate(zip(entries, bounds[:-1], bounds[1:], strict=True))]
    recorded = _on_disk(located, name, lazy, entries)
    indexcache.put(key, located, True, requests_only=True)
    return recorded


def _on_disk(located: list[Any], name: str, path: Path, entries: list[Any] | None = None) -> list[Recorded]:
    """Recordings whose answers stay on disk: each entry `at` [line, start, end, CRC] of its bytes
    (checked whole from `entries` when just parsed, else their answers' status, as remembered)."""
    out = []
    for i, e in enumerate(located):
        line, start, end, crc = e["at"]
        if not (type(line) is int and type(start) is int and type(end) is int and type(crc) is int):
            raise ValueError("not where an entry is")
        out.append(cassette.from_entry(entries[i] if entries is not None else e, name, i, line,
                                       AnswerOnDisk(path, name, i, line, start, end, crc)))
    return out


def in_layout(raw: bytes, starts: list[int]) -> bool:
    """Whether the file is laid out as omproxy writes it: its provenance comments and header, then one
    entry after another."""
    head = yamlformat.header_length(raw)
    return head is not None and bool(starts) and starts[0] == head and raw.endswith(b"\n")


class AnswerOnDisk:
    """An answer left on disk: read from its entry's bytes when first played, and believed only if
    those bytes are still the ones loaded (a cassette changed while omproxy runs is said, not served)."""

    __slots__ = ("path", "name", "index", "line", "start", "end", "crc")

    def __init__(self, path: Path, name: str, index: int, line: int, start: int, end: int, crc: int) -> None:
        self.path, self.name, self.index, self.line = path, name, index, line
        self.start, self.end, self.crc = start, end, crc

    def __call__(self) -> Response:
        return self.recorded().response

    def recorded(self) -> Recorded:
        """The whole recording, read again from its entry's bytes (checked as its answer is)."""
        where = f"{self.name}:{self.line}: interaction #{self.index}"
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                data = os.pread(fd, self.end - self.start, self.start)
            finally:
                os.close(fd)
        except OSError as e:
            raise CassetteChanged(f"{where}: cannot read its answer: {e.strerror or e}; restart omproxy "
                                  "to load the cassette again") from None
        if zlib.crc32(data) != self.crc:
            raise CassetteChanged(f"{where}: the cassette changed on disk since omproxy loaded it; restart "
                                  "omproxy to load it again")
        read = quickyaml.entries(data.decode("utf-8"))  # it read this entry alone at load
        if read is None or len(read) != 1:
            raise CassetteChanged(f"{where}: its answer cannot be read again; restart omproxy")
        return cassette.from_entry(read[0], self.name, self.index, self.line)


BATCH = 250  # entries composed at a time: the YAML node graph of a big capture never is in memory whole


def _entries(raw: bytes, name: str, starts: list[int] | None = None, lazy: bool = False,
             key: str | None = None) -> tuple[list[Any], bool]:
    """The entries of a cassette, and whether each was read alone by the quick reader (so it can be
    read again alone: see `AnswerOnDisk`): remembered by content (`indexcache`), else parsed a batch of
    entries at a time when the file has omproxy's layout, else as one document (hand-written files,
    anchors across entries; and the precise file:line of any problem). `lazy`: entries read alone are
    remembered by `_records`, with where each is (`AnswerOnDisk` reads and checks their answers whole)."""
    remembered = indexcache.get(key, lazy)
    if remembered is not None:
        return remembered
    starts = yamlformat.entry_starts(raw) if starts is None else starts
    entries: list[Any] | None = None
    alone = True
    if in_layout(raw, starts):
        bounds = [*starts, len(raw)]
        try:
            entries = []
            for k in range(0, len(starts), BATCH):
                chunk = raw[bounds[k]:bounds[min(k + BATCH, len(starts))]].decode("utf-8")
                quick = quickyaml.entries(chunk)
                if quick is None:
                    alone, quick = False, yamlformat.parse_entries(chunk, name)
                entries += quick
        except (CassetteError, UnicodeDecodeError):
            entries = None
    if entries is None or len(entries) != len(starts):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise CassetteError(f"{name}:{line}: not UTF-8 text; a cassette is a UTF-8 YAML file") from None
        entries, alone = cassette.entries_of(yamlformat.parse(text, name), name), False
    if not (lazy and alone):
        indexcache.put(key, entries, alone, requests_only=lazy)
    return entries, alone


def _request_only(entry: Any) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get("response"), dict):
        return entry
    return {**entry, "response": {"status": entry["response"].get("status")}}


def stream(path: Path, torn: Callable[[str], None] | None = None) -> Iterator[Recorded]:
    """A cassette's recordings as the file is read, a block at a time (the first ones at once, however
    big the file); a file not in omproxy's layout, or with a problem, is loaded whole from there on (and
    refused, or its torn tail dropped and said, as `load` does: to `torn`, else in a warning)."""
    return (rec for rec, _ in _placed(path, torn, locate=False))


def _placed(path: Path, torn: Callable[[str], None] | None = None, *,
            locate: bool = True) -> Iterator[tuple[Recorded, AnswerOnDisk | None]]:
    """`stream`, each recording with where its entry is in the file (with `locate`; None from a file
    loaded whole)."""
    name = str(path)
    done = 0
    try:
        with path.open("rb") as f:
            opening = f.read(yamlformat.HEAD_ROOM)
            head = yamlformat.header_length(opening)
            if head is not None:
                line, block, buf, offset = opening.count(b"\n", 0, head) + 1, 1 << 18, b"", head
                carry = opening[head:]  # read with the header: the start of the first block
                while True:
                    more, carry = carry + f.read(block), b""
                    block = min(block * 2, 1 << 22)
                    buf += more
                    if not more and buf and not buf.endswith(b"\n"):
                        break  # a torn tail: `load` drops it and says so
                    starts = [0, *(m.start() + 1 for m in re.finditer(rb"\n- ", buf))] if buf.startswith(b"- ") \
                        else []
                    if not starts and buf:
                        break
                    whole = len(buf) if not more else starts[-1]
                    chunk, buf = buf[:whole], buf[whole:]
                    if chunk:
                        mine = [s for s in starts if s < whole]
                        firsts = [line - 1 + n for n in yamlformat.entry_lines(chunk, mine)]
                        text = chunk.decode("utf-8")
                        quick = quickyaml.entries(text)
                        parsed = quick or yamlformat.parse_entries(text, name)
                        bounds, view = [*mine, whole], memoryview(chunk)
                        for entry, first, start, end in zip(parsed, firsts, bounds[:-1], bounds[1:], strict=True):
                            # where it is, for an entry the quick reader can read again alone (`AnswerOnDisk`)
                            at = AnswerOnDisk(path, name, done, first, offset + start, offset + end,
                                       zlib.crc32(view[start:end])) if locate and quick else None
                            yield cassette.from_entry(entry, name, done, first), at
                            done += 1
                        line += chunk.count(b"\n")
                        offset += whole
                    if not more:
                        return
    except (CassetteError, UnicodeDecodeError, ValueError):
        pass  # the whole file says precisely what and where
    except OSError as e:
        raise CassetteError(f"{name}: cannot read the cassette: {e.strerror or e}") from None
    rest = load(path)
    if rest.dropped:  # said, as replay says it: the tools read on without it
        (torn or functools.partial(log.warning, "%s"))(rest.dropped)
    yield from ((rec, None) for rec in rest.interactions[done:])


def timeline(paths: list[Path]) -> tuple[int, Iterator[Recorded]]:
    """How many recordings these cassettes hold, and each in recorded order (stable: file order where
    times are equal), read when its turn comes: meanwhile only when each was recorded and where its entry
    is are held (~250 bytes a recording), not the recordings — `verify` over a day of traffic. What the
    quick reader cannot read alone (a hand-written file, small) is held as loaded. Read twice, so
    checked: an entry that changed in between is an error that says so (`CassetteChanged`)."""
    places = _in_recorded_order(paths)
    return len(places), (again() for again in places)


def revisits(paths: list[Path], keep: Callable[[Recorded], T]) -> list[tuple[T, Callable[[], Recorded]]]:
    """`timeline`'s order, each recording as what `keep` makes of it when it is first read and how to
    read it whole again (`diff` keeps a capture's requests as the few fields it pairs them by, and reads
    a recording again when it pairs it)."""
    return _in_recorded_order(paths, keep)


def _in_recorded_order(paths: list[Path], keep: Callable[[Recorded], T] | None = None) -> list[Any]:
    """Where each recording is (how to read it again), in recorded order; with `keep`, each as
    (what `keep` made of it, how to read it again)."""
    places: list[tuple[str, int, int, Any]] = []
    for n, path in enumerate(paths):
        for rec, at in _placed(path):
            again = at.recorded if at is not None else (lambda rec=rec: rec)  # held as loaded
            places.append((rec.recorded_at, n, rec.index, again if keep is None else (keep(rec), again)))
    places.sort(key=lambda p: (p[0], p[1], p[2]))
    return [kept for *_, kept in places]


def load_spec(template: Template, *, must_exist: bool, lazy: bool = False) -> list[Cassette]:
    """The cassettes a --cassette spec names, for replay and auto."""
    return [load(p, lazy=lazy) for p in files_of(template, must_exist=must_exist)]


def files_of(template: Template, *, must_exist: bool) -> list[Path]:
    """The cassette files a --cassette spec names; with `must_exist`, at least one (else an error that
    says where it looked)."""
    found = template.files()
    if must_exist and not found:
        where = template.folder if template.per_service else template.spec
        if not Path(where).exists():
            raise CassetteError(f"{where}: cassette not found")
        raise CassetteError(f"{where}: no cassettes matching {Path(template.spec).name} here; record some with "
                            "'omproxy record', or try --cassette cassettes/examples/reference-story.yaml")
    return found


def check_writable(template: Template) -> None:
    """Before recording: the folder can be written, and a file already there is a cassette omproxy can
    append to (never a config file named by a slip of --cassette)."""
    folder = template.folder
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not _writes(probe):
        raise CassetteError(f"{folder}: cannot record here: the folder is not writable")
    for path in template.files() if template.per_service else [Path(template.spec)]:
        if path.exists():
            _check_appendable(path)


def _writes(folder: Path) -> bool:
    """Whether a file can be made in the folder: made and removed, not asked (`os.access` says yes to
    root anywhere, /proc included)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".omproxy-write-check.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def _check_appendable(path: Path) -> None:
    if path.is_dir():
        raise CassetteError(f"{path}: is a folder; give a file (c.yaml) or a folder with a slash (cassettes/)")
    if not os.access(path, os.W_OK):
        raise CassetteError(f"{path}: cannot record into it: the file is not writable")
    with path.open("rb") as f:
        head = f.read(yamlformat.HEAD_ROOM)
    if not head or yamlformat.header_length(head) is not None:
        return  # empty, or written by omproxy: appending is safe (a torn tail is cut at the first append)
    load(path)  # hand-written: it must be a cassette (raises with file:line when it is not)


def save(path: Path, entries: list[dict[str, Any]]) -> None:
    """Write a whole cassette atomically (a temporary file, fsync'd, renamed over the target)."""
    write_atomically(path, [yamlformat.dump(cassette.document(entries))])


def write_atomically(path: Path, parts: Iterable[bytes]) -> None:
    """Write `parts` (made as they are written) into a temporary file beside `path`, fsync it and
    rename it over `path`: a reader finds the old file or the whole new one. When writing or making a
    part fails, the temporary file is removed and `path` is as it was. What is not a file (a pipe, a
    terminal: `-o /dev/stdout`) is written to as it is: there is no file to replace."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # not there (yet): a new file
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # (a folder: refused by the rename, said as such)
        with path.open("wb") as out:
            for part in parts:
                out.write(part)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # as `record` creates one, the umask applied
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(f.fileno(), stat.S_IMODE(os.stat(path).st_mode))  # a file written over keeps its mode
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- appending ------------------------------------------------------------------------------

def partial_of(path: Path, run: str = "") -> Path:
    """Where a rewrite writes `path`'s new entries until it ends cleanly (not a cassette: not loaded).
    A run of several processes (`run`: its name) writes one partial file, which its coordinator
    renames once all are done (`finish_rewrite`)."""
    return path.with_name(f"{path.name}.{run}.partial" if run else f"{path.name}.partial")


def finish_rewrite(folders: Iterable[Path], run: str) -> list[Path]:
    """A run of several processes ended cleanly: each cassette its processes rewrote (in `folders`) is
    replaced by its partial file. The cassettes replaced."""
    done = []
    for folder in dict.fromkeys(folders):
        for partial in sorted(folder.glob(f"*.{run}.partial")) if folder.is_dir() else []:
            target = partial.with_name(partial.name[:-len(f".{run}.partial")])
            os.replace(partial, target)
            _fsync_folder(folder)
            log.info("rewrote %s", target)
            done.append(target)
    return done


class CassetteWriter:
    """Appends entries to cassettes, group-committed and fsync'd. With `rewrite`, each cassette's entries
    go to its `partial_of` file, renamed over the cassette by `close` (a clean stop): a run that dies
    leaves the old cassette whole and the partial one beside it. A process of a run of several (`run`:
    the run's name, shared by its processes) leaves its partial files to the run's coordinator."""

    def __init__(self, template: Template, *, rewrite: bool = False, run: str = "",
                 rotate_size: int | None = None, max_pending: int = 16 << 20, interval: bool = False,
                 lost: Callable[[OSError, int], None] | None = None, banner: str = "") -> None:
        """`max_pending`: bytes waiting to be written, at most: beyond, an entry is refused at once
        (`BackPressure`) rather than making its client wait. `interval`: entries are answered once
        queued, written in the background and fsync'd at most `SYNC_EVERY` seconds later; `lost`
        is told of those a write then failed for (how many)."""
        self.template = template
        self.max_pending, self.interval, self.lost = max_pending, interval, lost
        self.banner = banner.encode()  # comment lines each new file starts with (its provenance)
        self.pending_bytes = 0
        self._dirty: set[Path] = set()
        self._syncer: asyncio.Task[None] | None = None
        self.rewrite, self.run = rewrite, run
        self.rotate_size = rotate_size  # bytes: past it, the next entry starts name.NNNN+1.yaml
        self.parts: dict[Path, int] = {}  # a size-rotated cassette -> the number of the part written to
        self.partials: dict[Path, Path] = {}  # a cassette being rewritten -> where its new entries are
        self._pending: dict[Path, list[tuple[bytes, asyncio.Future[None]]]] = defaultdict(list)
        self._flushing: dict[Path, asyncio.Task[None]] = {}
        self._checked: set[Path] = set()
        self._left: dict[Path, int] = {}  # the size each file was left at by this process's last append
        self._loop: asyncio.AbstractEventLoop | None = None

    def path_for(self, service: str | None) -> Path:
        return self.template.path_for(service)

    async def append(self, path: Path, data: bytes) -> None:
        """Once `data` is on disk. A client that hangs up (its task cancelled) does not stop its entry
        being written: it stays in the batch, whose writer then finds its waiter gone."""
        if self._loop is None:  # asked once: asking costs a system call (getpid) every time
            self._loop = asyncio.get_running_loop()
        if self.pending_bytes and self.pending_bytes + len(data) > self.max_pending:
            raise BackPressure(f"{self.pending_bytes} bytes are waiting to be written (record.queue is "
                               f"{self.max_pending}): the disk is slower than the traffic")
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[path].append((data, future))
        self.pending_bytes += len(data)
        if path not in self._flushing:
            self._flushing[path] = asyncio.create_task(self._flush(path))
        if not self.interval:
            await future

    async def _flush(self, path: Path) -> None:
        try:
            if self.interval:
                await asyncio.sleep(GATHER)
            while self._pending.get(path):
                batch = self._pending.pop(path)
                size = sum(len(d) for d, _ in batch)
                try:
                    await asyncio.to_thread(self._write, path, b"".join(d for d, _ in batch))
                except OSError as e:
                    if self.interval and self.lost is not None:  # answered already: counted now
                        self.lost(e, len(batch))
                    for _, f in batch:
                        if not f.done():  # else its waiter was cancelled: its client hung up
                            f.set_exception(e)
                            f.exception()  # retrieved here too: a waiter may be gone by the time it is set
                else:
                    for _, f in batch:
                        if not f.done():
                            f.set_result(None)
                finally:
                    self.pending_bytes -= size
        finally:
            del self._flushing[path]

    async def drain(self) -> None:
        while self._flushing:
            await asyncio.gather(*self._flushing.values(), return_exceptions=True)
        if self._syncer is not None:
            self._syncer.cancel()
            self._syncer = None
        await asyncio.to_thread(self._sync)

    async def _sync_soon(self) -> None:
        """durability: interval — what was written is fsync'd every SYNC_EVERY seconds while some is."""
        while self._dirty:
            await asyncio.sleep(SYNC_EVERY)
            await asyncio.to_thread(self._sync)

    def _sync(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for path in dirty:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError as e:
                log.error("NOT RECORDED: cannot fsync %s: %s", path, e.strerror or e)
            finally:
                os.close(fd)

    async def close(self) -> None:
        """At a clean stop: every entry written, then each rewritten cassette replaced by its new one."""
        await self.drain()
        if self.run:  # the run's coordinator renames, once every process of the run is done
            return
        for target, partial in self.partials.items():
            os.replace(partial, target)
            _fsync_folder(target.parent)
            log.info("rewrote %s", target)
        self.partials.clear()

    def _part(self, path: Path, incoming: int) -> Path:
        """The part of a size-rotated cassette the next entries go to: the last one, until it would
        grow past the size (a part holds at least one entry: an entry is never split)."""
        n = self.parts.get(path)
        if n is None:  # the highest part already there, from an earlier run
            found = [int(p.stem.rsplit(".", 1)[1]) for p in map(Path, glob.glob(
                glob.escape(str(path.with_name(path.stem))) + "." + NUMBERED + glob.escape(path.suffix)))]
            n = max(found, default=1)
        part = numbered(path, n)
        with contextlib.suppress(FileNotFoundError):
            size = part.stat().st_size
            assert self.rotate_size is not None
            if size > len(yamlformat.HEADER) and size + incoming > self.rotate_size:
                n += 1
                part = numbered(path, n)
                log.info("rotating: %s is next", part)
        self.parts[path] = n
        return part

    def _write(self, path: Path, data: bytes) -> None:
        if self.rotate_size is not None:
            path = self._part(path, len(data))
        if self.rewrite:
            partial = self.partials.get(path)
            if partial is None:  # the first entry of this run: a partial an earlier run left is replaced
                partial = self.partials[path] = partial_of(path, self.run)
                if not self.run:  # (a run's own name is new: another of its processes may be writing it)
                    partial.unlink(missing_ok=True)
            path = partial
        self._left[path] = append_locked(path, data, self.template.per_service, path not in self._checked,
                                         sync=not self.interval, banner=self.banner, left=self._left.get(path))
        self._checked.add(path)
        if self.interval:
            self._dirty.add(path)
            if self._syncer is None or self._syncer.done():
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._start_syncer)

    def _start_syncer(self) -> None:
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.get_running_loop().create_task(self._sync_soon())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_locked(path: Path, data: bytes, no_follow: bool = False, full_check: bool = True,
                  sync: bool = True, banner: bytes = b"", left: int | None = None) -> int:
    """Append whole entries to a cassette under its flock (creating it with its header), fsync'd (but
    with `sync` false: the caller fsyncs later); a failed write is truncated back so the file is
    exactly as it was, and a file this append made is removed (a full disk leaves no empty file).
    `left`: the size this process last left the file at; when the file is not that size now, another
    writer was here, and its last entry is checked whole (a torn one may end on a newline). Returns
    the size the file is left at."""
    # A file the {service} template names is never a symlink: nothing a request names can make
    # omproxy write elsewhere. A file given by name may be one (the user chose it).
    flags = os.O_RDWR | os.O_APPEND | (os.O_NOFOLLOW if no_follow else 0)
    made = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:  # a new file (and perhaps its folder): made here, removed if nothing lands
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags | os.O_CREAT, 0o644)
        made = True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another omproxy recording into the same file waits
        size = os.fstat(fd).st_size
        report = cut_torn_tail(fd, str(path), full=full_check or (left is not None and size != left))
        if report:
            log.warning("%s", report)
        size = os.fstat(fd).st_size
        if size == 0:
            data = banner + yamlformat.HEADER.encode() + data  # a new file: its provenance, its header
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # exactly as it was: a later append never follows a partial one
            if made and size == 0:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # under the lock: no other writer has written to it
            raise
        return size + len(data)
    finally:
        os.close(fd)


def cut_torn_tail(fd: int, name: str, *, full: bool) -> str | None:
    """Before appending (under the lock): make the file end on a whole entry. Always: a last entry not
    ended by a newline is cut off (one pread). With `full` (the first append of a process): the last
    entry is also parsed, and cut when omproxy wrote it but not to its end."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    ends_whole = os.pread(fd, 1, size - 1) == b"\n"
    if ends_whole and not full:
        return None
    window = min(size, TAIL_WINDOW)
    tail = os.pread(fd, window, size - window)
    starts = yamlformat.entry_starts(tail)
    if not starts:
        return None if ends_whole else f"{name}: the file does not end with a newline; left as it is"
    if ends_whole and not _cut_short(tail[starts[-1]:]):
        return None
    keep = size - window + starts[-1]
    os.ftruncate(fd, keep)
    return f"{name}: cut a torn last interaction off before appending ({size - keep} bytes)"
