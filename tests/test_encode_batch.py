"""benchmarks/encode_batch.py: prints each batch size's rate against 1024 and how far its vectors are from 1024's."""

from __future__ import annotations

import re
import sys


def test_it_prints_each_size_twice_with_a_ratio_and_equal_vectors(load_benchmark, monkeypatch, capsys):
    script = load_benchmark("encode_batch")
    monkeypatch.setattr(sys, "argv", ["encode_batch.py", "--model", "mmse", "--dataset", "simshop-tiny",
                                      "--sizes", "64"])
    script.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("batch")]
    assert [int(line.split()[1]) for line in lines] == [1024, 1024, 64, 64]
    assert lines[0].split("x")[1].startswith("1.00")  # the baseline against itself
    differences = [float(re.search(r"max \|diff\| (\S+)", line).group(1)) for line in lines]
    assert max(differences) <= 1e-6
