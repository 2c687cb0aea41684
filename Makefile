# `make test` (as root) installs what the suite needs from Debian and PyPI, then runs ruff, mypy and
# the whole test suite: against Debian 12's own python3-* libraries (the versions the .deb
# runs with), then the unit tests again against the newest PyPI releases (Debian 13's API).
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
PYPI_VENV := .venv-pypi
# What packaging/build-deb.sh needs to build the .deb offline (and tests/test_package.py to lint it).
DEB_BUILD_PACKAGES := git dpkg-dev build-essential debhelper dh-python pybuild-plugin-pyproject \
	python3-all-dev python3-setuptools lintian mmdebstrap
APT_PACKAGES := python3 python3-venv python3-pip python3-dnspython \
	python3-pytest python3-pytest-xdist python3-hypothesis python3-nftables python3-iptables \
	nftables iptables ipset iproute2 iputils-ping procps kmod \
	pdns-server pdns-backend-bind chrony nmap ulogd2 ulogd2-json dnsutils ntpsec-ntpdate \
	python3-cryptography minisign openssl systemd-container systemd-journal-remote ufw \
	rsyslog nginx-light prometheus \
	$(DEB_BUILD_PACKAGES)
# Services of those packages that the tests start themselves, in namespaces with configurations
# of their own: the fleet lab (lab/fleet.py) rsyslog, nginx and prometheus, the ufw test ufw
# (enabled only inside a namespace). Debian starts and enables a service when its package is
# installed; `make deps` stops and disables those it installed, so none runs in the root
# namespace (one that was there before is left as it was). promtool comes with prometheus.
LAB_SERVICES := rsyslog nginx prometheus ufw
PYTEST_ARGS ?= --durations=20

.PHONY: test deps lint unit demo clean deb

# The unit tests on both CPUs (each in its own temporary directory, nothing shared); the root
# and lab tests one at a time (their namespaces have fixed names, their timings are real).
test: deps lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) -n 2 -m "not root and not lab" tests
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) -m "root or lab" tests
	$(PYPI_VENV)/bin/python -m pytest -q -n 2 -m "not root and not lab and not scenarios" -p no:cacheprovider tests

deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make test: run as root (it installs packages and builds network namespaces)" >&2; exit 1; fi
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	had=$$(for s in $(LAB_SERVICES); do [ -e /lib/systemd/system/$$s.service ] && echo $$s; done); \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES) && \
	for s in $(LAB_SERVICES); do \
		case " $$had " in *" $$s "*) continue;; esac; \
		if [ -d /run/systemd/system ]; then systemctl disable --now -q $$s.service || true; \
		else service $$s stop >/dev/null 2>&1 || true; systemctl disable -q $$s.service 2>/dev/null || true; fi; \
	done
	test -x $(VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q ruff mypy
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	test -x $(PYPI_VENV)/bin/python || $(PYTHON) -m venv $(PYPI_VENV)
	$(PYPI_VENV)/bin/pip install -q -U dnspython pytest pytest-xdist hypothesis cryptography
	$(PYPI_VENV)/bin/pip install -q --no-deps -e .
	@# ntpsec and openntpd conflict with chrony: unpack (not install) their .debs so the tests
	@# can run their config parsers on the files timeconf generates.
	test -x .debs/ntpsec/usr/sbin/ntpd -a -x .debs/openntpd/usr/sbin/ntpd || ( \
		rm -rf .debs && mkdir -p .debs && cd .debs && chown _apt . 2>/dev/null; \
		apt-get download -q ntpsec openntpd && \
		dpkg -x ntpsec_*.deb ntpsec && dpkg -x openntpd_*.deb openntpd )

lint:
	$(VENV)/bin/ruff check ntpguard tests benchmarks lab setup.py
	$(VENV)/bin/mypy

# The lab story in namespaces (lab/demo.py): pool, harvesters, scanner, host, ntpguard; a few
# minutes; always tears down. DEMO_ARGS="--seed 7 --observe 40" to vary it.
DEMO_ARGS ?=
demo: deps
	$(PYTHON) -m lab.demo $(DEMO_ARGS)

# The Debian package, built from this working tree into dist/ (packaging/build-deb.sh --help).
deb:
	@if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEB_BUILD_PACKAGES); fi
	packaging/build-deb.sh dist

unit: deps
	$(VENV)/bin/python -m pytest -m "not root and not lab" tests

clean:
	rm -rf $(VENV) $(PYPI_VENV) build *.egg-info .pytest_cache
