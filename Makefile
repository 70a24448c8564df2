# One entry point. `make demo` and `make check` do all their own set-up (as root on Debian 12).

# One start time for every script a target runs: the progress lines count from it, and Debian's
# archive is asked which kernels it carries once per run (scripts/lib.sh's discover).
export T0 := $(shell date +%s)
.PHONY: demo bench check check-debug fuzz selftests-full setup kernel module deb selftests host-test lint codegen patches clean-build clean-cache

# perf kvm stat on RTC port 0x70: no coalescing, stock C kvm.ko, Rust kvm.ko, in one boot.
demo:
	@scripts/demo

# The same with more runs and iterations; appends the results to bench/history.jsonl.
bench:
	@DEMO_RUNS=$${DEMO_RUNS:-15} DEMO_ITERATIONS=$${DEMO_ITERATIONS:-5000} DEMO_OUT=out/bench \
		DEMO_HISTORY=bench/history.jsonl scripts/demo

check:
	@scripts/check

# The same tests on a KASAN + lockdep + kmemleak + UBSAN kernel built in its own directory.
check-debug:
	@KVMRS_FLAVOUR=debug scripts/check

# The differential fuzzer, C against Rust: FUZZ_SEED (default random), FUZZ_OPS, FUZZ_RUNS.
fuzz:
	@scripts/fuzz

selftests-full:
	@scripts/selftests-full

setup:
	@scripts/setup

kernel: setup
	@scripts/build-kernel

# Our kvm.ko built out of tree (the top-level Kbuild) for each of Debian's own Rust-enabled kernels
# that sid and experimental carry, or the one KVER=<release> names, or the prepared tree KDIR names.
module:
	@scripts/build-module

# kvm-coalesced-rs-dkms_<version>_all.deb in out/deb/: DKMS builds our kvm.ko for each installed
# Rust-enabled Debian kernel (README, "Install it with apt").
deb:
	@scripts/build-deb

selftests: kernel
	@scripts/build-selftests

host-test:
	cd tests/host && cargo test

lint:
	@scripts/lint

patches:
	@scripts/make-patches

# The coalesced write path's machine code, C against Rust, in the current build (docs/codegen.md).
codegen: kernel
	@scripts/codegen-table

# The build tree only (the next build is cold); the unpacked source and ccache stay.
clean-build:
	rm -rf "$${KVMRS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/kvm-coalesced-rs}/build"

# Everything the harness cached, the build root included.
clean-cache:
	rm -rf "$${KVMRS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/kvm-coalesced-rs}"
