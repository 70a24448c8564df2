/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest-side writes of 1, 2, 4 or 8 bytes for the coalesced I/O tests: port
 * writes with OUT (8 bytes is an OUTL, the widest port write) and MMIO writes
 * with one store of the given width, so that KVM sees exactly one access.
 * And, for the host side, the check of one ring entry and the setting of a
 * ring's indices, which the edge and buffer tests share.
 */
#ifndef SELFTEST_KVM_COALESCED_IO_GUEST_H
#define SELFTEST_KVM_COALESCED_IO_GUEST_H

#include <stdint.h>
#include <string.h>

#include <kvm_util.h>

static inline void guest_out(uint16_t port, uint64_t val, uint32_t len)
{
	if (len == 1)
		__asm__ __volatile__("outb %%al, %%dx" : : "a"((uint8_t)val), "d"(port));
	else if (len == 2)
		__asm__ __volatile__("outw %%ax, %%dx" : : "a"((uint16_t)val), "d"(port));
	else
		__asm__ __volatile__("outl %%eax, %%dx" : : "a"((uint32_t)val), "d"(port));
}

static inline void guest_mmio(uint64_t addr, uint64_t val, uint32_t len)
{
	switch (len) {
	case 1:
		WRITE_ONCE(*(uint8_t *)addr, val);
		break;
	case 2:
		WRITE_ONCE(*(uint16_t *)addr, val);
		break;
	case 4:
		WRITE_ONCE(*(uint32_t *)addr, val);
		break;
	default:
		WRITE_ONCE(*(uint64_t *)addr, val);
		break;
	}
}

/* Entry `slot` of `ring` must be a write of `len` bytes of `val` at `addr`. */
static inline void check_entry(struct kvm_coalesced_mmio_ring *ring, uint32_t slot,
			       uint32_t pio, uint64_t addr, uint32_t len, uint64_t val)
{
	struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[slot];
	uint64_t data = 0;

	memcpy(&data, e->data, len);
	TEST_ASSERT(e->phys_addr == addr && e->len == len && e->pio == pio && data == val,
		    "entry %u: wanted %s 0x%lx len %u data 0x%lx, got %s 0x%llx len %u data 0x%lx",
		    slot, pio ? "PIO" : "MMIO", addr, len, val, e->pio ? "PIO" : "MMIO",
		    e->phys_addr, e->len, data);
}

/* Sets both indices as userspace may, hostile values included. */
static inline void set_ring(struct kvm_coalesced_mmio_ring *ring, uint32_t first, uint32_t last)
{
	WRITE_ONCE(ring->first, first);
	WRITE_ONCE(ring->last, last);
}

#endif /* SELFTEST_KVM_COALESCED_IO_GUEST_H */
