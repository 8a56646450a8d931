"""A mutation sweep of the Mojo kernels: does the suite catch a plausible bug in each kernel (the GPU warp kernels
through their CPU emulation and their PTX)?

Each mutant (scripts/kernel_mutants.toml) is one text edit of a kernel file, applied to a copy of the working
tree (never to it); the copy's tests that exercise that kernel then run against the mutated kernels, compiled
afresh (the kernels' cache folder is named by their content, so a mutant never reuses the real kernels'
compile, and the real kernels keep theirs). A mutant is caught when at least one test fails; the summary names the first.

    .venv/bin/python scripts/kernel_mutants.py              # every mutant (minutes each: a recompile)
    .venv/bin/python scripts/kernel_mutants.py ln_eps cross_scale   # some of them
    .venv/bin/python scripts/kernel_mutants.py --list
    .venv/bin/python scripts/kernel_mutants.py --parity-only gemv_pair_swap   # would the model's parity alone?

A baseline run of each selection on the unmutated copy comes first: a selection that fails without a bug
proves nothing.
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
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = "maxwhisper/kernels"

# The tests that run each kernel on the CPU; the warp kernels' through their emulation (the same item functions
# as on the GPU) and the PTX checks of their GPU build
SELECTIONS = {
    "decoder_warps.mojo": ["tests/unit/test_warps_build.py", "tests/parity/test_decoder_parity.py",
                           "tests/unit/test_decoder_properties.py", "tests/parity/test_decoder_end_to_end.py",
                           "-k", "warps and not bug"],
    "decoder_block.mojo": ["tests/unit/test_kernel_isas.py", "tests/parity/test_decoder_parity.py", "tests/unit/test_decoder_properties.py",
                           "tests/parity/test_decoder_end_to_end.py", "-k", "not warps and not bug"],
    "gemv_nt.mojo": ["tests/unit/test_gemv.py", "tests/parity/test_decoder_parity.py",
                     "tests/parity/test_decoder_end_to_end.py", "-k", "not warps and not bug"],
    "encoder_attention.mojo": ["tests/unit/test_kernel_isas.py", "tests/unit/test_encoder_attention.py", "tests/parity/test_live.py",
                               "tests/parity/test_golden.py"],
}


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    what: str


MUTANTS = [Mutant(**m) for m in tomllib.loads((ROOT / "scripts" / "kernel_mutants.toml").read_text())["mutant"]]


def copy_tree(dst: Path) -> None:
    """The working tree's tracked and untracked files (not .venv, caches or results) into dst."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def compiles(tree: Path, log: Path) -> bool:
    """Whether the tree's kernels build (`mojo precompile`): a mutant that does not build proves nothing."""
    mojo = ROOT / ".venv/bin/mojo"
    out = Path(tempfile.mkdtemp(prefix="mutant-")) / "kernels.mojoc"
    try:
        done = subprocess.run([str(mojo), "precompile", str(tree / KERNELS), "-o", str(out)], capture_output=True,
                              text=True, timeout=600, cwd=tree / "maxwhisper")
        log.write_text(done.stdout + done.stderr)
        return done.returncode == 0 and out.is_file()
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def run_selection(tree: Path, selection: list[str], log: Path) -> tuple[int, str, float]:
    """pytest on the selection in tree; returns (exit code, first failing test or '', seconds)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "--benchmark-disable", "-o", "addopts=-m 'not slow and not gpu'", *selection]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
    return done.returncode, failed[0] if failed else "", time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--parity-only", action="store_true",
                        help="leave out tests/unit: whether the model-level parity tests alone catch each mutant")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "kernel_mutants",
                        help="folder for each run's pytest output")
    args = parser.parse_args()
    mutants = MUTANTS
    if args.list:
        for m in mutants:
            print(f"{m.name:20s} {m.file:24s} {m.what}")
        return 0
    unknown = set(args.names) - {m.name for m in mutants}
    if unknown:
        sys.exit(f"unknown mutant(s) {sorted(unknown)}: see --list")
    chosen = [m for m in mutants if not args.names or m.name in args.names]
    args.logs.mkdir(parents=True, exist_ok=True)
    selections = {file: [a for a in selection if not (args.parity_only and a.startswith("tests/unit/"))]
                  for file, selection in SELECTIONS.items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="kernel-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        for file in sorted({m.file for m in chosen}):  # the baseline: each selection passes unmutated
            code, first, secs = run_selection(tree, selections[file], args.logs / f"baseline-{file}.log")
            print(f"baseline {file}: exit {code} in {secs:.0f} s", flush=True)
            if code != 0:
                sys.exit(f"the unmutated selection for {file} fails ({first}): see {args.logs}")
        for m in chosen:
            path = tree / KERNELS / m.file
            source = path.read_text()
            if source.count(m.old) != 1:
                sys.exit(f"{m.name}: its text occurs {source.count(m.old)} times in {m.file}, not once")
            path.write_text(source.replace(m.old, m.new))
            try:
                if compiles(tree, args.logs / f"{m.name}.build.log"):
                    code, first, secs = run_selection(tree, selections[m.file], args.logs / f"{m.name}.log")
                else:
                    code, first, secs = -1, "", 0.0
            finally:
                path.write_text(source)
            verdict = {1: "caught", 0: "missed", -1: "does not build"}.get(code, f"error (exit {code})")
            rows.append((m, verdict, first, secs))
            print(f"{m.name}: {verdict} {first} ({secs:.0f} s)", flush=True)
    print("\n| mutant | kernel | bug | verdict | first failing test |\n| --- | --- | --- | --- | --- |")
    for m, verdict, first, secs in rows:
        print(f"| `{m.name}` | {m.file} | {m.what} | {verdict} | `{first}` |")
    caught = sum(v == "caught" for _, v, _, _ in rows)
    print(f"\ncaught {caught} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
