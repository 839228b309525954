"""Mutation testing with planted slips: does the suite catch a wrong equation?

    python tests/mutants/run.py                      # every slip of slips.py, a table on stdout
    python tests/mutants/run.py --only edit-cf-1x1   # some slips
    python tests/mutants/run.py --record docs/TESTING.md   # also write the table into that file (make mutants)

Each slip (``slips.py``) replaces one exact snippet of ``src/lindit`` with a plausible mistake. The runner
copies ``src/lindit`` to a temporary folder, applies one slip at a time there (the working tree is never
touched), and runs the slip's test files against the copy (``PYTHONPATH`` puts it before the editable
install; no bytecode is written, so a restored file is never read from a stale cache). A slip is *killed*
when a test fails, *survives* when they all pass; a snippet that no longer occurs exactly once is *stale*
(the source moved on: update the slip). Exit status 1 when any slip survives or is stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slips import SLIPS, Slip

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "lindit"
START, END = "<!-- mutants:start -->", "<!-- mutants:end -->"


def run_tests(slip: Slip, copy: Path) -> tuple[str, str, float]:
    """(outcome, the first failing test or a note, seconds) for one slip applied in ``copy``."""
    target = copy / "lindit" / slip.file
    original = target.read_text()
    if original.count(slip.old) != 1:
        return "stale", f"snippet found {original.count(slip.old)} times in {slip.file}", 0.0
    target.write_text(original.replace(slip.old, slip.new))
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *slip.tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return "survived", "", seconds
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
    if proc.returncode == 1 and failed:
        return "killed", failed[0], seconds
    return "error", (proc.stdout + proc.stderr).strip().splitlines()[-1][:160], seconds


def check_copy(copy: Path) -> None:
    """The tests must import lindit from the copy, or no slip would be seen."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run([sys.executable, "-c", "import lindit; print(lindit.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(str(copy)):
        sys.exit(f"tests would import lindit from {found}, not from the mutated copy in {copy}")


def table(rows: list[tuple[Slip, str, str, float]], total: float) -> str:
    killed = sum(r[1] == "killed" for r in rows)
    lines = [f"Last run: `python tests/mutants/run.py` (`make mutants`), {killed} of {len(rows)} slips killed, "
             f"{total / 60:.1f} min on this machine's shared 2 cores.", "",
             "| slip | where | what it plants | result | first failing test |", "| --- | --- | --- | --- | --- |"]
    for slip, outcome, note, _ in rows:
        lines.append(f"| `{slip.name}` | {slip.file} | {slip.what} | {outcome} | {note.replace('|', '/')} |")
    return "\n".join(lines)


def record(path: Path, text: str) -> None:
    doc = path.read_text()
    if START not in doc or END not in doc:
        sys.exit(f"{path} has no {START} ... {END} block to write the table into")
    head, rest = doc.split(START, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="SLIP", help="run these slips only")
    parser.add_argument("--record", type=Path, metavar="FILE", help="write the result table into FILE's mutants block")
    args = parser.parse_args(argv)
    names = [s.name for s in SLIPS]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown slip(s) {unknown}; valid: {', '.join(names)}")
    slips = [s for s in SLIPS if not args.only or s.name in args.only]
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lindit-mutants-") as tmp:
        copy = Path(tmp)
        shutil.copytree(SRC, copy / "lindit", ignore=shutil.ignore_patterns("__pycache__"))
        check_copy(copy)
        for i, slip in enumerate(slips, 1):
            outcome, note, seconds = run_tests(slip, copy)
            rows.append((slip, outcome, note, seconds))
            print(f"[{i}/{len(slips)}] {slip.name}: {outcome} {note} ({seconds:.0f} s)", flush=True)
    text = table(rows, time.perf_counter() - start)
    print("\n" + text)
    if args.record:
        record(args.record, text)
    return int(any(r[1] != "killed" for r in rows))


if __name__ == "__main__":
    sys.exit(main())
