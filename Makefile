# Two commands for a fresh clone (README, Quick start):
#   make demo   set up .venv, install vidclf, and run it on a sample clip
#   make test   set up the same and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# constraints.txt pins the exact versions we test with; torch==2.13.0 is a CPU build.
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev,plot]'
	touch $@

demo: setup
	$(BIN)/vidclf predict sample_clips/move_left/move_left_000.mp4

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build dist *.egg-info
