"""Compile every CUDA source of itnet_np.gpu with nvcc, and report each kernel's resources.

    python tests/gpu/nvcc_check.py                    # sm_80 and sm_90, a markdown table on stdout
    python tests/gpu/nvcc_check.py --arch sm_90 --markdown resources.md

Each ``gpu/*.cu`` is compiled on its own, once per architecture (``nvcc -std=c++17 -c
-DITNET_INSTANTIATE -Xptxas -v``), the compiles running side by side, one per CPU core (the table
keeps file and architecture order). The define makes a file instantiate its kernel templates for
every shape it supports, so a syntax or type error anywhere in a template body fails here, on a machine with nvcc and no GPU (CI's). ptxas
then prints, per kernel, its registers per thread, static shared memory, stack frame and spills;
the table lists them (kernel names demangled with c++filt when it exists). Exit status 1 when a
compile fails or a file instantiates no kernel (and, with ``--fail-on-spills``, when a kernel
spills registers), 2 when nvcc is missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GPU_DIR = Path(__file__).resolve().parents[2] / "gpu"
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def parse_ptxas(text):
    """Rows (kernel, arch, registers, smem bytes, stack bytes, spill stores, spill loads) from ``-Xptxas -v``."""
    rows, current = [], None
    for line in text.splitlines():
        if (m := _ENTRY.search(line)):
            current = {"kernel": m.group(1), "arch": m.group(2), "stack": 0, "spill_stores": 0,
                       "spill_loads": 0, "registers": None, "smem": 0}
            rows.append(current)
        elif current is not None and (m := _FRAME.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m.group(1))
            current["smem"] = int(m.group(2) or 0)
    return rows


def demangle(names):
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return list(names)
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=False)
    lines = out.stdout.splitlines()
    return lines if out.returncode == 0 and len(lines) == len(names) else list(names)


def compile_source(nvcc, source, arch, workdir):
    """(ok, ptxas rows, compiler output) for one file and one architecture."""
    cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-DITNET_INSTANTIATE", "-Xptxas", "-v", "-c", str(source),
           "-o", str(Path(workdir) / f"{source.stem}.{arch}.o")]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    return proc.returncode == 0, parse_ptxas(output), output


def markdown(rows):
    lines = ["| file | kernel | arch | registers | smem (bytes) | stack (bytes) | spill stores / loads (bytes) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | `{r['kernel']}` | {r['arch']} | {r['registers']} | {r['smem']} | {r['stack']} | "
              f"{r['spill_stores']} / {r['spill_loads']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["sm_80", "sm_90"], help="targets (default sm_80 sm_90)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--fail-on-spills", action="store_true", help="fail when a kernel spills registers")
    args = parser.parse_args(argv)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("nvcc_check: nvcc is not on PATH", file=sys.stderr)
        return 2
    sources = sorted(GPU_DIR.glob("*.cu"))
    failures, rows = [], []
    jobs = [(source, arch) for source in sources for arch in args.arch]
    with tempfile.TemporaryDirectory(prefix="itnet-nvcc-") as workdir, \
            ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        results = pool.map(lambda job: compile_source(nvcc, job[0], job[1], workdir), jobs)
        for (source, arch), (ok, found, output) in zip(jobs, results):
            if not ok:
                failures.append(f"{source.name} ({arch}) does not compile:\n{output}")
                continue
            if not found:
                failures.append(f"{source.name} ({arch}) compiled no kernel: does it instantiate its "
                                "templates under #ifdef ITNET_INSTANTIATE?")
            for row, name in zip(found, demangle([r["kernel"] for r in found])):
                rows.append(dict(row, kernel=name, file=source.name))
    table = markdown(rows)
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table, encoding="utf-8")
    spills = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    if spills and args.fail_on_spills:
        failures += [f"{r['file']}: {r['kernel']} ({r['arch']}) spills {r['spill_stores']} / "
                     f"{r['spill_loads']} bytes" for r in spills]
    for r in spills:
        print(f"nvcc_check: note: {r['file']}: {r['kernel']} ({r['arch']}) spills", file=sys.stderr)
    for failure in failures:
        print("nvcc_check: " + failure, file=sys.stderr)
    print(f"nvcc_check: {len(sources)} sources, {len(rows)} kernel builds, {len(failures)} problems",
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
