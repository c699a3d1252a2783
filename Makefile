# robustlab: every target runs inside the project virtual environment .venv that `make install` creates.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GRID ?= experiment=grid_default
ARGS ?=

.PHONY: install run test test-all test-slurm lint clean bench report sweep

install: $(STAMP)

# The stamp makes a second `make install` a no-op until pyproject.toml changes.
# torch==2.13.0 is pinned: here pip resolves it to the local CPU wheel, elsewhere to the CUDA build of
# the same version. torchattacks 3.5.1 declares torchvision and requests~=2.25.1 as dependencies but
# imports neither; torchvision's wheel breaks Lightning's import on a CPU-only torch, so torchattacks
# is installed with --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

# The default grid on the embedded digits (rerunning trains and attacks nothing). The sweep ends
# with its report (multirun/grid_default/report.md, .csv, .html, figures; the W&B summary run too
# with ARGS="logger=wandb"): the report callback of conf/hydra/callbacks/report.yaml writes it.
run: $(STAMP)
	$(PY) -m robustlab experiment=grid_default $(ARGS)

# Bigger grids: make sweep GRID="experiment=at_quick" or GRID="defense=erm,pgd_at dataset=digits,mnist"
sweep: $(STAMP)
	$(PY) -m robustlab -m $(GRID) $(ARGS)

report: $(STAMP)
	$(VENV)/bin/robustlab-report $(or $(DIR),multirun)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not slurm"

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not slurm"

# The slurm-marked tests on a single-node SLURM cluster on this machine (root; the script installs
# slurm-wlm and munge with apt-get the first time and leaves the cluster up; stop it with
# scripts/slurm_cluster.sh stop).
test-slurm: $(STAMP)
	scripts/slurm_cluster.sh start
	$(PY) -m pytest -q -m slurm tests/slurm --durations=0

lint: $(STAMP)
	$(VENV)/bin/ruff check robustlab tests experiments examples
	$(VENV)/bin/ruff format --check robustlab tests experiments examples

# Every figure beside its reference, on this machine, in one run (an idle machine: the ratios are
# side by side, but load that comes and goes still skews them). The bench extra installs the
# reference AutoAttack (pyautoattack 0.2.0). Figures and machine: experiments/bench/README.md.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) experiments/bench/train_loop.py
	$(PY) experiments/bench/autoattack_bench.py
	$(PY) experiments/bench/mi_batched_forward.py
	$(PY) experiments/bench/mi_eot_batched.py

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
