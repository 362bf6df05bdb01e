# Two set-up commands for a new machine: `make lab` (the offline main job) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Host tools the real tests and the lab use (Debian package names).
APT_PACKAGES := python3-venv openssh-server openssh-client libpam-google-authenticator pamtester cloud-init zbar-tools sudo \
	qemu-system-x86 qemu-utils mmdebstrap genisoimage e2fsprogs nftables iproute2 util-linux
ARGS ?=
# Two workers, whole files each: the VM tests (first in the run) keep one worker waiting on guests and TOTP steps
# for minutes while the other runs every other file.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15

.PHONY: lab test deps bench check render venv

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The project's virtualenv alone (every README command runs .venv/bin/python).
venv: $(VENV)/.installed

# As root, install what is missing; otherwise say what is missing (those tests skip locally, fail in CI).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing host packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "not root: missing host packages" $$missing "(their tests skip)"; fi

lab: deps $(VENV)/.installed
	$(PY) -m lab $(ARGS)

test: deps $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: deps $(VENV)/.installed
	$(PY) -m bench $(ARGS)
