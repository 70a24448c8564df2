/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What bindgen reads for the KVM bindings of kvm.ko's Rust (virt/kvm/rust/Makefile.bindings), in
 * tree and out of tree alike: the declarations of KVM our Rust uses, and those of
 * coalesced_mmio.h, which our Rust implements and checks its signatures against.
 */

#include <kvm/iodev.h>
#include <linux/anon_inodes.h>
#include <linux/kvm_host.h>

#include "../coalesced_mmio.h"

/* A sizeof expression, which bindgen does not evaluate. */
const size_t RUST_CONST_HELPER_KVM_COALESCED_MMIO_MAX = KVM_COALESCED_MMIO_MAX;
