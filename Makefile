# Two commands set everything up on a fresh machine:
#   make run    -> .venv with everything, then a dev daemon in the foreground
#   make test   -> .venv if needed, then the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU torch: small and enough for the tiny model.  Override for a GPU box, e.g.
#   make venv TORCH_SPEC='torch==2.11.0'
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8080
# CPU torch on 2 shared cores is up to 100x slower with 2 threads than with one.
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1

STAMP := $(VENV)/.installed

.PHONY: venv run test lint typecheck test-deps unit integration packaging deb bench-cpu clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q '$(TORCH_SPEC)'
	$(PIP) install -q -e '.[dev]'
	@# f5-tts pulls a CUDA build of torchaudio.  We use only its pure-Python transforms
	@# (MelSpectrogram) and do all audio I/O with soundfile, so its compiled op library,
	@# which cannot load beside a CPU torch, is removed.  See README "Why torchaudio ...".
	$(PY) -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' || \
	  rm -f $(VENV)/lib/python*/site-packages/torchaudio/lib/_torchaudio*.so
	$(PY) -c 'import torchaudio.transforms, ishowttsd.engine.upstream, f5_tts.model.cfm' >/dev/null
	touch $@

run: $(STAMP)
	$(VENV)/bin/ishowttsd --dev --port $(PORT)

# Tools the tests drive for real: curl (admin socket), sox-free audio checks use soundfile.
# Chromium for the listening-page browser test; systemd-nspawn etc. for the .deb test (root only).
APT_TEST_PKGS := curl chromium
APT_DEB_PKGS := systemd-container debootstrap debhelper dh-virtualenv python3-venv lintian dpkg-dev zstd
test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_TEST_PKGS) $(APT_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root: skipping apt packages (tests needing them will skip)"; fi

test: $(STAMP) test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP)
	$(VENV)/bin/pytest -q tests/integration

packaging: $(STAMP) test-deps
	$(VENV)/bin/pytest -q tests/packaging

# make deb -> dist/ishowtts_<version>_<arch>.deb (+ .buildinfo, .changes).  debian/rules says how.
# A clean PATH, so that dh-virtualenv and pip run on /usr/bin/python3 (the interpreter the
# package depends on), never on .venv's or pyenv's.  TORCH_SPEC (above) is the torch bundled:
# CPU torch by default; on a Jetson, NVIDIA's JetPack wheel, e.g.
#   make deb TORCH_SPEC=/path/to/torch-2.x-cp310-cp310-linux_aarch64.whl   (see debian/README.Debian)
# DEB_PROFILES=pkg.ishowtts.thin: the package without torch and f5-tts, for a quick lintian
# run (debian/rules); it lands in dist/thin/ so it never passes for the real one.
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
DEB_PROFILES ?=
DEB_DIST ?= $(if $(filter pkg.ishowtts.thin,$(DEB_PROFILES)),dist/thin,dist)
DEB_VERSION = $(shell dpkg-parsechangelog -S Version)
DEB_ARCH = $(shell dpkg-architecture -qDEB_HOST_ARCH)
# debhelper's leftovers, removed before and after a build: debian/ishowtts alone is 2+ GB.
DEB_SCRATCH := debian/ishowtts debian/.debhelper debian/files debian/*.substvars debian/*.debhelper debian/*.debhelper.log \
  debian/debhelper-build-stamp
deb:
	rm -rf $(DEB_SCRATCH)
	mkdir -p $(DEB_DIST)
	rm -f $(DEB_DIST)/ishowtts_$(DEB_VERSION)_$(DEB_ARCH).*
	env PATH=$(DEB_PATH) ISHOWTTS_TORCH_SPEC='$(TORCH_SPEC)' ISHOWTTS_DEB_DESTDIR='$(DEB_DIST)' \
	  dpkg-buildpackage -b -us -uc --no-pre-clean $(if $(DEB_PROFILES),--build-profiles=$(DEB_PROFILES)) \
	    --buildinfo-option=-u$(DEB_DIST) --buildinfo-file=$(DEB_DIST)/ishowtts_$(DEB_VERSION)_$(DEB_ARCH).buildinfo \
	    --changes-option=-u$(DEB_DIST) --changes-file=$(DEB_DIST)/ishowtts_$(DEB_VERSION)_$(DEB_ARCH).changes
	rm -rf $(DEB_SCRATCH)
	@ls -l $(DEB_DIST)/ishowtts_$(DEB_VERSION)_$(DEB_ARCH).deb

bench-cpu: $(STAMP)
	$(PY) bench/rtf.py --tiny --device cpu

clean:
	rm -rf .dev dist build *.egg-info
