# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
OUT ?= demo-output
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pyro_lvm-installed

.PHONY: demo test lint tutorials bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install with the constraints file of tested versions (torch==2.13.0 is the CPU wheel).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pyro_lvm demo --out $(OUT) --overwrite
	@echo "Report written to $(abspath $(OUT))/report.html"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/fit_overhead.py

# Execute every tutorial in full mode and save it with its outputs.
tutorials: $(STAMP)
	$(PY) tutorials/build.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache *.egg-info
