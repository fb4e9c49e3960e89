# Two commands on a fresh machine:  make book  (build the HTML book)  and  make test.
# Both create the virtual environment from requirements.txt when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

# A copy of the cow mesh beside the checkout (as in CI) is used instead of downloading it.
ifneq ($(wildcard ../shared/data/cow_mesh/cow.obj),)
export COW_MESH_DIR ?= $(abspath ../shared/data/cow_mesh)
endif

.PHONY: env book test clean catalogs
env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 13) else f"Python 3.10 to 3.13 needed (PyTorch3D wheels), {sys.executable} is {v}. Use: make PYTHON=python3.12 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

# jupyter-cache keys a chapter on its own cells only, but the chapters import helpers/ and read the
# records in book/data/: when those change, every chapter runs again instead of showing old outputs.
# (Deleting the cache is not enough: Sphinx re-reads only pages it thinks changed, so the doctrees go too.)
CACHE_KEY = $(shell cat $(sort $(wildcard helpers/*.py book/data/ch5_*.json)) requirements.txt | sha256sum | cut -c1-16)

# The English edition, then the zh-TW one into _build/html/zh-tw from locales/ (no notebook runs twice).
book: env
	@if [ "$$(cat _build/.cache-key 2>/dev/null)" != "$(CACHE_KEY)" ] && [ -d _build/.jupyter_cache ]; then \
		echo "helpers/ or book/data/ changed since the last build: the chapters run again"; \
		rm -rf _build/.jupyter_cache _build/.doctrees _build/.doctrees-zh_TW; fi
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(BIN)/python book/_ext/translations.py html
	@echo $(CACHE_KEY) > _build/.cache-key

# After changing English text (and building the book): refresh locales/zh_TW, translate what is new
# or fuzzy there, then regenerate the translated notebooks Colab opens.
catalogs: env
	$(BIN)/python book/_ext/translations.py update
	$(BIN)/python book/_ext/translations.py notebooks

test: env
	$(BIN)/python -m pytest --nbval

clean:
	rm -rf _build
