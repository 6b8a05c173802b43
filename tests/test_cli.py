"""The main job's command line: ``python -m quipref table``."""
import re

from quipref.cli import main


def test_table_prints_every_method_with_exact_bits(capsys):
    assert main(["table", "--bits", "2", "--m", "48", "--n", "96", "--qtip-L", "6"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*2\s+(\S+)\s+([0-9.e-]+)\s+(\S+)\s+(\S+)\s+([0-9.]+)\s+[0-9.]+$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), m.group(3), float(m.group(5)))
    assert set(rows) == {"rtn", "gptq", "quip", "quip#", "qtip"}
    # Theorem 1's bound is printed for the scalar-grid LDLQ methods only
    assert rows["gptq"][1] != "-" and rows["quip"][1] != "-" and rows["quip#"][1] == "-"
    # codes cost exactly 2 bits/w for quip#; side data is positive
    assert 2.0 < rows["quip#"][2] < 2.2
    # the headline ordering on this seeded layer (regression check, not a theorem)
    assert rows["quip#"][0] < rows["rtn"][0] and rows["qtip"][0] < rows["rtn"][0]
