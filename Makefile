# Two commands on a fresh machine: `make demo` and `make test`. Each installs what is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SYSTEM_TOOLS := ffmpeg espeak-ng sox chromium
APT_PACKAGES := ffmpeg espeak-ng sox chromium

.PHONY: demo test install system clean

demo: install
	$(VENV)/bin/galwhisper demo

test: install
	$(VENV)/bin/pytest -q -ra

install: system $(STAMP)

# Debian's ffmpeg (decoding), espeak-ng (synthetic corpus), sox and chromium (browser tests).
system:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

# torch is pinned in both steps so pip keeps the local CPU build and never pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q torch==2.13.0 -e ".[test]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
