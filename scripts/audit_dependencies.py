"""Audit the installed packages for known vulnerabilities with pip-audit, and say plainly when
the audit could not be done.

    .venv/bin/python scripts/audit_dependencies.py [--service pypi,osv] [--timeout 15]

pip-audit asks a vulnerability service about every installed package (this virtualenv, the
project itself excluded): PyPI's JSON API (``https://pypi.org/pypi/<name>/<version>/json``) or
OSV (``https://api.osv.dev``). Where the service cannot be reached, or answers "not found" for
a package, pip-audit skips that package and may still print "No known vulnerabilities found"
with exit status 0. This script does not: it counts what was really checked.

Services are tried in the order given until one checks every package. Exit status:

- 0: every package was checked and none has a known vulnerability;
- 1: known vulnerabilities (listed with the versions that fix them);
- 2: the audit is incomplete: the vulnerability data could not be reached, or some packages
  could not be checked (each service's reason is printed). Not a clean result.
"""

# This script's output is its printed report.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CLEAN, VULNERABLE, INCOMPLETE = 0, 1, 2


@dataclass
class Audit:
    service: str
    checked: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (package, reason)
    vulnerable: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    error: str = ""  # pip-audit failed outright (e.g. the service's host cannot be reached)

    @property
    def complete(self) -> bool:
        return not self.error and not self.skipped and bool(self.checked)


def summarize(service: str, report: dict) -> Audit:
    """What a pip-audit JSON report really says: which packages were checked, which were
    skipped (and why), and the known vulnerabilities."""
    audit = Audit(service)
    for dependency in report.get("dependencies", []):
        name = dependency["name"]
        if "skip_reason" in dependency:
            # The project itself (installed editable) is not a dependency to look up.
            if "editable" not in dependency["skip_reason"]:
                audit.skipped.append((name, dependency["skip_reason"]))
            continue
        audit.checked.append(f"{name}=={dependency.get('version', '?')}")
        for vuln in dependency.get("vulns", []):
            audit.vulnerable.append(
                (
                    name,
                    dependency.get("version", "?"),
                    vuln["id"],
                    list(vuln.get("fix_versions", [])),
                )
            )
    return audit


def run_pip_audit(service: str, timeout: int) -> Audit:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--local",
                "--skip-editable",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(output),
                "--vulnerability-service",
                service,
                "--timeout",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if output.exists() and output.stat().st_size:
            return summarize(service, json.loads(output.read_text()))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return Audit(service, error=lines[-1] if lines else f"pip-audit exited {result.returncode}")


def _reason_counts(skipped: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, reason in skipped:
        # "Dependency not found on PyPI and could not be audited: django (5.2.19)" -> the cause
        cause = reason.split(":")[0].strip() if name in reason else reason
        counts[cause] = counts.get(cause, 0) + 1
    return counts


def report(audits: list[Audit]) -> int:
    final = next((audit for audit in audits if audit.complete), None)
    for audit in audits:
        total = len(audit.checked) + len(audit.skipped)
        if audit.error:
            print(f"[{audit.service}] could not reach its vulnerability data: {audit.error}")
        elif audit.skipped:
            print(
                f"[{audit.service}] checked {len(audit.checked)} of {total} packages; "
                f"{len(audit.skipped)} could not be checked:"
            )
            for cause, count in sorted(_reason_counts(audit.skipped).items()):
                print(f"    {count} x {cause}")
            if not audit.checked and audit.service == "pypi":
                print(
                    "    (PyPI said 'not found' for every release: its per-release JSON API, "
                    "pypi.org/pypi/<name>/<version>/json, is not served to this machine)"
                )
        else:
            print(f"[{audit.service}] checked all {total} installed packages")
    vulnerable = [entry for audit in audits for entry in audit.vulnerable]
    if vulnerable:
        print("\nKnown vulnerabilities:")
        for name, version, vuln_id, fixes in sorted(
            set((n, v, i, tuple(f)) for n, v, i, f in vulnerable)
        ):
            fixed = f"fixed in {', '.join(fixes)}" if fixes else "no fixed version yet"
            print(f"    {name} {version}: {vuln_id} ({fixed})")
        return VULNERABLE
    if final is None:
        print(
            "\nINCOMPLETE: the dependency audit could not be done here (no vulnerability "
            "service answered for every package). This is not a clean result; run "
            "`make audit` where pypi.org's JSON API or api.osv.dev is reachable."
        )
        return INCOMPLETE
    print(
        f"\nOK: no known vulnerabilities in {len(final.checked)} packages "
        f"(vulnerability data: {final.service})."
    )
    return CLEAN


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--service", default="pypi,osv", help="pip-audit vulnerability services to try, in order"
    )
    parser.add_argument("--timeout", type=int, default=15, help="socket timeout (s)")
    args = parser.parse_args()
    audits = []
    for service in args.service.split(","):
        audit = run_pip_audit(service.strip(), args.timeout)
        audits.append(audit)
        if audit.complete:
            break
    return report(audits)


if __name__ == "__main__":
    sys.exit(main())
