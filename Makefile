# Every target builds its own virtualenv from pyproject.toml. The tests also use Debian's
# tshark (the TLS handshake seen on the wire) and promtool (package prometheus: the alert
# rules): `system-deps` installs them where it can (root with apt-get); elsewhere those
# tests skip and say why. Likewise chromium, for the browser tests of /docs, /ui/ and the
# extension (its new headless mode runs extensions, so no Xvfb is needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint up clean bench system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sync-airbnb demo

up: $(STAMP)
	$(BIN)/sync-airbnb up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

system-deps:
	@if ! command -v tshark >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing tshark (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null) \
			|| echo "tshark could not be installed: tests/system/test_tls_handshake.py will skip"; \
	fi
	@if ! command -v promtool >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing promtool (apt-get prometheus)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
			|| echo "prometheus could not be installed: tests/system/test_alert_rules.py will skip"; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
			|| echo "chromium could not be installed: tests/system/test_docs_browser.py, test_ui_browser.py and test_extension_browser.py will skip"; \
	fi

test: $(STAMP) lint system-deps
	$(BIN)/pytest -q -rs -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV)
