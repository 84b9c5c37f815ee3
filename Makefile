# retrieval_zoo: `make bench MODEL=<name>` and `make test` set everything up on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?= light_two_tower
DATASET ?= simshop
SEEDS ?= 1
VARIANT ?=
ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock bench leaderboard title-only claims mechanisms scale data test lint perf clean

# constraints.txt pins every package to its version in the environment that made the latest board rows, so a rerun
# gets the same numerics (pyproject.toml's dependencies are ranges; a newer release can move scores' last bits)
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# rewrite constraints.txt from the installed environment (after a deliberate upgrade; rerun the boards after it)
lock: install
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	touch $(VENV)/.installed

bench: install
	$(PY) -m retrieval_zoo bench --model $(MODEL) --dataset $(DATASET) --seeds $(SEEDS) $(if $(VARIANT),--variant $(VARIANT)) $(ARGS)

leaderboard: install
	$(PY) -m retrieval_zoo leaderboard $(ARGS)

# the Icecat cross-validation with title-only item text, on its own board (benchmarks/title_only.yaml)
title-only: install
	$(PY) -m retrieval_zoo leaderboard --plan benchmarks/title_only.yaml --results results/title_only $(ARGS)

claims: install
	$(PY) -m retrieval_zoo claims

mechanisms: install
	$(PY) benchmarks/mechanisms.py $(ARGS)

# every model end to end on ESCI-shaped data (default the full US size: hours on a CPU; ARGS="--products 20000")
scale: install
	$(PY) benchmarks/scale.py $(ARGS)

data: install
	$(PY) -m retrieval_zoo data --dataset $(DATASET) $(ARGS)

test: install
	$(PY) -m ruff check retrieval_zoo tests benchmarks datasets
	$(PY) -m pytest -q $(ARGS)

perf: install
	$(PY) benchmarks/eval_overhead.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/bench_time.py
	$(PY) benchmarks/encode_batch.py --model mrse
	$(PY) benchmarks/encode_batch.py --sentence --model light_two_tower --dataset icecat
	$(PY) benchmarks/encode_batch.py --order --model mrse --variant pretrained --dataset icecat
	$(PY) benchmarks/encode_batch.py --order --model mmse --variant pretrained --dataset icecat

clean:
	rm -rf $(VENV) results/runs .pytest_cache
