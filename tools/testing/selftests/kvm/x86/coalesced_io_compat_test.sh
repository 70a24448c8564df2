#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The coalesced MMIO buffers' UAPI through the compat path: coalesced_io_compat, built for i386
# and for x86-64 from one source, must print the same transcript (sizes, offsets, ioctl numbers,
# every answer, the ring's entries after the guest's writes) and pass. A 32-bit program that
# cannot run at all (a kernel without IA32 emulation) is a failure: the test exists to run it.
dir=$(dirname "$0")
out32=$(mktemp) out64=$(mktemp)
trap 'rm -f "$out32" "$out64"' EXIT
"$dir/coalesced_io_compat_32" >"$out32" 2>&1
rc32=$?
"$dir/coalesced_io_compat_64" >"$out64" 2>&1
rc64=$?
cat "$out64"
if [ "$rc32" != 0 ] || [ "$rc64" != 0 ]; then
	echo "coalesced_io_compat: the i386 program exited $rc32, the x86-64 one $rc64"
	cat "$out32"
	exit 1
fi
if ! cmp -s "$out32" "$out64"; then
	echo "coalesced_io_compat: the i386 program printed something else:"
	cat "$out32"
	exit 1
fi
echo "coalesced_io_compat_test: i386 and x86-64 printed the same $(wc -l <"$out64") lines"
