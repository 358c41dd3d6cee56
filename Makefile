# Breedlab. `make run` serves the site; `make test` runs the whole suite.
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run manage test test-fast e2e-deps screenshots lint check-deploy messages bench clean

install: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/run.py

# make manage ARGS="import_dataset dogs ../shared/datasets/stanford-dogs-120": the same as
# .venv/bin/python manage.py ... (settings find var/secret_key and a running make run's Redis).
manage: $(STAMP)
	$(PY) manage.py $(ARGS)

test: $(STAMP) e2e-deps
	$(PY) -m pytest

# The browser journeys (tests/e2e) drive Debian's chromium through Playwright (never a browser
# download). Installed when missing and this is a root shell with apt; otherwise they are skipped.
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium is missing and could not be installed here: the browser journeys (tests/e2e) will be skipped"

# Every page at 1280 and 390 px, in English and Russian, into screenshots/ (git-ignored), while
# checking that none scrolls sideways on a phone. Needs chromium (make e2e-deps) and the datasets.
SCREENSHOTS_DIR ?= screenshots
screenshots: $(STAMP) e2e-deps
	BREEDLAB_SCREENSHOTS_DIR=$(abspath $(SCREENSHOTS_DIR)) $(PY) -m pytest -q -p no:cacheprovider \
		tests/e2e/test_phone_and_russian.py -k every_page_fits_a_phone

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

# manage.py check --deploy under production settings (HTTPS on, DEBUG off, a real key).
check-deploy: $(STAMP)
	SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') HTTPS=1 DEBUG=0 \
		ALLOWED_HOSTS=breedlab.example.org $(PY) manage.py check --deploy --fail-level WARNING

messages: $(STAMP)
	DEBUG=1 $(PY) manage.py makemessages -l ru --ignore=.venv --ignore=var --ignore=tests --ignore=training --ignore=bench --ignore=.gpu
	DEBUG=1 $(PY) manage.py compilemessages --ignore=.venv

clean:
	rm -rf $(VENV) .pytest_cache
