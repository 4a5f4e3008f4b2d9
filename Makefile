# The two commands of the README's quickstart. Each creates .venv if missing and installs first.
#   make simulate   a simulated three-hospital consortium: both stages, DP, export, bilingual answers
#   make test       the whole test suite (what CI runs)

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedumit-installed

.PHONY: install base simulate test lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch and torchvision as a matching pair (Qwen2-VL's video processor needs torchvision)
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The embedded tiny base, pretrained once per machine into the user cache (a no-op once there).
base: install
	HF_HUB_OFFLINE=1 $(BIN)/fedumit model tiny

simulate: base
	HF_HUB_OFFLINE=1 $(BIN)/fedumit simulate

# Whole test files spread over TEST_WORKERS pytest-xdist workers, the long end-to-end files
# first (tests/conftest.py): those mostly wait on Flower processes and heartbeats, and the other
# worker runs the short files meanwhile. TEST_WORKERS=0 runs them one after another.
TEST_WORKERS ?= 2

test: base
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
