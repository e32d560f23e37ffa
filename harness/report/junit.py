"""The JUnit XML report: one testcase per scenario, the explanation as failure text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from harness.run.result import ScenarioResult, ScenarioVerdict
from harness.scenario.explain import explain

__all__ = ["junit_xml", "write_junit"]


def junit_xml(results: Sequence[ScenarioResult], name: str = "sts-harness") -> str:
    """The JUnit XML document for ``results``."""
    count = {v: sum(r.verdict is v for r in results) for v in ScenarioVerdict}
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(results)),
        failures=str(count[ScenarioVerdict.FAILED]),
        errors=str(count[ScenarioVerdict.ERROR]),
        skipped=str(count[ScenarioVerdict.SKIPPED]),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"scenarios.{r.topic}", name=r.id,
            file=r.path, time=f"{r.seconds:.3f}",
        )  # fmt: skip
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="covers", value=" ".join(r.covers))
        ET.SubElement(props, "property", name="engine", value=r.engine)
        if r.verdict is ScenarioVerdict.SKIPPED:
            ET.SubElement(case, "skipped", message=r.reason)
        elif r.verdict is not ScenarioVerdict.PASSED:
            tag = "failure" if r.verdict is ScenarioVerdict.FAILED else "error"
            keys = [m.key for s in r.steps for m in s.mismatches] + [m.key for m in r.final]
            first = keys[0] if keys else (r.reason.strip().splitlines() or ["error"])[-1]
            el = ET.SubElement(case, tag, message=f"{r.title}: {first}")
            el.text = explain(r)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(results: Sequence[ScenarioResult], path: str | Path) -> None:
    """Write the JUnit XML report to ``path``."""
    Path(path).write_text(junit_xml(results), encoding="utf-8")
