# shellcheck shell=bash
# Common settings for the harness scripts. Sourced, never run.

set -euo pipefail

export TOP
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything slow or large lives outside git, under one cache directory.
CACHE=${KVMRS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvm-coalesced-rs}
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export PATH="$CARGO_HOME/bin:$PATH"
export CCACHE_DIR=$CACHE/ccache

# The kernel flavour: "guest" (default) or "debug" (KASAN, lockdep, kmemleak, UBSAN; make check-debug).
FLAVOUR=${KVMRS_FLAVOUR:-guest}
export CURRENT_BUILD
case "$FLAVOUR" in guest) CURRENT_BUILD=$CACHE/current-build ;; debug) CURRENT_BUILD=$CACHE/current-build-debug ;;
*) echo "error: KVMRS_FLAVOUR must be guest or debug" >&2; exit 1 ;; esac

# The Debian sid build root (scripts/build-root): every kernel, module and selftest build runs in it,
# with Debian's own rustc, rust-src, bindgen, clang and gcc. Its directory is keyed by the package
# list; the versions it holds are recorded in $ROOT/kvmrs-versions and key the build directories.
ROOT_SUITE=sid
ROOT_PACKAGES=(linux-source-7.2 rustc rust-src bindgen libclang-dev clang-22 lld-22 llvm-22
	gcc libc6-dev make flex bison bc libelf-dev libssl-dev kmod cpio python3 dwarves ccache
	xz-utils perl rsync rustfmt rust-clippy)
# shellcheck disable=SC2034 # used by the scripts that source this file
ROOT=$CACHE/root/$(printf '%s\n' "$ROOT_SUITE" "${ROOT_PACKAGES[@]}" | sha256sum | cut -c1-12)
# The clang/LLVM suffix of our guest kernel build: LLVM 22 is the LLVM of sid's rustc, which
# CONFIG_RUST_INLINE_HELPERS (RUSTC_CLANG_LLVM_COMPATIBLE) requires.
# shellcheck disable=SC2034
LLVM_SUFFIX=-22

# Debian's own Rust-enabled kernel, the target of the out-of-tree kvm.ko (scripts/debian-kernel):
# its package version must be the build root's linux-source-7.2 version.
# shellcheck disable=SC2034
DEBIAN_KERNEL=${KVMRS_DEBIAN_KERNEL:-7.2.13+deb14-amd64}

# What `make module` built for Debian's kernel last: the paths vm-run --kernel debian boots with.
export CURRENT_DEBIAN=$CACHE/current-debian

T0=${T0:-$(date +%s)}
export T0

# stage NAME: print a progress line with the seconds elapsed since the harness started.
stage() {
	printf '==> [%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2
}

die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# staged_selftests: a directory holding only the built selftest executables (not objects), named
# kvm/, ready for `vm-run --add`. Needs $BUILD.
staged_selftests() {
	local out=$BUILD/selftests-staged/kvm
	rm -rf "$out"
	mkdir -p "$out"
	(cd "$BUILD/selftests/kvm" && find . -type f -perm -u+x ! -name '*.o' ! -name '*.a' -print0 |
		cpio -0 -pdm --quiet "$out")
	echo "$out"
}
