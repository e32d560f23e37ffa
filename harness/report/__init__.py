"""Reports of scenario runs: JSON, JUnit XML and one self-contained HTML file."""

from __future__ import annotations

from harness.report.html import html_report, write_html
from harness.report.json import report_dict, write_json
from harness.report.junit import junit_xml, write_junit
from harness.report.sequence import sequence_svg

__all__ = [
    "html_report",
    "junit_xml",
    "report_dict",
    "sequence_svg",
    "write_html",
    "write_json",
    "write_junit",
]
