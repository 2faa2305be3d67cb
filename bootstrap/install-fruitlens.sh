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
#   --model-name NAME  a plain file name ending in .onnx (no '/', not hidden).
#   --python PYTHON    the interpreter Spark uses (PYSPARK_PYTHON), default python3. On
#                      Amazon Linux 2023 (EMR 7) a missing python3.N is installed with dnf.
#   --prefix DIR       where models, state and the job launcher go; default /opt/fruitlens.
#                      The script creates (mode 755, owned by the user running it) only
#                      the folders that are missing among DIR, its parents and its
#                      models/, state/ and bin/ subfolders. A folder that already exists
#                      is never chmod-ed or chown-ed (the subfolders must be writable).
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
# Exit status: 0 on success (only once the interpreter imports the installed fruitlens);
# 1 with one "ERROR: ..." line naming the reason otherwise (2 for bad arguments).
#
# Besides the package it writes PREFIX/bin/fruitlens_job.py, a two-line launcher of
# `python -m fruitlens.job` that spark-submit can run (spark-submit needs a .py file).
set -euo pipefail
set -o errtrace

readonly SCRIPT_NAME="install-fruitlens"

# One line per message: newlines in values (file names, command output) become spaces.
log() {
  local msg="$*"
  msg="${msg//$'\n'/ }"
  printf '%s [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SCRIPT_NAME" "${msg//$'\r'/ }" >&2
}
die() {
  log "ERROR: $*"
  exit 1
}
# Any other failing command still ends with an ERROR line (once: not from subshells).
on_error() {
  [[ "$BASHPID" == "$$" ]] || return 0
  log "ERROR: unexpected failure (exit $1) at line $2: $3"
}
trap 'on_error "$?" "$LINENO" "$BASH_COMMAND"' ERR
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
# The model's file name in PREFIX/models: a plain file name ending in .onnx (no folder
# part, not hidden, so neither '.' nor '..'), no control characters.
is_model_name() { [[ "$1" =~ ^[^./][^/]*\.onnx$ && "$1" != *[[:cntrl:]]* ]]; }
if [[ -n "$MODEL_NAME" ]] && ! is_model_name "$MODEL_NAME"; then
  log "ERROR: --model-name must be a plain file name ending in .onnx (no '/', not starting with '.'), got '${MODEL_NAME}'"
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
  # A real Python answers this exact line (/bin/true, a shell builtin or another program
  # exits 0 too, so the exit status alone proves nothing).
  local probe
  probe="$("$PYTHON" -c 'import sys; print("fruitlens-python %d %d" % sys.version_info[:2])' 2>/dev/null)" || probe=""
  [[ "$probe" =~ ^fruitlens-python\ ([0-9]+)\ ([0-9]+)$ ]] \
    || die "'$PYTHON' is not a working Python interpreter (it did not run a one-line Python program; set --python)"
  local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
  ((major > 3 || (major == 3 && minor >= 9))) \
    || die "$PYTHON is Python $major.$minor: fruitlens needs Python 3.9 or newer"
  if ! has_pip; then
    log "pip is missing for $PYTHON: trying ensurepip"
    as_root "$PYTHON" -m ensurepip --upgrade >/dev/null 2>&1 || true
    has_pip || die "pip is not available for $PYTHON (install its pip package, e.g. dnf install ${PYTHON##*/}-pip)"
  fi
  log "python: $PYTHON (Python $major.$minor)"
}

has_pip() { [[ "$("$PYTHON" -m pip --version 2>/dev/null)" == "pip "* ]]; }

# Runs pip for $PYTHON, with sudo only if its site-packages is not writable.
pip_install() {
  local purelib
  purelib="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || purelib=""
  [[ -n "$purelib" ]] || die "$PYTHON did not say where its site-packages is"
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
# make_dir DIR: create DIR (mode 755, owned by this user; with sudo only when its parent is
# not writable) if it is missing. A folder that exists is left exactly as it is.
make_dir() {
  local dir="$1" err
  [[ -d "$dir" ]] && return 0
  [[ -e "$dir" || -L "$dir" ]] && die "$dir exists and is not a folder (choose another --prefix)"
  if err="$(mkdir -m 755 -- "$dir" 2>&1)" || [[ -d "$dir" ]]; then
    return 0
  fi
  [[ "$(id -u)" -ne 0 ]] || die "could not create $dir (${err#mkdir: })"
  log "creating $dir with sudo (its parent is not writable by $(id -un))"
  as_root mkdir -m 755 -- "$dir" || die "could not create $dir"
  as_root chown -- "$(id -u):$(id -g)" "$dir" || die "could not give $dir (created by this script) to $(id -un)"
}

prepare_prefix() {
  while [[ "$PREFIX" == ?*/ ]]; do PREFIX="${PREFIX%/}"; done
  # Missing ancestors first (top down), then PREFIX and its subfolders.
  local missing=() dir="$PREFIX"
  while [[ ! -d "$dir" && ! -e "$dir" && ! -L "$dir" ]]; do
    missing=("$dir" ${missing[@]+"${missing[@]}"})
    [[ "$dir" == */* ]] || break
    dir="$(dirname -- "$dir")"
  done
  if [[ -e "$dir" && ! -d "$dir" ]]; then
    die "$dir exists and is not a folder (choose another --prefix)"
  fi
  for dir in ${missing[@]+"${missing[@]}"} "$PREFIX"; do make_dir "$dir"; done
  for dir in "$PREFIX/models" "$PREFIX/state" "$PREFIX/bin"; do
    make_dir "$dir"
    [[ -w "$dir" && -x "$dir" ]] \
      || die "$dir is not writable by $(id -un); it existed before and is left as it is (give it to $(id -un) or choose another --prefix)"
  done
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

# The model's file name: --model-name, else the location's file name (checked up front).
model_file_name() {
  [[ -n "$MODEL" ]] || return 0
  if [[ -z "$MODEL_NAME" ]]; then
    MODEL_NAME="$(name_of "$MODEL")"
    is_model_name "$MODEL_NAME" || {
      log "ERROR: the model location must end with a file name ending in .onnx, got '$MODEL_NAME' (set --model-name NAME.onnx)"
      exit 2
    }
  fi
}

install_model() {
  [[ -n "$MODEL" ]] || {
    log "no --model given: skipping the model"
    return 0
  }
  local name="$MODEL_NAME"
  local target="$PREFIX/models/$name"
  if [[ -f "$target" && "$(sha256_of "$target")" == "$MODEL_SHA256" ]]; then
    log "model $target is already in place (sha256 $MODEL_SHA256): nothing to do"
    return 0
  fi
  local tmp="$WORK/$name"
  fetch "$MODEL" "$tmp"
  verify "$tmp" "$MODEL_SHA256" "$name"
  chmod 644 "$tmp"
  mv -fT -- "$tmp" "$target.partial"
  mv -fT -- "$target.partial" "$target"
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
  mv -fT -- "$launcher.partial" "$launcher"
  log "spark-submit launcher at $launcher"
}

# The interpreter must import the fruitlens of the installed wheel (its native module and
# ONNX Runtime included), not merely exit 0: it prints one line that says so.
check_install() {
  local out line version ours file expected
  out="$("$PYTHON" -c '
import importlib.metadata as md, os, fruitlens, fruitlens._native
fruitlens.find_onnxruntime_library()
dist = md.distribution("fruitlens")
ours = os.path.realpath(str(dist.locate_file("fruitlens/__init__.py"))) == os.path.realpath(fruitlens.__file__)
print("fruitlens-installed", dist.version, int(ours), fruitlens.__file__)
' 2>&1)" || die "fruitlens does not import in $PYTHON: $(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"
  line="$(printf '%s\n' "$out" | grep '^fruitlens-installed ' | tail -n 1)" || true
  [[ -n "$line" ]] || die "$PYTHON did not confirm that it imports fruitlens (it printed: $(printf '%s' "$out" | tail -n 1))"
  read -r _ version ours file <<<"$line"
  [[ "$ours" == 1 ]] \
    || die "$PYTHON imports fruitlens from $file, not the installed wheel's copy (another fruitlens shadows it: check PYTHONPATH)"
  expected="$(name_of "$WHEEL")"
  if [[ "$expected" == fruitlens-*-*.whl ]]; then
    expected="${expected#fruitlens-}"
    expected="${expected%%-*}"
    [[ "$version" == "$expected" ]] \
      || die "$PYTHON has fruitlens $version installed, not the wheel's $expected"
  fi
  log "fruitlens $version works in $PYTHON"
}

main() {
  log "starting (user $(id -un), host $(hostname), prefix $PREFIX)"
  model_file_name
  ensure_python
  prepare_prefix
  install_wheel
  install_model
  write_launcher
  check_install
  log "done"
}

main
