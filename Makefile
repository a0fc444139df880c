# Two commands do all set-up on a fresh machine:
#   make demo   simulate a cohort and run the bayesrad pipeline on it
#   make serve  open the demo's model in the browser app (runs the demo first if needed)
#   make test   run the test suite
# Both create .venv when needed and (re)install only when pyproject.toml or
# constraints.txt changed since the last install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.bayesrad-installed
DEMO_OUT ?= demo_out

# bayesrad's own search is hash-order independent; pgmpy's PC (--method pc) and set
# iteration elsewhere are not, so fix the hash seed for runs that repeat exactly.
export PYTHONHASHSEED := 0
# Libraries that cache under ~ or ./data write into the build tree instead.
export MPLBACKEND := Agg
# Packages install without byte-compiling (--no-compile: torch, jax and the rest hold tens of
# thousands of modules, most never imported; compiling them all was about a third of a fresh
# install). Python compiles what is imported on first use and keeps it, which it cannot do
# where the environment forbids writing bytecode, so that is lifted here.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo serve test benchmarks clean

install: $(STAMP)

# torch goes first and pinned (constraints.txt): the project machines hold a local CPU
# build of 2.13.0, and an unpinned torch pulls several GB of CUDA packages. On a machine
# with CUDA the same pin takes PyPI's CUDA build. neuroHarmonize declares numpy<2, which
# would downgrade numpy and break jax, pgmpy and shap; it runs with numpy 2.3, so it is
# installed without its declared dependencies.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet --no-compile -c constraints.txt torch==2.13.0
	$(PIP) install --quiet --no-compile -c constraints.txt -e ".[all]"
	$(PIP) install --quiet --no-compile -c constraints.txt --no-deps neuroHarmonize==2.5.2 neuroCombat==0.2.12
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bayesrad demo --out $(DEMO_OUT)

serve: $(STAMP)
	test -f $(DEMO_OUT)/model/meta.json || $(VENV)/bin/bayesrad demo --out $(DEMO_OUT)
	$(VENV)/bin/bayesrad serve $(DEMO_OUT)/model --cohort $(DEMO_OUT)/cohort --features $(DEMO_OUT)/features

test: $(STAMP)
	# the app's browser tests need chromium: install it where apt-get can (they skip otherwise)
	-test -x /usr/bin/chromium || ! command -v apt-get >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || true
	# one worker per core (at most 4), a test file's tests on one worker (module fixtures built once,
	# the browser tests in order); tests/conftest.py keeps each worker to one thread
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile --durations=15

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT)
