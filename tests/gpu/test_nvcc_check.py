"""The nvcc check's ptxas parser (CI relies on it for the resource table), on ptxas's own output format."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("nvcc_check", Path(__file__).with_name("nvcc_check.py"))
nvcc_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nvcc_check)

PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kI6__halfLi64EEvPKT_Pf' for 'sm_80'
ptxas info    : Function properties for _Z1kI6__halfLi64EEvPKT_Pf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 16384 bytes smem, 368 bytes cmem[0]
ptxas info    : Compile time = 20.618 ms
ptxas info    : Compiling entry function '_Z4tinyv' for 'sm_90'
ptxas info    : Function properties for _Z4tinyv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 2 registers, used 0 barriers, 352 bytes cmem[0]
"""


def test_parse_ptxas_reads_each_kernel():
    rows = nvcc_check.parse_ptxas(PTXAS)
    assert [(r["kernel"], r["arch"]) for r in rows] == [("_Z1kI6__halfLi64EEvPKT_Pf", "sm_80"), ("_Z4tinyv", "sm_90")]
    first, second = rows
    assert (first["registers"], first["smem"], first["stack"], first["spill_stores"], first["spill_loads"]) == \
        (168, 16384, 8, 4, 12)
    assert (second["registers"], second["smem"], second["spill_stores"]) == (2, 0, 0)


def test_markdown_has_one_row_per_kernel():
    rows = [dict(r, file="a.cu") for r in nvcc_check.parse_ptxas(PTXAS)]
    table = nvcc_check.markdown(rows).strip().splitlines()
    assert len(table) == 2 + len(rows)
    assert "| a.cu | `_Z4tinyv` | sm_90 | 2 | 0 | 0 | 0 / 0 |" in table
