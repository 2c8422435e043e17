# Build a GPT, Notebook by Notebook.
#   make book   build the static site into book/_build/html (creates .venv first if missing)
#   make test   unit tests, every notebook under profile `ci` (nbval), and the book with -W
# Other targets: env lab execute sync bench browser-models runtimes e2e lint clean

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PY      = $(BIN)/python
# The CPU build of PyTorch goes in first: a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
NBS     = $(sort $(wildcard nbs/[0-9]*.ipynb))
BOOK_FLAGS = --config book/_config.yml --toc _toc.yml --path-output book

.PHONY: env book cjk-font test unit nbtest booktest lab execute sync bench browser-models runtimes e2e e2e-deps lint clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The CJK font subset the site ships (tools/cjk_font.py: Noto Sans CJK SC from the mplfonts
# package, cut to the characters the book and its demos can show, about 0.9 MB of WOFF2), remade
# only when the text it covers changes. Git-ignored build outputs, like the site.
CJK_FONT = book/_static/fonts/book-cjk.woff2
CJK_CSS  = book/_static/cjk-font.css

cjk-font: $(CJK_FONT) $(CJK_CSS)

$(CJK_FONT): tools/cjk_font.py _toc.yml $(NBS) \
             $(wildcard book/*.md book/*.bib book/_static/*.js book/_static/models/*.js) \
             | $(VENV)/.installed
	$(PY) tools/cjk_font.py

# Written by the same run, just after the font; remade if it alone went missing.
$(CJK_CSS): $(CJK_FONT)
	@if test -f $@; then touch $@; else $(PY) tools/cjk_font.py; fi

book: env $(CJK_FONT) $(CJK_CSS)
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "open book/_build/html/index.html"

test: lint unit nbtest booktest

unit: env
	COURSE_PROFILE=ci $(PY) -m pytest tests -q --durations=15

nbtest: env
	COURSE_PROFILE=ci $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 $(NBS)

booktest: env $(CJK_FONT) $(CJK_CSS)
	rm -rf book/_build
	$(BIN)/jupyter-book build . $(BOOK_FLAGS) --warningiserror --nitpick --keep-going --all

lab: env
	$(BIN)/jupyter lab nbs/

# Re-run every notebook under profile `cpu` and store the outputs the site shows.
execute: env
	$(BIN)/jupytext --sync nbs/[0-9]*.py
	for nb in $(NBS); do \
	  COURSE_PROFILE=cpu $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; \
	  $(PY) tools/nbclean.py $$nb; \
	done

sync: env
	$(BIN)/jupytext --sync nbs/[0-9]*.py nbs/[0-9]*.ipynb

bench: env
	$(PY) bench/run_all.py --profile $${COURSE_PROFILE:-cpu}

# The models the site runs in the reader's browser (book/_static/models/), exported from the
# cached `cpu` models of chapters 05 and 11 (trained first if missing), and their size/loss table.
browser-models: env
	$(PY) tools/browser_models.py --profile $${COURSE_PROFILE:-cpu}

# Every chapter in order from an empty cache, timed (29 min under cpu on a 2-core Xeon): book/runtimes.md
runtimes: env
	$(PY) tools/time_chapters.py --profile $${COURSE_PROFILE:-cpu}

# End-to-end: headless Chromium (Debian's, driven by Playwright) runs chapter 08 in JupyterLab
# and opens every page of the built site. One-time install: README.md, "End-to-end checks".
E2E_CHROMIUM ?= /usr/bin/chromium
SITE = book/_build/html/index.html

e2e: env e2e-deps $(SITE)
	E2E_REQUIRE=1 E2E_CHROMIUM=$(E2E_CHROMIUM) $(PY) -m pytest -q e2e

e2e-deps:
	@test -x "$(E2E_CHROMIUM)" && $(PY) -c "import playwright.sync_api" 2>/dev/null || { \
	  echo "make e2e: needs Chromium at $(E2E_CHROMIUM) and the Python package playwright."; \
	  echo "Install them once with:"; \
	  echo "  sudo apt-get install -y chromium && $(PY) -m pip install -e '.[e2e]'"; \
	  echo "(no 'playwright install': the tests drive the system Chromium)"; exit 1; }

# The site, rebuilt only when it is missing or older than what it is built from.
$(SITE): _toc.yml book/_config.yml $(wildcard book/*.md book/*.bib book/images/* book/generated/*) \
         $(wildcard book/_static/*.js book/_static/models/*.js) $(NBS) $(CJK_FONT) $(CJK_CSS)
	$(MAKE) book
	touch $@

lint: env
	$(BIN)/ruff check course_utils tests bench tools nbs/*.py

clean:
	rm -rf book/_build .cache .pytest_cache book/_static/fonts $(CJK_CSS)
