/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * For kvm.ko built out of tree (the top-level Kbuild): the userspace API of coalesced MMIO
 * buffers, which our patches add to include/uapi/linux/kvm.h and a distribution's headers lack.
 * The same definitions, so that a tree carrying our patches (or a future kernel) is unaffected.
 * The Kbuild includes this file first in kvm_main.c, and bindings_helper.h includes it.
 */
#ifndef __KVM_RUST_UAPI_H__
#define __KVM_RUST_UAPI_H__

#include <linux/kvm.h>

#ifndef KVM_CAP_COALESCED_MMIO2
#define KVM_CAP_COALESCED_MMIO2 252

struct kvm_coalesced_mmio_zone2 {
	__u64 addr;
	__u32 size;
	union {
		__u32 pad;
		__u32 pio;
	};
	__u32 buffer_fd;
};

#define KVM_COALESCED_MMIO_BUFFER_MAX_PAGES 64

#define KVM_CREATE_COALESCED_MMIO_BUFFER	_IO(KVMIO, 0xd6)
#define KVM_REGISTER_COALESCED_MMIO2 \
			_IOW(KVMIO, 0xd7, struct kvm_coalesced_mmio_zone2)
#define KVM_UNREGISTER_COALESCED_MMIO2 \
			_IOW(KVMIO, 0xd8, struct kvm_coalesced_mmio_zone2)
#endif

#endif
