#!/usr/bin/env bash
# Set up a development environment from a fresh clone: a virtualenv in .venv with the
# fruitlens wheel (built here with maturin, release profile) and the dev/test extras.
#
#   bash scripts/setup.sh            # idempotent; rebuilds the wheel when sources change
#
# Environment: PYTHON (interpreter to create the venv with, default python3),
# FRUITLENS_SKIP_BUILD=1 (reuse dist/ as is).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
log() { printf '[setup] %s\n' "$*" >&2; }

command -v cargo >/dev/null || { log "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
command -v java >/dev/null || log "warning: java not found; Spark needs Java 17 (apt-get install openjdk-17-jre-headless)"
command -v nasm >/dev/null || log "warning: nasm not found; the wheel is built without libjpeg's SIMD (JPEG decoding much slower; apt-get install nasm)"

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip "maturin>=1.9,<2"

# Rebuild the wheel only when the Rust/Python sources changed.
stamp=$(cat Cargo.toml Cargo.lock pyproject.toml $(git ls-files src python 2>/dev/null || find src python -type f) 2>/dev/null | sha256sum | cut -c1-16)
wheel=$(ls dist/fruitlens-*.whl 2>/dev/null | head -1 || true)
if [ "${FRUITLENS_SKIP_BUILD:-0}" != 1 ] && { [ -z "$wheel" ] || [ "$(cat dist/.stamp 2>/dev/null)" != "$stamp" ]; }; then
  log "building the wheel (cargo release profile with LTO; a few minutes the first time)"
  rm -rf dist
  .venv/bin/maturin build --release --out dist --interpreter .venv/bin/python
  echo "$stamp" > dist/.stamp
  wheel=$(ls dist/fruitlens-*.whl | head -1)
fi
log "installing $wheel with the dev extras"
.venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
.venv/bin/python -m pip install -q --disable-pip-version-check "${wheel}[dev]"
.venv/bin/python -c "import fruitlens; print('[setup] fruitlens', fruitlens.__version__, 'ready in .venv')"
