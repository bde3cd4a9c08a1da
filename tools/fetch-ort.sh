#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library that the `ort` backend loads at run time.
#
# Downloads the pinned `onnxruntime` wheel from PyPI (through pip, the ordinary client), verifies
# it, and extracts `libonnxruntime.so.<version>` (plus `libonnxruntime_providers_shared.so`) into
# `.ort/lib/` at the repository root, with the `libonnxruntime.so` and `libonnxruntime.so.<major>`
# symlinks (the path of the former is printed on stdout). w2v finds `.ort/lib/libonnxruntime.so` from the checkout on its own; elsewhere, point
# `ORT_DYLIB_PATH` at the library.
#
# Idempotent: does nothing when the pinned version is already installed.
#
# Environment:
#   ORT_VERSION   onnxruntime version to fetch (default: the pin below). Only the pinned version's
#                 wheel checksums are known to this script; other versions are checked against the
#                 hashes PyPI publishes (pip) and the wheel's own RECORD.
#   W2V_ORT_DIR   where to install (default: <repo>/.ort); the library goes to $W2V_ORT_DIR/lib.
set -euo pipefail

# The pin. 1.32.0 is new enough for ort 2.0.0-rc.15 (built against ORT API 17, i.e. >= 1.17; it
# was designed for 1.24) and has manylinux_2_28 wheels for x86_64 and aarch64.
PINNED_VERSION=1.32.0
declare -A PINNED_SHA256=(
  [x86_64]=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
  [aarch64]=2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c
)
# The Python version only selects which wheel to download: the extracted library does not link
# against Python.
PY_VERSION=3.11

die() { echo "fetch-ort: error: $*" >&2; exit 1; }
say() { echo "fetch-ort: $*" >&2; }

VERSION="${ORT_VERSION:-$PINNED_VERSION}"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "ORT_VERSION must look like 1.32.0, got '$VERSION'"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ort_dir="${W2V_ORT_DIR:-$repo_root/.ort}"
lib_dir="$ort_dir/lib"
stamp="$lib_dir/.w2v-ort-version"

arch="$(uname -m)"
case "$arch" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) die "no onnxruntime wheel for architecture '$arch' (supported: x86_64, aarch64); build ONNX Runtime yourself and set ORT_DYLIB_PATH" ;;
esac
[[ "$(uname -s)" == Linux ]] || die "only Linux is supported; set ORT_DYLIB_PATH to an ONNX Runtime library instead"
platform="manylinux_2_28_$arch"

report() {
  echo "$lib_dir/libonnxruntime.so"
  say "ONNX Runtime $VERSION ($arch) is in $lib_dir"
  if [[ -n "${W2V_ORT_DIR:-}" ]]; then
    say "outside the checkout, use it with: export ORT_DYLIB_PATH=$lib_dir/libonnxruntime.so"
  fi
}

want_stamp="onnxruntime $VERSION $arch"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" && -f "$lib_dir/libonnxruntime.so.$VERSION" &&
  "$(readlink "$lib_dir/libonnxruntime.so" 2>/dev/null)" == "libonnxruntime.so.$VERSION" ]]; then
  report
  exit 0
fi

command -v python3 >/dev/null || die "python3 is required (for pip)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is required: install python3-pip"

# manylinux_2_28 wheels need glibc >= 2.28.
if glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null)"; then
  glibc="${glibc#glibc }"
  if [[ "$(printf '%s\n' 2.28 "$glibc" | sort -V | head -n1)" != 2.28 ]]; then
    say "warning: glibc $glibc is older than 2.28; the $platform library will probably not load"
  fi
fi

mkdir -p "$ort_dir"
work="$(mktemp -d "$ort_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

say "downloading onnxruntime $VERSION for $platform from PyPI"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform "$platform" --python-version "$PY_VERSION" \
  --dest "$work/dl" "onnxruntime==$VERSION" ||
  die "pip could not download onnxruntime==$VERSION for $platform"

shopt -s nullglob
wheels=("$work"/dl/onnxruntime-"$VERSION"-*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one onnxruntime-$VERSION wheel, got: ${wheels[*]:-none}"
wheel="${wheels[0]}"

# Verify: the pinned checksum when we know it, then the wheel's RECORD for each extracted file.
sha="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ "$VERSION" == "$PINNED_VERSION" ]]; then
  [[ "$sha" == "${PINNED_SHA256[$arch]}" ]] ||
    die "$(basename "$wheel") has sha256 $sha, expected ${PINNED_SHA256[$arch]}"
  say "verified $(basename "$wheel") (sha256 $sha)"
else
  say "ORT_VERSION=$VERSION is not the pinned $PINNED_VERSION; no pinned checksum (got sha256 $sha)"
fi

python3 - "$wheel" "$work/x" "$VERSION" <<'EOF' || die "could not extract the library from $(basename "$wheel")"
import base64, csv, hashlib, io, os, sys, zipfile

wheel, out, version = sys.argv[1:4]
wanted = {
    f"onnxruntime/capi/libonnxruntime.so.{version}": True,
    "onnxruntime/capi/libonnxruntime_providers_shared.so": False,
}
with zipfile.ZipFile(wheel) as z:
    record_name = f"onnxruntime-{version}.dist-info/RECORD"
    record = {
        row[0]: row[1]
        for row in csv.reader(io.TextIOWrapper(z.open(record_name), "utf-8"))
        if len(row) >= 2
    }
    os.makedirs(out, exist_ok=True)
    for name, required in wanted.items():
        if name not in z.namelist():
            if required:
                sys.exit(f"{name} is not in the wheel")
            continue
        data = z.read(name)
        algo, _, want = record.get(name, "").partition("=")
        if algo != "sha256":
            sys.exit(f"{name} has no sha256 in RECORD")
        got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if got != want:
            sys.exit(f"{name}: sha256 {got} does not match RECORD ({want})")
        if data[:4] != b"\x7fELF":
            sys.exit(f"{name} is not an ELF shared library")
        dest = os.path.join(out, os.path.basename(name))
        with open(dest, "wb") as f:
            f.write(data)
        os.chmod(dest, 0o755)
EOF

ln -s "libonnxruntime.so.$VERSION" "$work/x/libonnxruntime.so.${VERSION%%.*}"
ln -s "libonnxruntime.so.$VERSION" "$work/x/libonnxruntime.so"
echo "$want_stamp" >"$work/x/.w2v-ort-version"

# Swap the new folder in as a whole, so a half-written lib/ is never left behind.
if [[ -e "$lib_dir" ]]; then
  mv "$lib_dir" "$work/old"
fi
mv "$work/x" "$lib_dir"
report
