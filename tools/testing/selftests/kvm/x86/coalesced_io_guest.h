/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest-side writes of 1, 2, 4 or 8 bytes for the coalesced I/O tests: port
 * writes with OUT (8 bytes is an OUTL, the widest port write) and MMIO writes
 * with one store of the given width, so that KVM sees exactly one access.
 */
#ifndef SELFTEST_KVM_COALESCED_IO_GUEST_H
#define SELFTEST_KVM_COALESCED_IO_GUEST_H

#include <stdint.h>

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

#endif /* SELFTEST_KVM_COALESCED_IO_GUEST_H */
