#!/usr/bin/env bash
# Cross-build the `w2v` binary for 64-bit ARM Linux (aarch64-unknown-linux-gnu: Jetson, Raspberry
# Pi 4/5, Graviton) on a Debian/Ubuntu x86_64 host, check that the result is an aarch64 ELF, and
# run it under qemu-user when that is installed.
#
#   tools/cross-aarch64.sh                       # release build (what you deploy)
#   tools/cross-aarch64.sh --profile cross-check # CI: unoptimized, no debug info (fast to build)
#   tools/cross-aarch64.sh --smoke               # also export + transcribe a fixture under qemu
#
# Prints the path of the built binary on stdout; everything else goes to stderr.
#
# Idempotent; installs what is missing (as root, via apt-get):
# - the cross C toolchain (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: linker, and the C/asm
#   that tract-linalg compiles), `file`, qemu-user-static (only with --smoke or --run);
# - arm64 development packages (dpkg multiarch) for the `*-sys` crates in Cargo.lock that link a
#   system library: alsa-sys -> libasound2-dev:arm64;
# - the Rust standard library for the target: `rustup target add` when rustup can download it;
#   otherwise std is built from source (`-Zbuild-std`, enabled on stable with RUSTC_BOOTSTRAP=1)
#   with Debian's `rust-src` package of exactly this rustc version (from trixie-backports or sid,
#   looked up with apt in a private state directory, so the host's apt sources are not changed),
#   extracted into the toolchain as `lib/rustlib/src/rust` (what `rustup component add rust-src`
#   would install).
#
# Options:
#   --profile NAME   cargo profile (default: release)
#   --run            run `w2v --version` under qemu-aarch64 (installing qemu-user-static if needed)
#   --smoke          --run, plus: export tools/fixtures/wav2vec2/base-safetensors and transcribe a
#                    fixture clip with tract under qemu; the transcript must equal the host
#                    build's (target/debug/w2v, built if missing)
#   --no-install     never call apt-get; fail naming what is missing
#
# Environment:
#   W2V_CROSS_STD          auto (default: prebuilt std via rustup, else build-std) | rustup | build-std
#   W2V_RUST_SRC_SUITES    Debian suites searched for rust-src (default: "trixie-backports sid")
#   W2V_DEBIAN_MIRROR      (default: http://deb.debian.org/debian)
#   CARGO_TARGET_DIR       as usual (default: <repo>/target)
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
GNU_TRIPLE=aarch64-linux-gnu
# Cargo.lock crates that link a system library, and the Debian package (arm64) that provides it.
declare -A SYS_CRATE_PACKAGES=(
  [alsa-sys]=libasound2-dev
)

die() { echo "cross-aarch64: error: $*" >&2; exit 1; }
say() { echo "cross-aarch64: $*" >&2; }

profile=release
run_version=false
smoke=false
install=true
while (($#)); do
  case "$1" in
    --profile) [[ $# -ge 2 ]] || die "--profile needs a value"; profile="$2"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --run) run_version=true; shift ;;
    --smoke) run_version=true; smoke=true; shift ;;
    --no-install) install=false; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
std_mode="${W2V_CROSS_STD:-auto}"
case "$std_mode" in auto | rustup | build-std) ;; *) die "W2V_CROSS_STD must be auto, rustup or build-std, got '$std_mode'" ;; esac

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
[[ "$(uname -s)" == Linux ]] || die "cross-building needs a Linux host"
command -v cargo >/dev/null && command -v rustc >/dev/null || die "cargo and rustc are needed (https://rustup.rs)"

# ----- Debian packages -----

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

apt_install() { # packages...
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  $install || die "missing Debian packages: ${missing[*]} (install them, or run without --no-install as root)"
  [[ $EUID -eq 0 ]] || die "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install the equivalents for your distribution"
  say "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

command -v dpkg-query >/dev/null || die "this script needs a Debian-based host (dpkg, apt)"
host_packages=(gcc-"$GNU_TRIPLE" libc6-dev-arm64-cross file)
$run_version && host_packages+=(qemu-user-static)
apt_install "${host_packages[@]}"

arm64_packages=()
for crate in "${!SYS_CRATE_PACKAGES[@]}"; do
  if grep -q "^name = \"$crate\"$" Cargo.lock; then arm64_packages+=("${SYS_CRATE_PACKAGES[$crate]}:arm64"); fi
done
if ((${#arm64_packages[@]})); then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $install && [[ $EUID -eq 0 ]] || die "the arm64 architecture is not enabled for dpkg (needed for ${arm64_packages[*]}): dpkg --add-architecture arm64"
    say "enabling the arm64 architecture in dpkg (multiarch) for ${arm64_packages[*]}"
    dpkg --add-architecture arm64
  fi
  apt_install "${arm64_packages[@]}"
fi

# ----- the standard library for the target -----

rustc_version="$(rustc --version | awk '{print $2}')"
sysroot="$(rustc --print sysroot)"
has_prebuilt_std() {
  compgen -G "$(rustc --print target-libdir --target "$TARGET" 2>/dev/null)/libstd-*.rlib" >/dev/null
}

build_std=false
if [[ "$std_mode" == build-std ]]; then
  build_std=true
elif has_prebuilt_std; then
  :
elif command -v rustup >/dev/null && timeout 600 rustup target add "$TARGET" >&2 && has_prebuilt_std; then
  :
elif [[ "$std_mode" == rustup ]]; then
  die "rustup cannot install the $TARGET standard library (W2V_CROSS_STD=rustup)"
else
  say "no prebuilt standard library for $TARGET; building it from source"
  build_std=true
fi

# Debian's rust-src for exactly this rustc, into the toolchain, unless the toolchain has rust-src.
ensure_rust_src() {
  local src="$sysroot/lib/rustlib/src/rust"
  local stamp="$src/.w2v-rust-src"
  if [[ -f "$src/library/std/Cargo.toml" ]]; then
    if [[ ! -f "$stamp" ]]; then return 0; fi # rustup's rust-src component
    if [[ "$(head -n1 "$stamp")" == "$rustc_version" ]]; then return 0; fi
    say "the rust-src in $src is for rustc $(head -n1 "$stamp"), not $rustc_version; replacing it"
  fi
  [[ "$rustc_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "rustc $rustc_version is not a stable release, so Debian has no rust-src for it: rustup component add rust-src"
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "fetching rust-src from Debian needs apt-get and dpkg-deb"

  local mirror="${W2V_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  local suites="${W2V_RUST_SRC_SUITES:-trixie-backports sid}"
  local state="${XDG_CACHE_HOME:-$HOME/.cache}/w2v/cross-aarch64/apt"
  mkdir -p "$state/lists/partial" "$state/archives/partial"
  : >"$state/sources.list"
  local s
  for s in $suites; do
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $s main" >>"$state/sources.list"
  done
  # A private apt: its own sources, lists and cache; the host's configuration stays as it is.
  local apt_opts=(
    -o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state" -o "Dir::Cache::Archives=$state/archives"
    -o "APT::Architectures::=$(dpkg --print-architecture)" -o Acquire::Languages=none
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::CNF::DefaultEnabled=false
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root
  )
  say "looking up Debian's rust-src $rustc_version in: $suites"
  apt-get "${apt_opts[@]}" update -qq >&2 || die "apt-get update of $suites from $mirror failed"
  local versions deb_version
  versions="$(apt-cache "${apt_opts[@]}" madison rust-src | awk -F'|' '{gsub(/ /, "", $2); print $2}')"
  deb_version="$(grep -E "^${rustc_version//./\\.}\+" <<<"$versions" | head -n1 || true)"
  [[ -n "$deb_version" ]] || die "no Debian rust-src package matches rustc $rustc_version (suites: $suites; they have: $(tr '\n' ' ' <<<"$versions")). Use a toolchain of one of those versions, or 'rustup target add $TARGET' where rustup can download"
  local work
  work="$(mktemp -d)"
  say "fetching rust-src $deb_version"
  (cd "$work" && apt-get "${apt_opts[@]}" download "rust-src=$deb_version" >&2) || die "cannot download rust-src $deb_version"
  dpkg-deb -x "$work"/rust-src_*.deb "$work/x"
  local library
  library="$(echo "$work"/x/usr/src/rustc-*/library)"
  [[ -f "$library/std/Cargo.toml" && -f "$library/Cargo.lock" ]] || die "rust-src $deb_version has no library/ with std and Cargo.lock"
  mkdir -p "$src"
  rm -rf "$src/library.w2v-new"
  cp -a "$library" "$src/library.w2v-new"
  rm -rf "$src/library"
  mv "$src/library.w2v-new" "$src/library"
  printf '%s\nDebian rust-src %s\n' "$rustc_version" "$deb_version" >"$stamp"
  rm -rf "$work"
  say "installed the standard library's sources (Debian rust-src $deb_version) into $src"
}

cargo_args=(build --locked --bin w2v --target "$TARGET" --profile "$profile")
if $build_std; then
  ensure_rust_src
  export RUSTC_BOOTSTRAP=1
  cargo_args+=(-Zbuild-std=std,panic_abort)
fi

# ----- build -----

# Only the target's tools and libraries; host build scripts keep the host's.
: "${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:=$GNU_TRIPLE-gcc}"
: "${CC_aarch64_unknown_linux_gnu:=$GNU_TRIPLE-gcc}"
: "${AR_aarch64_unknown_linux_gnu:=$GNU_TRIPLE-ar}"
: "${PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu:=/usr/lib/$GNU_TRIPLE/pkgconfig:/usr/share/pkgconfig}"
: "${PKG_CONFIG_ALLOW_CROSS:=1}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER CC_aarch64_unknown_linux_gnu AR_aarch64_unknown_linux_gnu \
  PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu PKG_CONFIG_ALLOW_CROSS

say "cargo ${cargo_args[*]}"
start=$SECONDS
cargo "${cargo_args[@]}" >&2
say "built in $((SECONDS - start)) s"

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
case "$profile" in dev | test) profile_dir=debug ;; bench) profile_dir=release ;; *) profile_dir="$profile" ;; esac
bin="$target_dir/$TARGET/$profile_dir/w2v"
[[ -f "$bin" ]] || die "cargo finished but $bin is missing"
kind="$(file -b "$bin")"
[[ "$kind" == ELF\ 64-bit\ LSB*ARM\ aarch64* ]] || die "$bin is not an aarch64 ELF executable: $kind"
say "$bin: $kind"

# ----- run under qemu -----

if $run_version; then
  qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
  [[ -n "$qemu" ]] || die "qemu-aarch64 not found (apt-get install qemu-user-static)"
  export QEMU_LD_PREFIX="/usr/$GNU_TRIPLE"
  version="$("$qemu" "$bin" --version)" || die "running $bin under $qemu failed"
  [[ "$version" == "w2v "* ]] || die "$bin --version printed '$version', expected 'w2v <version>'"
  say "under qemu: $version"
fi

if $smoke; then
  fixture=tools/fixtures/wav2vec2/base-safetensors
  # Real speech when the shared data is there (as for the tests), else a committed test clip.
  clip=../shared/data/fsdd/0_george_0.wav
  [[ -f "$clip" ]] || clip=engine/tests/data/audio/stereo_s16.wav
  host_bin="$target_dir/debug/w2v"
  [[ -x "$host_bin" ]] || cargo build --locked --bin w2v >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$qemu" "$bin" export "$fixture" -o "$work/arm.onnx" >&2 || die "--smoke: export under qemu failed"
  "$host_bin" export "$fixture" -o "$work/host.onnx" >&2
  cmp -s "$work/arm.onnx" "$work/host.onnx" || die "--smoke: the aarch64 export of $fixture differs from the host's"
  arm_text="$("$qemu" "$bin" transcribe --backend tract --model "$work/arm.onnx" "$clip")" || die "--smoke: transcribe under qemu failed"
  host_text="$("$host_bin" transcribe --backend tract --model "$work/host.onnx" "$clip")"
  [[ "$arm_text" == "$host_text" ]] || die "--smoke: aarch64 transcript '$arm_text' differs from the host's '$host_text' ($clip)"
  say "smoke test passed: identical export and transcript ('$arm_text') on $clip"
fi

echo "$bin"
