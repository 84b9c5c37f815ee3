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


def test_sentence_mode_times_the_packaged_minilm_on_composed_texts_with_equal_vectors(load_benchmark, monkeypatch,
                                                                                         capsys):
    # the real encoder at the shipped batch (not a tiny stand-in): its vectors are the ones every cache holds
    script = load_benchmark("encode_batch")
    monkeypatch.setattr(sys, "argv", ["encode_batch.py", "--sentence", "--model", "light_two_tower", "--dataset",
                                      "simshop-tiny", "--texts", "150", "--sizes", "32"])
    script.main()
    out = capsys.readouterr().out
    assert "150 item texts of light_two_tower/pretrained" in out
    lines = [line for line in out.splitlines() if line.startswith("batch")]
    assert [int(line.split()[1]) for line in lines] == [256, 256, 32, 32]
    differences = [float(re.search(r"max \|diff\| (\S+)", line).group(1)) for line in lines]
    assert max(differences) <= 1e-6


def test_order_mode_times_the_models_order_against_catalogue_order_with_fewer_padded_tokens(load_benchmark,
                                                                                           monkeypatch, capsys):
    script = load_benchmark("encode_batch")
    monkeypatch.setattr(sys, "argv", ["encode_batch.py", "--order", "--model", "mrse", "--dataset", "simshop-tiny"])
    script.main()
    out = capsys.readouterr().out
    timed = [line for line in out.splitlines() if "#" in line]
    assert [line.split("#")[0].strip() for line in timed] == ["catalogue order"] * 2 + ["model's order"] * 2
    padded = [int(re.search(r"padded tokens\s+([\d,]+)", line).group(1).replace(",", "")) for line in timed]
    assert padded[2] < padded[0]  # longest first pads less than catalogue order on texts of mixed lengths
    differences = [float(re.search(r"max \|diff\| (\S+)", line).group(1)) for line in timed]
    assert max(differences) <= 1e-6


def test_padded_tokens_counts_each_batch_at_its_longest_text(load_benchmark):
    import numpy as np
    import torch

    script = load_benchmark("encode_batch")
    ids = torch.tensor([[5, 0, 0], [5, 6, 7], [5, 6, 0], [5, 0, 0]])  # lengths 1, 3, 2, 1
    assert script.padded_tokens(ids, np.arange(4), 2) == 2 * 3 + 2 * 2
    assert script.padded_tokens(ids, np.array([1, 2, 0, 3]), 2) == 2 * 3 + 2 * 1
