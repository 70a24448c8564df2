/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What bindgen reads for kvm.ko built out of tree (the top-level Kbuild): the KVM declarations
 * that rust/bindings/bindings_helper.h adds in tree, for a kernel whose bindings lack them.
 */

#include <kvm/iodev.h>
#include <linux/anon_inodes.h>
#include <linux/kvm_host.h>

#include "helpers.h"
#include "uapi.h"

/* A sizeof expression, which bindgen does not evaluate. */
const size_t RUST_CONST_HELPER_KVM_COALESCED_MMIO_MAX = KVM_COALESCED_MMIO_MAX;
