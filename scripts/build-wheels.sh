#!/usr/bin/env bash
# Release artifacts: the sdist and manylinux abi3 wheels (CPython >= 3.9) for x86_64 and
# aarch64 Linux, built and checked into wheelhouse/ (not dist/: scripts/setup.sh empties
# dist/, which holds the dev wheel).
#
#   bash scripts/build-wheels.sh                  # sdist + x86_64 + aarch64 wheels, checked
#   bash scripts/build-wheels.sh x86_64           # one architecture (no sdist)
#   bash scripts/build-wheels.sh --check          # only check the wheels already in wheelhouse/
#   bash scripts/smoke-wheel.sh wheelhouse/*.whl  # then install and run each one (see there)
#
# How: `maturin build --release --zig --compatibility manylinux_2_28 --target TRIPLE`.
# zig (the `ziglang` package from PyPI) is the C compiler and linker for both targets and
# links against glibc 2.28 symbols, so the wheels install on any glibc >= 2.28 (Amazon
# Linux 2023 has 2.34, Debian 12 2.36, RHEL/Alma/Rocky 8 2.28). mozjpeg's SIMD: on x86_64
# its NASM sources (needs `nasm`, else the wheel silently decodes JPEG without SIMD: this
# script refuses to build then); on aarch64 its NEON C and GNU-assembler sources, which
# zig cc compiles (no extra tool).
# The aarch64 Rust standard library: rustup cannot download targets on machines without
# access to static.rust-lang.org, so when rustup has no aarch64-unknown-linux-gnu target the
# aarch64 wheel is built with Debian's rustc-web/cargo-web (1.96, in /usr/bin) and its
# arm64 standard library (libstd-rust-web-dev:arm64). With rustup's target installed
# (`rustup target add aarch64-unknown-linux-gnu`) rustup's toolchain is used instead.
#
# Needs (nothing is installed outside the build venv; a missing tool stops the script
# with the apt-get line to run):
#   * Rust (rustup, for x86_64) and python3 with venv;
#   * apt-get install nasm binutils file              (x86_64 SIMD; objdump/readelf; file)
#   * aarch64 without rustup's target:
#       dpkg --add-architecture arm64 && apt-get update
#       apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64
#   * PyPI: maturin and ziglang, installed by this script into .build-venv/ (BUILD_VENV).
#
# Checks on each wheel (any failure exits 1): the filename's tags equal the WHEEL file's
# Tag lines (cp39-abi3-manylinux_X_Y_ARCH); it holds fruitlens/_native*.so, py.typed and
# every python/fruitlens file tracked by git; the .so's machine is the tag's architecture
# (`file`, readelf); the highest GLIBC_x.y symbol version the .so needs (`objdump -T`) is
# no newer than the tag's manylinux_X_Y nor than MAX_GLIBC (2.34, Amazon Linux 2023); the
# x86_64 .so contains libjpeg-turbo's AVX2 code (NASM SIMD). Then a table of the
# artifacts with tags and sizes.
#
# Environment: OUT (default wheelhouse), COMPAT (default manylinux_2_28), MAX_GLIBC
# (default 2.34), BUILD_VENV (default .build-venv), WHEELS_TARGET_DIR (cargo's target
# folder is WHEELS_TARGET_DIR-ARCH, default target/wheels-ARCH: apart from the dev build's
# target/, and one per architecture since they may use different toolchains).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-wheelhouse}
COMPAT=${COMPAT:-manylinux_2_28}
MAX_GLIBC=${MAX_GLIBC:-2.34}
BUILD_VENV=${BUILD_VENV:-.build-venv}
WHEELS_TARGET_DIR=${WHEELS_TARGET_DIR:-target/wheels}

log() { printf '[wheels] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() {  # need TOOL APT-PACKAGE
  command -v "$1" >/dev/null || die "$1 not found: apt-get install $2"
}

check_only=0
archs=()
for arg in "$@"; do
  case $arg in
    --check) check_only=1 ;;
    x86_64 | aarch64) archs+=("$arg") ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (expected x86_64, aarch64, --check)" ;;
  esac
done
build_sdist=0
if [ ${#archs[@]} -eq 0 ]; then
  archs=(x86_64 aarch64)
  build_sdist=1
fi

need objdump binutils
need readelf binutils
need file file

# ---------------------------------------------------------------------------- build
build_venv() {
  if [ ! -x "$BUILD_VENV/bin/maturin" ] || [ ! -x "$BUILD_VENV/bin/python" ] \
    || ! "$BUILD_VENV/bin/python" -c "import ziglang" 2>/dev/null; then
    log "creating $BUILD_VENV (maturin, ziglang from PyPI)"
    python3 -m venv "$BUILD_VENV"
    "$BUILD_VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip \
      "maturin>=1.9,<2" "ziglang>=0.13"
  fi
  # maturin finds zig as `python -m ziglang` of the first python on PATH.
  PATH="$PWD/$BUILD_VENV/bin:$PATH"
  export PATH
  log "$(maturin --version), zig $(python -m ziglang version)"
}

build_wheel() {  # build_wheel ARCH
  local arch=$1 triple=$1-unknown-linux-gnu
  local -a env=(env "CARGO_TARGET_DIR=$WHEELS_TARGET_DIR-$arch")
  if [ "$arch" = x86_64 ]; then
    need nasm nasm
  elif [ "$arch" = aarch64 ] && [ "$(uname -m)" != aarch64 ] \
    && ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    # Debian's toolchain: its rustc's sysroot (/usr/lib/rustlib) has the arm64 std.
    if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ]; then die "no aarch64 Rust target: dpkg --add-architecture arm64 && apt-get update && apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64"; fi
    [ -d "/usr/lib/rustlib/$triple/lib" ] \
      || die "no arm64 Rust std in /usr/lib/rustlib: dpkg --add-architecture arm64 && apt-get update && apt-get install libstd-rust-web-dev:arm64"
    local v_rustc v_std
    v_rustc=$(dpkg-query -W -f '${Version}' rustc-web 2>/dev/null || true)
    v_std=$(dpkg-query -W -f '${Version}' libstd-rust-web-dev:arm64 2>/dev/null || true)
    if [ -z "$v_rustc" ] || [ "$v_rustc" != "$v_std" ]; then
      die "rustc-web ($v_rustc) and libstd-rust-web-dev:arm64 ($v_std) must be the same version: apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64"
    fi
    log "aarch64: Debian's $(/usr/bin/rustc --version) with libstd-rust-web-dev:arm64"
    # /usr/bin first: cargo, rustc and rustdoc are Debian's, not rustup's proxies.
    env+=("PATH=$PWD/$BUILD_VENV/bin:/usr/bin:$PATH" CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc)
  fi
  log "building the $arch wheel ($COMPAT; release profile, fat LTO: several minutes)"
  rm -f "$OUT"/fruitlens-*-"$arch".whl "$OUT"/fruitlens-*_"$arch".whl
  "${env[@]}" maturin build --release --zig --compatibility "$COMPAT" --target "$triple" \
    --out "$OUT"
}

if [ "$check_only" = 0 ]; then
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
  mkdir -p "$OUT"
  build_venv
  if [ "$build_sdist" = 1 ]; then
    rm -f "$OUT"/fruitlens-*.tar.gz
    maturin sdist --out "$OUT"
  fi
  for arch in "${archs[@]}"; do
    build_wheel "$arch"
  done
fi

# ---------------------------------------------------------------------------- check
failures=0
fail() { log "FAIL $1: $2"; failures=$((failures + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Files of the python package that every wheel must contain.
git ls-files python/fruitlens | sed 's|^python/||' | grep -v '\.pyi$' | sort > "$tmp/expected" \
  || true
[ -s "$tmp/expected" ] || find python/fruitlens -type f ! -name '*.pyc' | sed 's|^python/||' \
  | sort > "$tmp/expected"

# libjpeg-turbo's SIMD in the .so (release .so files have no symbol table): stretches of
# machine code free of relocations, from the object that mozjpeg-sys's build assembled
# (x86_64: NASM's jidctint-avx2.o; aarch64: GNU as' jsimd_neon.o), must occur in the .so.
# Prints nasm-avx2/neon (found), missing, or unknown (no such object in the build folder).
simd_check() {  # simd_check ARCH SO
  local obj pattern
  case $1 in
    x86_64) pattern='jidctint-avx2.o' ;;
    *) pattern='*jsimd_neon.o' ;;
  esac
  obj=$(find "$WHEELS_TARGET_DIR-$1/$1-unknown-linux-gnu/release/build" -path '*/mozjpeg-sys-*/out/*' \
    -name "$pattern" -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
  # .text's file offset and size (readelf reads any architecture's ELF; objcopy does not)
  local text
  text=$(readelf -SW "$obj" 2>/dev/null | sed -n 's/^ *\[ *[0-9]*\] //p' \
    | awk '$1 == ".text" {print $4, $5}')
  if [ -z "$obj" ] || [ -z "$text" ]; then
    echo unknown
    return
  fi
  readelf -rW "$obj" | awk '/^[0-9a-f]+ / {print $1}' > "$tmp/relocs"
  python3 - "$obj" "$text" "$tmp/relocs" "$2" "$1" <<'PY'
import sys
offset, size = (int(x, 16) for x in sys.argv[2].split())
with open(sys.argv[1], "rb") as f:
    f.seek(offset)
    text = f.read(size)
relocs = sorted(int(x, 16) for x in open(sys.argv[3]).read().split())
so = open(sys.argv[4], "rb").read()
# 48-byte windows that no relocated field (8 bytes at most) touches
bounds = [-8, *relocs, len(text)]
windows = [a + 8 for a, b in zip(bounds, bounds[1:]) if b - (a + 8) >= 48][:8]
found = sum(so.find(text[a : a + 48]) >= 0 for a in windows)
kind = "nasm-avx2" if sys.argv[5] == "x86_64" else "neon"
print("unknown" if not windows else kind if found == len(windows) else "missing")
PY
}

rows=()
for arch in "${archs[@]}"; do
  shopt -s nullglob
  wheels=("$OUT"/fruitlens-*"$arch".whl)
  shopt -u nullglob
  [ ${#wheels[@]} -gt 0 ] || { fail "$arch" "no wheel in $OUT"; continue; }
  for whl in "${wheels[@]}"; do
    name=$(basename "$whl")
    # fruitlens-VERSION-PY-ABI-PLATFORM.whl; PLATFORM may be dotted (compressed tag set)
    IFS=- read -r _ _ py abi plat <<< "${name%.whl}"
    [ "$py-$abi" = cp39-abi3 ] || fail "$name" "python/abi tag $py-$abi, expected cp39-abi3"
    wheel_tags=$(python3 - "$whl" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = [n for n in z.namelist() if n.endswith(".dist-info/WHEEL")][0]
print(" ".join(sorted(l.split(":", 1)[1].strip()
                      for l in z.read(meta).decode().splitlines() if l.startswith("Tag:"))))
EOF
)
    name_tags=$(for p in ${plat//./ }; do echo "$py-$abi-$p"; done | sort | xargs)
    [ "$wheel_tags" = "$name_tags" ] \
      || fail "$name" "WHEEL tags ($wheel_tags) differ from the filename's ($name_tags)"
    # the oldest manylinux_X_Y of the tag set is what pip checks against the host's glibc
    tag_glibc=$(for p in ${plat//./ }; do
      case $p in
        manylinux_*) echo "$p" | sed -E 's/^manylinux_([0-9]+)_([0-9]+)_.*/\1.\2/' ;;
        manylinux2014_*) echo 2.17 ;;
        manylinux2010_*) echo 2.12 ;;
        manylinux1_*) echo 2.5 ;;
      esac
    done | sort -V | head -1)
    [ -n "$tag_glibc" ] || fail "$name" "not a manylinux tag: $plat"
    case $plat in *_"$arch") ;; *) fail "$name" "platform tag $plat is not $arch" ;; esac

    rm -rf "$tmp/w" && mkdir -p "$tmp/w"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$whl" "$tmp/w"
    (cd "$tmp/w" && find fruitlens -type f | sort) > "$tmp/got"
    missing=$(comm -23 "$tmp/expected" "$tmp/got" | xargs)
    [ -z "$missing" ] || fail "$name" "missing files: $missing"
    [ -f "$tmp/w/fruitlens/py.typed" ] || fail "$name" "no fruitlens/py.typed"
    grep -Eq '^fruitlens ?= ?fruitlens.cli:main' "$tmp"/w/fruitlens-*.dist-info/entry_points.txt \
      || fail "$name" "no fruitlens console script"
    sos=("$tmp"/w/fruitlens/_native*.so)
    so=${sos[0]}
    [ -f "$so" ] || { fail "$name" "no fruitlens/_native*.so"; continue; }

    case $arch in
      x86_64) want_file='x86-64' want_machine='X86-64' ;;
      aarch64) want_file='ARM aarch64' want_machine='AArch64' ;;
    esac
    file -b "$so" | grep -q "$want_file" || fail "$name" "file says: $(file -b "$so")"
    readelf -h "$so" | grep -q "Machine:.*$want_machine" \
      || fail "$name" "readelf machine: $(readelf -h "$so" | grep Machine:)"
    # GLIBC_x.y versions of the dynamic symbols (objdump reads foreign ELF generically;
    # readelf's version-needs section is the fallback).
    glibc=$( { objdump -T "$so" 2>/dev/null || readelf -V "$so"; } \
      | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
    [ -n "$glibc" ] || fail "$name" "no GLIBC symbol versions found"
    if [ -n "$glibc" ] && [ -n "$tag_glibc" ]; then
      [ "$(printf '%s\n%s\n' "$glibc" "$tag_glibc" | sort -V | tail -1)" = "$tag_glibc" ] \
        || fail "$name" "needs GLIBC_$glibc, newer than its tag's $tag_glibc"
      [ "$(printf '%s\n%s\n' "$tag_glibc" "$MAX_GLIBC" | sort -V | tail -1)" = "$MAX_GLIBC" ] \
        || fail "$name" "tag asks for glibc $tag_glibc, newer than MAX_GLIBC=$MAX_GLIBC"
    fi
    needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | xargs)
    for lib in $needed; do
      case $lib in
        libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libgcc_s.so.1 \
          | ld-linux-x86-64.so.2 | ld-linux-aarch64.so.1) ;;
        *) fail "$name" "links $lib, not in the manylinux set" ;;
      esac
    done
    simd=$(simd_check "$arch" "$so")
    case $simd in
      missing) fail "$name" "libjpeg-turbo's $arch SIMD code is not in the .so (x86_64: nasm?)" ;;
      unknown) log "$name: SIMD not checked (no mozjpeg-sys build in $WHEELS_TARGET_DIR-$arch)" ;;
    esac
    size=$(stat -c %s "$whl")
    rows+=("$name|$py-$abi-$plat|$(numfmt --to=iec --suffix=B "$size") ($size)|GLIBC_$glibc|$simd")
    log "checked $name: $(file -b "$so" | cut -d, -f1-2); needs GLIBC_$glibc; NEEDED: $needed"
  done
done

shopt -s nullglob
for sdist in "$OUT"/fruitlens-*.tar.gz; do
  size=$(stat -c %s "$sdist")
  members=$(tar -tzf "$sdist")
  for f in pyproject.toml Cargo.toml Cargo.lock src/lib.rs python/fruitlens/__init__.py \
    python/fruitlens/py.typed; do
    grep -q "^[^/]*/$f\$" <<< "$members" || fail "$(basename "$sdist")" "no $f"
  done
  rows+=("$(basename "$sdist")|sdist|$(numfmt --to=iec --suffix=B "$size") ($size)|-|-")
done
shopt -u nullglob

{
  echo "artifact|tag|size|max glibc symbol|jpeg simd"
  printf '%s\n' "${rows[@]}"
} | column -t -s '|'
if [ "$failures" -gt 0 ]; then
  log "$failures check(s) failed"
  exit 1
fi
log "all checks passed ($OUT/)"
