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

# The kernel series we support (dkms/supported-series, which the DKMS package reads too). Which
# kernels and sources of them Debian's archive carries is found at run time
# (scripts/discover-kernels, through `discover` below): no file names a Debian package version
# or kernel release.
read -r -a SUPPORTED_SERIES <"$TOP/dkms/supported-series"
# The series of our own guest kernel (make kernel), built from the newest linux-source of that
# series in sid or experimental. Our patches are against this series alone; the others are
# out-of-tree targets only.
IN_TREE_SERIES=7.3

# The Debian sid build roots (scripts/build-root): every kernel, module and selftest build runs in
# one, with Debian's own rustc, rust-src, bindgen, clang and gcc. They live under $ROOTS, keyed by
# the package list, one per version of sid's rustc it was made with (rustc-<version>/): a Debian
# kernel must be built by the very rustc that built it, and Debian replaces rustc in place, so the
# root made before an upload of rustc to sid is kept while a kernel may still need it. $ROOT is
# the one in use: KVMRS_ROOT (scripts/debian-kernel chooses it for each Debian kernel), else the
# newest ($ROOTS/current). The versions a root holds are in $ROOT/kvmrs-versions and key the
# build directories.
ROOT_SUITE=sid
ROOT_PACKAGES=(rustc rust-src bindgen libclang-dev clang-22 lld-22 llvm-22 gcc libc6-dev make flex
	bison bc libelf-dev libssl-dev kmod cpio python3 dwarves ccache xz-utils perl rsync rustfmt
	rust-clippy uuid-dev)
ROOTS=$CACHE/root/$(printf '%s\n' "$ROOT_SUITE" "${ROOT_PACKAGES[@]}" | sha256sum | cut -c1-12)
# shellcheck disable=SC2034 # used by the scripts that source this file
ROOT=${KVMRS_ROOT:-$(readlink -f "$ROOTS/current" 2>/dev/null || echo "$ROOTS/current")}
# The clang/LLVM suffix of our guest kernel build: LLVM 22 is the LLVM of sid's rustc, which
# CONFIG_RUST_INLINE_HELPERS (RUSTC_CLANG_LLVM_COMPATIBLE) requires.
# shellcheck disable=SC2034
LLVM_SUFFIX=-22

# What `make module` built for each Debian kernel: current-debian/<release> holds the paths that
# vm-run --kernel debian[:<release>] boots with.
export CURRENT_DEBIAN=$CACHE/current-debian

# Our own view of Debian's archive, apart from the host's apt: sid and experimental, their
# package lists, and the packages downloaded from them.
ARCHIVE=$CACHE/archive
ARCHIVE_APT_CONF=$ARCHIVE/apt.conf
# What discover found: "kernel SUITE RELEASE VERSION SERIES ok|skip REASON", "source SERIES
# VERSION SUITE" lines, and "tool rustc VERSION" (sid's rustc, which keys the build roots).
DISCOVERED=$ARCHIVE/discovered

# debian_mirror: the Debian archive the host's own apt uses (empty: Debian's default).
debian_mirror() {
	local mirror
	mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 ~ /^(bookworm|stable)$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	echo "$mirror"
}

# archive_apt APT-COMMAND ARGS...: apt-get or apt-cache on our view of the archive.
archive_apt() {
	"$1" -c "$ARCHIVE_APT_CONF" "${@:2}"
}

# discover: find the kernels, sources and toolchain that Debian's archive carries now, once per
# run of the harness (T0), and print them. A run that cannot reach the archive goes on with what
# the last run found, saying so.
discover() {
	[ "$(cat "$ARCHIVE/discovered-at" 2>/dev/null)" != "$T0" ] || return 0
	mkdir -p "$ARCHIVE/lists/partial" "$ARCHIVE/cache/archives/partial"
	local mirror
	mirror=$(debian_mirror)
	mirror=${mirror:-http://deb.debian.org/debian}
	printf 'deb %s %s main\n' "$mirror" sid "$mirror" experimental >"$ARCHIVE/sources.list"
	# sid's Release file can look expired against a machine's clock.
	cat >"$ARCHIVE_APT_CONF" <<-CONF
		Dir::State::Lists "$ARCHIVE/lists";
		Dir::Etc::SourceList "$ARCHIVE/sources.list";
		Dir::Etc::SourceParts "/dev/null";
		Dir::Cache "$ARCHIVE/cache";
		Acquire::Check-Valid-Until "false";
		APT::Sandbox::User "root";
	CONF
	stage "asking Debian's archive which kernels sid and experimental carry"
	# --error-on=any: a list that could not be fetched is a failure, not a warning.
	if ! archive_apt apt-get update -qq --error-on=any >&2; then
		[ -s "$DISCOVERED" ] || die "cannot reach Debian's archive ($mirror), and no earlier run found anything"
		echo "warning: Debian's archive is unreachable; using what the last run found" >&2
	else
		"$TOP/scripts/discover-kernels" "$ARCHIVE_APT_CONF" "$DISCOVERED.tmp" "${SUPPORTED_SERIES[@]}" ||
			die "could not read Debian's package lists"
		echo "tool rustc $(archive_apt apt-cache madison rustc | awk -F' *[|] *' '$3 ~ / sid\// { print $2; exit }')" >>"$DISCOVERED.tmp"
		mv "$DISCOVERED.tmp" "$DISCOVERED"
		# Pruning trusts the discovery only when it found what the archive always has: sid's
		# kernel and the source of our own kernel's series.
		if grep -q '^kernel sid ' "$DISCOVERED" && grep -q "^source $IN_TREE_SERIES " "$DISCOVERED"; then
			prune_caches
		else
			echo "warning: Debian's archive lists no kernel in sid or no linux-source-$IN_TREE_SERIES; nothing cached is removed" >&2
		fi
	fi
	sed -n 's/^kernel \([^ ]*\) \([^ ]*\) \([^ ]*\) [^ ]* ok$/    found: Debian \1 kernel \2 (\3)/p
		s/^kernel \([^ ]*\) \([^ ]*\) \([^ ]*\) [^ ]* skip \(.*\)/    found: Debian \1 kernel \2 (\3): skipped, \4/p
		s/^source \([^ ]*\) \([^ ]*\) \(.*\)/    found: linux-source-\1 \2 in \3/p' "$DISCOVERED" >&2
	echo "$T0" >"$ARCHIVE/discovered-at"
}

# prune_caches: what was cached for kernels and sources that the archive no longer carries can
# never be used again (Debian keeps only what is current): remove it. Of the other sources, only
# our own kernel's keeps its work tree, git base and build directories.
prune_caches() {
	local d name in_tree
	in_tree=$(awk -v s="$IN_TREE_SERIES" '$1 == "source" && $2 == s { print $3 }' "$DISCOVERED")
	for d in "$CACHE"/debian/* "$CACHE"/current-debian/* "$CACHE"/build/module/debian-* "$CACHE"/src/* "$CACHE"/build/*; do
		[ -e "$d" ] || continue
		name=${d##*/}
		name=${name#debian-}
		name=${name%-debug}
		case "$d" in
		"$CACHE"/build/module | "$CACHE"/build/module/kdir-* | "$CACHE"/build/guest-tools) continue ;;
		"$CACHE"/build/module/*) discovered "$name" && continue ;;
		# Our kernel's build directories: its current source version's only.
		"$CACHE"/build/*) [ "$name" = "$in_tree" ] && continue ;;
		"$CACHE"/src/*)
			if discovered "$name"; then
				[ "$name" = "$in_tree" ] || rm -rf --one-file-system "$d/work" "$d/work.tmp" "$d/base.git"
				continue
			fi
			;;
		*) discovered "$name" && continue ;;
		esac
		stage "removing $d: nothing found in Debian's archive now needs it"
		rm -rf --one-file-system "$d"
	done
}

# discovered NAME: whether the last discovery found a kernel release or package version NAME.
discovered() {
	awk -v n="$1" '($1 == "kernel" && ($3 == n || $4 == n)) || ($1 == "source" && $3 == n) { found = 1 }
		END { exit !found }' "$DISCOVERED"
}

# debian_kernels all|ok: the Debian kernels found, "SUITE RELEASE VERSION SERIES STATUS [REASON]"
# a line, sid's first; all of them, or only those discover found nothing against.
debian_kernels() {
	discover
	awk -v only="$1" '$1 == "kernel" && (only == "all" || $6 == only) { sub(/^kernel /, ""); print }' "$DISCOVERED"
}

# debian_release [sid|RELEASE]: the release of sid's kernel, or RELEASE if it was found.
debian_release() {
	local want=${1:-sid}
	debian_kernels all | awk -v w="$want" '($1 == "sid" && w == "sid") || $2 == w { print $2; exit }'
}

# sid_rustc: the version of the rustc package that sid carries, as discover found it.
sid_rustc() {
	awk '$1 == "tool" && $2 == "rustc" { print $3 }' "$DISCOVERED"
}

# source_version SERIES: the newest version of linux-source-SERIES that the archive carries.
source_version() {
	discover
	awk -v s="$1" '$1 == "source" && $2 == s { print $3 }' "$DISCOVERED"
}

# fetch_source SERIES VERSION: linux-source-SERIES of VERSION unpacked, read-only, into
# $CACHE/src/VERSION/pristine (once per version); prints that directory.
fetch_source() {
	local series=$1 version=$2 dir=$CACHE/src/$2
	if [ ! -f "$dir/pristine/.kvmrs-unpacked" ]; then
		stage "downloading and unpacking linux-source-$series $version (about 170 MB)"
		rm -rf "$dir/pristine" "$dir/deb"
		mkdir -p "$dir/deb" "$dir/pristine"
		(cd "$dir/deb" && archive_apt apt-get download -qq "linux-source-$series=$version") >&2 ||
			die "could not download linux-source-$series $version from Debian's archive"
		dpkg-deb --fsys-tarfile "$dir"/deb/*.deb | tar -xO "./usr/src/linux-source-$series.tar.xz" |
			tar -xJ -C "$dir/pristine" --strip-components=1 || die "could not unpack linux-source-$series $version"
		rm -rf "$dir/deb"
		touch "$dir/pristine/.kvmrs-unpacked"
		chmod -R a-w "$dir/pristine"
	fi
	echo "$dir/pristine"
}

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

# kvm_ko_identity KO: which coalesced MMIO a kvm.ko carries, from its symbols: "c" (the C file's
# coalesced_mmio_write(), none of our crate's), "rust" (our crate, coalesced_mmio_rust, and not
# the C function), or "unknown". scripts/guest/kvm-load makes the same test on the loaded module.
kvm_ko_identity() {
	local syms
	syms=$(nm "$1" 2>/dev/null) || { echo unknown; return; }
	local c=0 rust=0
	grep -qE '^[0-9a-f]* [tT] coalesced_mmio_write$' <<<"$syms" && c=1
	grep -q 'coalesced_mmio_rust' <<<"$syms" && rust=1
	case $c$rust in 10) echo c ;; 01) echo rust ;; *) echo unknown ;; esac
}

# check_variant_identity KO c|rust: dies unless the kvm.ko is the variant it is handed out as.
check_variant_identity() {
	local got
	got=$(kvm_ko_identity "$1")
	[ "$got" = "$2" ] || die "$1 is handed out as the $2 kvm.ko but its symbols say: $got"
}

# guest_tool NAME: the path of scripts/guest/NAME.c built static in the build root, once per
# version of its source (under $CACHE/build/guest-tools).
guest_tool() {
	local src=$TOP/scripts/guest/$1.c key out
	key=$(cat "$src" "$ROOT/kvmrs-versions" | sha256sum | cut -c1-12)
	out=$CACHE/build/guest-tools/$1-$key
	if [ ! -x "$out" ]; then
		mkdir -p "$CACHE/build/guest-tools"
		local tmp
		tmp=$(mktemp "$out.XXXXXX")
		"$TOP/scripts/in-root" gcc -O2 -Wall -Wextra -Werror -static -o "$tmp" "$src" >&2 ||
			die "building $src failed"
		mv "$tmp" "$out"
	fi
	echo "$out"
}
