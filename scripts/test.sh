#!/usr/bin/env bash
# Run every check: Rust format/lint/unit tests, Python lint, the pytest suite on
# PySpark 4.x (.venv), and the Spark tests again on PySpark 3.5 (.venv35, what EMR 7 runs).
# Run scripts/setup.sh first (the README's test command does both).
#
#   FRUITLENS_SKIP_SPARK35=1   skip the PySpark 3.5 pass
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\n[test] %s\n' "$*" >&2; }
[ -x .venv/bin/python ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
export PYO3_PYTHON="$PWD/.venv/bin/python"
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
export PYSPARK_PYTHON="$PWD/.venv/bin/python"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings (core, and with the python bindings)"
cargo clippy --all-targets -- -D warnings
cargo clippy --features python -- -D warnings
log "cargo test (pure-Rust core, no interpreter)"
cargo test --lib

log "ruff"
.venv/bin/ruff check python tests benchmarks
.venv/bin/ruff format --check python tests benchmarks

log "pytest on $(.venv/bin/python -c 'import pyspark; print("PySpark", pyspark.__version__)')"
.venv/bin/python -m pytest -q "$@"

if [ "${FRUITLENS_SKIP_SPARK35:-0}" != 1 ]; then
  log "Spark tests on PySpark 3.5 (.venv35)"
  if [ ! -x .venv35/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv35
  fi
  wheel=$(ls dist/fruitlens-*.whl | head -1)
  .venv35/bin/python -m pip install -q --disable-pip-version-check -U pip
  .venv35/bin/python -m pip install -q --disable-pip-version-check \
    "pyspark==3.5.*" "pandas<3" "numpy<2" "pyarrow<20" pillow pytest scikit-learn h5py onnx
  .venv35/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
  .venv35/bin/python -m pip install -q --disable-pip-version-check "$wheel"
  PYSPARK_PYTHON="$PWD/.venv35/bin/python" .venv35/bin/python -m pytest -q tests/test_spark.py
fi
