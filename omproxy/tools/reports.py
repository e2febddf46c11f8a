"""What `verify` and `diff` found, written for a person (text), a CI system (JUnit XML) or a script
(JSON). Pure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

from omproxy.tools.verify import Result, Verdict


def text(results: list[Result], seconds: float, what: str = "verify") -> str:
    lines = []
    for r in results:
        if r.verdict is Verdict.SAME:
            lines.append(f"{r.name}: same")
        elif r.verdict is Verdict.NOT_VERIFIABLE:
            lines.append(f"{r.name}: not verifiable ({'; '.join(r.details)})")
        else:
            lines.append(f"{r.name}: {r.verdict.value}")
            lines += [f"    {d}" for d in r.details]
    lines.append(summary(results, seconds, what))
    return "\n".join(lines)


def summary(results: list[Result], seconds: float, what: str = "verify") -> str:
    counts = Counter(r.verdict for r in results)
    parts = ", ".join(f"{counts.get(v, 0)} {v.value}{'s' if v is Verdict.ERROR and counts.get(v) != 1 else ''}"
                      for v in Verdict)
    return f"{what}: {parts} ({len(results)} interactions, {seconds:.1f} s)"


def as_json(results: list[Result], learned: list[str] | None = None) -> str:
    data: dict[str, Any] = {
        "results": [{"cassette": r.recorded.cassette, "index": r.recorded.index, "line": r.recorded.line,
                     "name": r.name, "verdict": r.verdict.value, "details": r.details} for r in results],
        "totals": {v.value: sum(r.verdict is v for r in results) for v in Verdict}}
    if learned is not None:
        data["learned_noise"] = learned
    return json.dumps(data, ensure_ascii=False, indent=2)


def junit(results: list[Result], seconds: float, what: str = "omproxy verify") -> bytes:
    """One test case per interaction; a difference is a failure, a transport error an error, a request
    that could not be sent a skipped case."""
    counts = Counter(r.verdict for r in results)
    suite = ET.Element("testsuite", name=what, tests=str(len(results)), failures=str(counts[Verdict.DIFFERS]),
                       errors=str(counts[Verdict.ERROR]), skipped=str(counts[Verdict.NOT_VERIFIABLE]),
                       time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=r.recorded.cassette, name=r.name, time="0")
        message = "; ".join(r.details)
        if r.verdict is Verdict.DIFFERS:
            ET.SubElement(case, "failure", message=message[:1000]).text = "\n".join(r.details)
        elif r.verdict is Verdict.ERROR:
            ET.SubElement(case, "error", message=message[:1000]).text = message
        elif r.verdict is Verdict.NOT_VERIFIABLE:
            ET.SubElement(case, "skipped", message=message[:1000])
    written: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return written
