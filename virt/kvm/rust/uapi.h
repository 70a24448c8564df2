/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The userspace API of coalesced MMIO buffers, which our patches add to include/uapi/linux/kvm.h
 * and a distribution's headers lack: for kvm.ko built out of tree (the top-level Kbuild includes
 * it first in kvm_main.c and in the bindgen run of its Rust), and for a VMM, which includes it
 * after <linux/kvm.h>. The same definitions, so that a tree carrying our patches (or a future
 * kernel) is unaffected.
 */
#ifndef __KVM_RUST_UAPI_H__
#define __KVM_RUST_UAPI_H__

#include <linux/kvm.h>

#ifndef KVM_CAP_COALESCED_MMIO2
#define KVM_CAP_COALESCED_MMIO2 252

/* for KVM_CREATE_COALESCED_MMIO_BUFFER */
struct kvm_coalesced_mmio_buffer {
	__u32 flags;		/* in: 0 */
	__u32 entries;		/* in: ring entries, 2 to KVM_CAP_COALESCED_MMIO2 */
	__u64 mmap_size;	/* out: bytes to mmap() at offset 0 */
	__u64 reserved[2];	/* in: 0 */
};

/* for KVM_REGISTER_COALESCED_MMIO2 / KVM_UNREGISTER_COALESCED_MMIO2 */
struct kvm_coalesced_mmio_zone2 {
	__u64 addr;
	__u32 size;
	__u32 pio;
	__u32 buffer_fd;
	__u32 flags;		/* 0 */
};

/* Available with KVM_CAP_COALESCED_MMIO2 */
#define KVM_CREATE_COALESCED_MMIO_BUFFER \
			_IOWR(KVMIO, 0xd6, struct kvm_coalesced_mmio_buffer)
#define KVM_REGISTER_COALESCED_MMIO2 \
			_IOW(KVMIO, 0xd7, struct kvm_coalesced_mmio_zone2)
#define KVM_UNREGISTER_COALESCED_MMIO2 \
			_IOW(KVMIO, 0xd8, struct kvm_coalesced_mmio_zone2)
#endif

#endif
