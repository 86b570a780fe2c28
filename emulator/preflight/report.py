"""A pre-flight report: one PASS, WARN, FAIL or SKIP per check, each with its reason and fix."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from emulator.progress import Log

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    status: str
    message: str
    fix: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    job: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def add(self, check: Check, log: Log) -> Check:
        self.checks.append(check)
        log(format_check(check))
        return check

    def failed(self, *names: str) -> list[str]:
        """Those of `names` (all checks when none given) whose status is FAIL."""
        return [c.name for c in self.checks if c.status == FAIL and (not names or c.name in names)]

    def to_json(self) -> str:
        return json.dumps({"job": self.job, "ok": self.ok, "seconds": round(self.seconds, 2),
                           "checks": [asdict(c) for c in self.checks]}, indent=2)


def format_check(check: Check) -> str:
    line = f"{check.status:4}  {check.name:<22} {check.message}"
    if check.fix and check.status in (FAIL, WARN):
        line += f"\n      fix: {check.fix}"
    return line + (f"  ({check.seconds:.1f} s)" if check.seconds >= 0.05 else "")


def format_report(report: Report) -> str:
    counts = {status: sum(c.status == status for c in report.checks) for status in (PASS, WARN, FAIL, SKIP)}
    verdict = "the job should work on SageMaker" if report.ok else "fix the FAILs before sending the job"
    return (f"{counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed, {counts[SKIP]} skipped "
            f"in {report.seconds:.1f} s: {verdict}")
