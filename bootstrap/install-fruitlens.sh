#!/usr/bin/env bash
# EMR bootstrap action: install the fruitlens wheel (and optionally the ONNX model) on a node.
#
# EMR runs bootstrap actions on every node, as the `hadoop` user (with passwordless sudo),
# before the applications start. This script is also fine to run by hand, as root or not.
#
# Usage:
#   install-fruitlens.sh --wheel URI --wheel-sha256 HEX
#                        [--model URI --model-sha256 HEX [--model-name NAME]]
#                        [--python PYTHON] [--prefix DIR] [--extra REQUIREMENT]...
#                        [--pip-args "ARGS"]
#
#   --wheel URI        the fruitlens wheel: s3://..., https://..., http://..., file://... or a
#                      local path. Its file name must be the wheel's own name
#                      (fruitlens-<version>-cp39-abi3-manylinux_..._<arch>.whl).
#   --wheel-sha256 HEX expected sha256 of the wheel (required).
#   --model URI        an ONNX model (same kinds of location), copied to
#                      PREFIX/models/NAME (NAME: --model-name, default the URI's file name,
#                      e.g. /opt/fruitlens/models/mobilenet_v2_224.onnx).
#   --model-sha256 HEX expected sha256 of the model (required with --model).
#   --python PYTHON    the interpreter Spark uses (PYSPARK_PYTHON), default python3. On
#                      Amazon Linux 2023 (EMR 7) a missing python3.N is installed with dnf.
#   --prefix DIR       where models, state and the job launcher go; default /opt/fruitlens.
#   --extra REQ        another requirement to pip-install beside the wheel, repeatable
#                      (e.g. 'pandas>=1.5,<3', which PySpark's Arrow functions need).
#   --pip-args ARGS    more arguments for `pip install` (split on spaces), e.g.
#                      "--index-url https://pypi.internal/simple".
#
# Environment: FRUITLENS_PYTHON, FRUITLENS_PREFIX (defaults of --python/--prefix);
# AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3): a custom S3 endpoint for s3:// locations,
# passed to `aws s3 cp --endpoint-url` (awscli v1 does not read the variable itself).
#
# Idempotent: when the same wheel (same sha256) is already installed into the same
# Python and the model on disk has the expected sha256, nothing is downloaded again.
# Exit status: 0 on success; 1 with an "ERROR:" line naming the reason otherwise
# (2 for bad arguments).
#
# Besides the package it writes PREFIX/bin/fruitlens_job.py, a two-line launcher of
# `python -m fruitlens.job` that spark-submit can run (spark-submit needs a .py file).
set -euo pipefail

readonly SCRIPT_NAME="install-fruitlens"

log() { printf '%s [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT_NAME" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

WHEEL=""
WHEEL_SHA256=""
MODEL=""
MODEL_SHA256=""
MODEL_NAME=""
PYTHON="${FRUITLENS_PYTHON:-python3}"
PREFIX="${FRUITLENS_PREFIX:-/opt/fruitlens}"
EXTRAS=()
PIP_ARGS=""

need_value() {
  [[ $# -ge 2 && -n "$2" ]] || {
    log "ERROR: option $1 needs a value"
    exit 2
  }
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheel) need_value "$@"; WHEEL="$2"; shift 2 ;;
    --wheel-sha256) need_value "$@"; WHEEL_SHA256="$2"; shift 2 ;;
    --model) need_value "$@"; MODEL="$2"; shift 2 ;;
    --model-sha256) need_value "$@"; MODEL_SHA256="$2"; shift 2 ;;
    --model-name) need_value "$@"; MODEL_NAME="$2"; shift 2 ;;
    --python) need_value "$@"; PYTHON="$2"; shift 2 ;;
    --prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
    --extra) need_value "$@"; EXTRAS+=("$2"); shift 2 ;;
    --pip-args) need_value "$@"; PIP_ARGS="$2"; shift 2 ;;
    -h | --help) usage ;;
    *)
      log "ERROR: unknown argument: $1 (see --help)"
      exit 2
      ;;
  esac
done

is_sha256() { [[ "$1" =~ ^[0-9a-fA-F]{64}$ ]]; }

[[ -n "$WHEEL" ]] || { log "ERROR: --wheel is required"; exit 2; }
is_sha256 "$WHEEL_SHA256" || { log "ERROR: --wheel-sha256 must be 64 hex digits, got '${WHEEL_SHA256}'"; exit 2; }
if [[ -n "$MODEL" ]]; then
  is_sha256 "$MODEL_SHA256" || { log "ERROR: --model-sha256 must be 64 hex digits, got '${MODEL_SHA256}'"; exit 2; }
elif [[ -n "$MODEL_SHA256" || -n "$MODEL_NAME" ]]; then
  log "ERROR: --model-sha256/--model-name given without --model"
  exit 2
fi
WHEEL_SHA256="$(printf '%s' "$WHEEL_SHA256" | tr 'A-F' 'a-f')"
MODEL_SHA256="$(printf '%s' "$MODEL_SHA256" | tr 'A-F' 'a-f')"

# ---------------------------------------------------------------------------------------
# Privileges: sudo only when not root and only for what needs it.
# ---------------------------------------------------------------------------------------
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root for: $* (not root and sudo is not available)"
  fi
}

# ---------------------------------------------------------------------------------------
# Fetching and checking files
# ---------------------------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The file name of a location (without a query string such as a presigned URL's).
name_of() {
  local location="${1%%\?*}"
  printf '%s' "${location##*/}"
}

fetch() { # fetch LOCATION DEST
  local src="$1" dest="$2"
  case "$src" in
    s3://* | s3a://* | s3n://*)
      command -v aws >/dev/null 2>&1 || die "the aws CLI is needed to copy $src (not found on PATH)"
      local endpoint="${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-}}"
      local args=(s3 cp --only-show-errors)
      [[ -n "$endpoint" ]] && args+=(--endpoint-url "$endpoint")
      log "copying $src${endpoint:+ (endpoint $endpoint)}"
      aws "${args[@]}" "s3://${src#*://}" "$dest" || die "could not copy $src (aws s3 cp failed; check the location and the instance role's s3:GetObject permission)"
      ;;
    https://* | http://*)
      command -v curl >/dev/null 2>&1 || die "curl is needed to download $src (not found on PATH)"
      log "downloading $src"
      curl -fsSL --retry 3 --retry-delay 2 -o "$dest" "$src" || die "could not download $src"
      ;;
    file://*)
      local path="${src#file://}"
      [[ -f "$path" ]] || die "no such file: $path"
      cp -- "$path" "$dest"
      ;;
    *://*) die "unsupported location $src (use s3://, https://, http://, file:// or a local path)" ;;
    *)
      [[ -f "$src" ]] || die "no such file: $src"
      cp -- "$src" "$dest"
      ;;
  esac
}

verify() { # verify FILE EXPECTED WHAT
  local actual
  actual="$(sha256_of "$1")"
  if [[ "$actual" != "$2" ]]; then
    die "sha256 mismatch for $3: expected $2, actual $actual (refusing to install it)"
  fi
  log "sha256 ok for $3 ($actual)"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fruitlens-bootstrap.XXXXXX")"
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
# Python and pip
# ---------------------------------------------------------------------------------------
ensure_python() {
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    local base="${PYTHON##*/}"
    if [[ "$base" =~ ^python3\.[0-9]+$ ]] && command -v dnf >/dev/null 2>&1; then
      log "$PYTHON not found: installing $base and $base-pip with dnf"
      as_root dnf install -y -q "$base" "$base-pip" || die "dnf could not install $base"
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "Python interpreter '$PYTHON' not found (set --python)"
  fi
  PYTHON="$(command -v "$PYTHON")"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1): fruitlens needs Python 3.9 or newer"
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "pip is missing for $PYTHON: trying ensurepip"
    as_root "$PYTHON" -m ensurepip --upgrade >/dev/null 2>&1 || true
    "$PYTHON" -m pip --version >/dev/null 2>&1 \
      || die "pip is not available for $PYTHON (install its pip package, e.g. dnf install ${PYTHON##*/}-pip)"
  fi
  log "python: $PYTHON ($("$PYTHON" -V 2>&1))"
}

# Runs pip for $PYTHON, with sudo only if its site-packages is not writable.
pip_install() {
  local purelib
  purelib="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  local cmd=("$PYTHON" -m pip install --no-input --disable-pip-version-check --progress-bar off)
  if [[ -n "$PIP_ARGS" ]]; then
    local extra_args
    read -r -a extra_args <<<"$PIP_ARGS"
    cmd+=("${extra_args[@]}")
  fi
  if [[ -w "$purelib" ]]; then
    "${cmd[@]}" "$@"
  else
    as_root "${cmd[@]}" "$@"
  fi
}

# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------
prepare_prefix() {
  local dirs=("$PREFIX" "$PREFIX/models" "$PREFIX/state" "$PREFIX/bin")
  if ! mkdir -p "${dirs[@]}" 2>/dev/null || [[ ! -w "$PREFIX/state" ]]; then
    as_root mkdir -p "${dirs[@]}"
    as_root chown -R "$(id -u):$(id -g)" "$PREFIX"
  fi
  chmod 755 "${dirs[@]}"
}

installed_marker() {
  # One marker per interpreter (the same node may serve several Pythons).
  local key
  key="$(printf '%s' "$PYTHON" | sha256sum | cut -c1-16)"
  printf '%s/state/wheel-%s.sha256' "$PREFIX" "$key"
}

install_wheel() {
  local marker name dest
  marker="$(installed_marker)"
  if [[ -f "$marker" && "$(cat "$marker")" == "$WHEEL_SHA256" ]] \
    && "$PYTHON" -c 'import fruitlens._native' >/dev/null 2>&1; then
    log "wheel $WHEEL_SHA256 is already installed for $PYTHON: nothing to do"
    return 0
  fi
  name="$(name_of "$WHEEL")"
  [[ "$name" == *.whl ]] || die "the wheel location must end with the wheel's file name (*.whl), got '$name'"
  dest="$WORK/$name"
  fetch "$WHEEL" "$dest"
  verify "$dest" "$WHEEL_SHA256" "$name"
  log "installing $name into $PYTHON"
  # --force-reinstall --no-deps replaces a build with the same version number; the second
  # call then brings the dependencies (numpy, pyarrow, onnxruntime) and the extras.
  pip_install --force-reinstall --no-deps "$dest" || die "pip could not install $name"
  pip_install "$dest" ${EXTRAS[@]+"${EXTRAS[@]}"} || die "pip could not install the dependencies of $name"
  rm -f -- "$marker"
  printf '%s\n' "$WHEEL_SHA256" >"$marker"
}

install_model() {
  [[ -n "$MODEL" ]] || {
    log "no --model given: skipping the model"
    return 0
  }
  local name="${MODEL_NAME:-$(name_of "$MODEL")}"
  [[ -n "$name" && "$name" != */* ]] || die "bad model file name '$name' (set --model-name)"
  local target="$PREFIX/models/$name"
  if [[ -f "$target" && "$(sha256_of "$target")" == "$MODEL_SHA256" ]]; then
    log "model $target is already in place (sha256 $MODEL_SHA256): nothing to do"
    return 0
  fi
  local tmp="$WORK/$name"
  fetch "$MODEL" "$tmp"
  verify "$tmp" "$MODEL_SHA256" "$name"
  chmod 644 "$tmp"
  mv -f -- "$tmp" "$target.partial"
  mv -f -- "$target.partial" "$target"
  log "model installed at $target"
}

write_launcher() {
  local launcher="$PREFIX/bin/fruitlens_job.py"
  local content='"""spark-submit entry of fruitlens (written by install-fruitlens.sh): same as: python -m fruitlens.job."""
import runpy

runpy.run_module("fruitlens.job", run_name="__main__", alter_sys=True)'
  if [[ -f "$launcher" && "$(cat "$launcher")" == "$content" ]]; then
    return 0
  fi
  printf '%s\n' "$content" >"$launcher.partial"
  chmod 644 "$launcher.partial"
  mv -f -- "$launcher.partial" "$launcher"
  log "spark-submit launcher at $launcher"
}

check_install() {
  local version
  version="$("$PYTHON" -c 'import fruitlens; fruitlens.find_onnxruntime_library(); print(fruitlens.__version__)' 2>&1)" \
    || die "fruitlens does not import in $PYTHON: $version"
  log "fruitlens $version works in $PYTHON"
}

main() {
  log "starting (user $(id -un), host $(hostname), prefix $PREFIX)"
  ensure_python
  prepare_prefix
  install_wheel
  install_model
  write_launcher
  check_install
  log "done"
}

main
