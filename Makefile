# Set-up and the usual jobs. `make test` and `make demo` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

# torch first (the CPU build), then everything else constrained to it, so that no other
# package can pull a CUDA build of torch.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: setup
	$(BIN)/pytest -q

demo: setup
	$(BIN)/cellclr demo --out runs/demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup
	$(BIN)/python bench/train_step.py --config bbbc021-cpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
