// SPDX-License-Identifier: GPL-2.0
/*
 * Edges of coalesced MMIO/PIO that coalesced_io_test does not reach: ring indices corrupted by
 * userspace, unregister semantics (including the 2018 wrong-pio use-after-free), register edges
 * up to a full I/O bus, writes straddling two zones, and a VM destroyed with zones registered.
 * Each case names the kernel behaviour it pins down; the kernel must also stay free of warnings,
 * which the harness checks in dmesg after the test.
 *
 *   coalesced_io_edges_test [-c CYCLES]
 *
 * With -c, instead: CYCLES times, a VM made (its ring page), zones of both kinds registered, and
 * where the kernel has coalesced MMIO buffers a buffer of the most entries created, mapped, given
 * a zone and closed; then the VM destroyed. scripts/guest/reload-cycle measures the kernel's
 * memory around it: anything such a cycle leaks is multiplied by CYCLES.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/sizes.h>

#include <kvm_util.h>
#include <processor.h>

#include "ucall_common.h"

#include "coalesced_io_guest.h"

#define MMIO_GPA	(4ull * SZ_1G)	/* no memslot here: identity-mapped MMIO */
#define PIO_PORT	0x80
#define NR_IOBUS_DEVS	1000
/* On the PIO bus of a VM with kvm_util's irqchip: the PIC's master, slave and ELCR. */
#define PIC_PIO_DEVS	3
#define SCRIBBLED_WRITES 3000
#define UCALL_PORT	0x1000	/* x86 ucalls are OUTs to this port (lib/x86_64/ucall.c) */

/* One guest access, described by the host before each KVM_RUN. */
struct guest_cmd {
	uint64_t addr;
	uint64_t val;
	uint32_t len;
	uint32_t pio;
};

static struct guest_cmd cmd;

static void guest_code(void)
{
	for (;;) {
		struct guest_cmd c = READ_ONCE(cmd);

		if (c.pio)
			guest_out(c.addr, c.val, c.len);
		else
			guest_mmio(c.addr, c.val, c.len);
		GUEST_SYNC(0);
	}
}

struct ctx {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	struct kvm_coalesced_mmio_ring *ring;
	uint32_t max;
};

static int zone_ioctl(struct kvm_vm *vm, unsigned long ioctl_nr, uint64_t addr, uint32_t size,
		      uint32_t pio)
{
	struct kvm_coalesced_mmio_zone zone = { .addr = addr, .size = size, .pio = pio };

	return ioctl(vm->fd, ioctl_nr, &zone) ? -errno : 0;
}

static int reg(struct ctx *c, uint64_t addr, uint32_t size, uint32_t pio)
{
	return zone_ioctl(c->vm, KVM_REGISTER_COALESCED_MMIO, addr, size, pio);
}

static int unreg(struct ctx *c, uint64_t addr, uint32_t size, uint32_t pio)
{
	return zone_ioctl(c->vm, KVM_UNREGISTER_COALESCED_MMIO, addr, size, pio);
}

/*
 * Runs one guest write and returns true if KVM coalesced it (the guest went straight on to its
 * ucall), false if it exited to userspace, after checking that the exit describes the write.
 */
static bool guest_write(struct ctx *c, uint32_t pio, uint64_t addr, uint32_t len, uint64_t val)
{
	struct kvm_run *run = c->vcpu->run;

	cmd = (struct guest_cmd){ .addr = addr, .val = val, .len = len, .pio = pio };
	sync_global_to_guest(c->vm, cmd);
	vcpu_run(c->vcpu);

	if (run->exit_reason == KVM_EXIT_IO && run->io.port == UCALL_PORT) {
		TEST_ASSERT_EQ(get_ucall(c->vcpu, NULL), UCALL_SYNC);
		return true;
	}
	if (pio) {
		TEST_ASSERT(run->exit_reason == KVM_EXIT_IO && run->io.port == addr &&
			    run->io.direction == KVM_EXIT_IO_OUT && run->io.size == len,
			    "expected a %u-byte OUT to 0x%lx, got exit %u",
			    len, addr, run->exit_reason);
	} else {
		TEST_ASSERT(run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write &&
			    run->mmio.phys_addr == addr && run->mmio.len == len,
			    "expected a %u-byte MMIO write to 0x%lx, got exit %u (0x%llx, %u)",
			    len, addr, run->exit_reason, run->mmio.phys_addr, run->mmio.len);
	}
	/* Let the guest finish the instruction and reach its ucall. */
	vcpu_run(c->vcpu);
	TEST_ASSERT_EQ(get_ucall(c->vcpu, NULL), UCALL_SYNC);
	return false;
}

/* CVE-2019-14821: `last` is userspace's to corrupt, and must never be used as an index. */
static void test_hostile_indices(struct ctx *c)
{
	const uint32_t bad[] = { c->max, c->max + 1, 1u << 31, UINT32_MAX - 1, UINT32_MAX };
	static uint8_t before[4096];
	uint32_t i, j;

	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 8, 0), 0);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		set_ring(c->ring, 0, bad[i]);
		memcpy(before, c->ring, getpagesize());
		TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 0x1111 + i),
			    "a write was coalesced with last = %u", bad[i]);
		TEST_ASSERT(!memcmp(before, c->ring, getpagesize()),
			    "KVM wrote to the ring with last = %u", bad[i]);
	}
	/* `first` is only compared: any value of it leaves room. */
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		set_ring(c->ring, bad[i], 0);
		TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x2222 + i),
			    "not coalesced with first = %u", bad[i]);
		TEST_ASSERT_EQ(c->ring->last, 1);
		check_entry(c->ring, 0, 0, MMIO_GPA, 8, 0x2222 + i);
	}
	/* The last slot: from first = 5 it wraps `last` to 0; from first = 0 the ring is full. */
	set_ring(c->ring, 5, c->max - 1);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x3333), "slot max-1 refused");
	TEST_ASSERT_EQ(c->ring->last, 0);
	check_entry(c->ring, c->max - 1, 0, MMIO_GPA, 8, 0x3333);
	set_ring(c->ring, 0, c->max - 1);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 0x4444), "a full ring took a write");
	/* 6.12's fix: with first = 0 and last = 85 the old u32 test saw a full ring. */
	set_ring(c->ring, 0, 85);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x5555), "84 free slots reported as full");
	/* Every width is stored with its length and exact bytes. */
	for (j = 1; j <= 8; j <<= 1) {
		set_ring(c->ring, 0, 0);
		TEST_ASSERT(guest_write(c, 0, MMIO_GPA, j, 0x8877665544332211ull >> (64 - 8 * j)),
			    "%u-byte MMIO write not coalesced", j);
		check_entry(c->ring, 0, 0, MMIO_GPA, j, 0x8877665544332211ull >> (64 - 8 * j));
	}
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 8, 0), 0);
	set_ring(c->ring, 0, 0);
}

static struct ctx *scribble_ctx;
static bool stop_scribbling;

/* Userspace may store anything into the indices at any moment: keep doing so. */
static void *scribble_indices(void *arg)
{
	struct ctx *c = scribble_ctx;
	const uint32_t pick[] = { 0, 1, c->max - 2, c->max - 1, c->max, c->max + 1, 1u << 31,
				  UINT32_MAX - 1, UINT32_MAX };
	uint32_t x = 12345;

	while (!READ_ONCE(stop_scribbling)) {
		x = x * 1103515245 + 12345;
		WRITE_ONCE(c->ring->last,
			   x & 1 ? pick[(x >> 8) % ARRAY_SIZE(pick)] : (x >> 8) % c->max);
		WRITE_ONCE(c->ring->first,
			   x & 2 ? pick[(x >> 16) % ARRAY_SIZE(pick)] : (x >> 16) % c->max);
	}
	return NULL;
}

/*
 * With the indices rewritten continuously by another thread, every write is either coalesced or
 * exits with its own address and length, and KVM never writes past the ring's last entry.
 */
static void test_scribbled_indices(struct ctx *c)
{
	size_t ring_end = sizeof(struct kvm_coalesced_mmio_ring) +
			  c->max * sizeof(struct kvm_coalesced_mmio);
	int i, coalesced = 0, tail_ok = 1;
	pthread_t thread;
	size_t off;

	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 8, 0), 0);
	TEST_ASSERT_EQ(reg(c, PIO_PORT, 4, 1), 0);
	for (off = ring_end; off < getpagesize(); off++)
		TEST_ASSERT(((uint8_t *)c->ring)[off] == 0, "ring tail byte %zu not zero", off);
	scribble_ctx = c;
	WRITE_ONCE(stop_scribbling, false);
	pthread_create(&thread, NULL, scribble_indices, NULL);
	for (i = 0; i < SCRIBBLED_WRITES; i++)
		coalesced += i & 1 ? guest_write(c, 1, PIO_PORT, 4, i) : guest_write(c, 0, MMIO_GPA,
										     8, i);
	WRITE_ONCE(stop_scribbling, true);
	pthread_join(thread, NULL);
	for (off = ring_end; off < getpagesize(); off++)
		tail_ok &= ((uint8_t *)c->ring)[off] == 0;
	TEST_ASSERT(tail_ok, "KVM wrote past the ring's last entry");
	/* Half the time the indices are sane, and the ring has room for a write now and then. */
	TEST_ASSERT(coalesced > 0, "no write was coalesced while the indices were scribbled");
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 8, 0), 0);
	TEST_ASSERT_EQ(unreg(c, PIO_PORT, 4, 1), 0);
	set_ring(c->ring, 0, 0);
	printf("scribbled indices: %d writes, %d coalesced, %d exited, ring tail untouched\n",
	       SCRIBBLED_WRITES, coalesced, SCRIBBLED_WRITES - coalesced);
}

/* Unregister removes exactly the zones of the same kind that contain the request. */
static void test_unregister(struct ctx *c)
{
	set_ring(c->ring, 0, 0);
	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 16, 0), 0);
	TEST_ASSERT_EQ(reg(c, PIO_PORT, 4, 1), 0);

	/* 2018's use-after-free: the wrong pio must remove nothing. */
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 16, 1), 0);
	TEST_ASSERT_EQ(unreg(c, PIO_PORT, 4, 0), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 1), "MMIO zone removed by a PIO unregister");
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 2), "PIO zone removed by an MMIO unregister");
	check_entry(c->ring, 1, 1, PIO_PORT, 1, 2);

	/* pio other than 0/1 is -EINVAL for both ioctls. */
	TEST_ASSERT_EQ(reg(c, MMIO_GPA + 64, 8, 2), -EINVAL);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 16, 2), -EINVAL);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 16, UINT32_MAX), -EINVAL);

	/* Larger than the zone, u64-wrapping, and >= 2 GiB (a negative int) remove nothing. */
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 17, 0), 0);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA - 1, 16, 0), 0);
	TEST_ASSERT_EQ(unreg(c, UINT64_MAX - 3, 8, 0), 0);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 1u << 31, 0), 0);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, UINT32_MAX, 0), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 8, 8, 3),
		    "zone removed by a request it does not contain");

	/* A request inside the zone removes the whole zone. */
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA + 2, 2, 0), 0);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 4),
		    "MMIO zone still coalescing after unregister");
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA + 8, 8, 5),
		    "MMIO zone still coalescing after unregister");
	TEST_ASSERT_EQ(unreg(c, PIO_PORT, 1, 1), 0);
	TEST_ASSERT(!guest_write(c, 1, PIO_PORT, 1, 6),
		    "PIO zone still coalescing after unregister");

	/* Unregistering what is not there succeeds. */
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 8, 0), 0);
	set_ring(c->ring, 0, 0);
}

/* A write is coalesced only if one zone holds all of it. */
static void test_straddle(struct ctx *c)
{
	set_ring(c->ring, 0, 0);
	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 4, 0), 0);
	TEST_ASSERT_EQ(reg(c, MMIO_GPA + 4, 4, 0), 0);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 7),
		    "a write straddling two zones was coalesced");
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 4, 4, 8), "a write inside one zone was not");
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA + 2, 4, 9),
		    "a write straddling two zones was coalesced");
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA, 4, 0), 0);
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA + 4, 4, 0), 0);

	TEST_ASSERT_EQ(reg(c, PIO_PORT, 2, 1), 0);
	TEST_ASSERT(!guest_write(c, 1, PIO_PORT + 1, 2, 10),
		    "a PIO write past the zone was coalesced");
	TEST_ASSERT(!guest_write(c, 1, PIO_PORT, 4, 11), "a PIO write past the zone was coalesced");
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 2, 12), "a PIO write inside the zone was not");
	TEST_ASSERT_EQ(unreg(c, PIO_PORT, 2, 1), 0);
	set_ring(c->ring, 0, 0);
}

/* Register accepts what C accepts, and a full bus says -ENOSPC. */
static void test_register_edges(struct ctx *c)
{
	int n, ret;

	set_ring(c->ring, 0, 0);
	TEST_ASSERT_EQ(reg(c, MMIO_GPA + 0x100, 0, 0), 0);	/* size 0 */
	TEST_ASSERT_EQ(reg(c, UINT64_MAX - 15, 32, 0), 0);	/* wraps past 2^64 */
	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 8, 0), 0);		/* duplicates, overlaps */
	TEST_ASSERT_EQ(reg(c, MMIO_GPA, 8, 0), 0);
	TEST_ASSERT_EQ(reg(c, MMIO_GPA + 4, 8, 0), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 13), "write to duplicated zones not coalesced");
	TEST_ASSERT_EQ(c->ring->last, 1);	/* once, not once per zone */
	/* One request inside all three removes all three. */
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA + 4, 4, 0), 0);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA + 4, 4, 14), "overlapping zones left behind");
	TEST_ASSERT_EQ(unreg(c, MMIO_GPA + 0x100, 0, 0), 0);

	/* Fill the PIO bus, which holds the in-kernel PIC's three devices, to its limit. */
	for (n = 0; n <= NR_IOBUS_DEVS; n++) {
		ret = reg(c, 0x4000, 8, 1);
		if (ret)
			break;
	}
	TEST_ASSERT(ret == -ENOSPC, "register %d on a full PIO bus returned %d, wanted -ENOSPC",
		    n, ret);
	TEST_ASSERT(n == NR_IOBUS_DEVS - PIC_PIO_DEVS, "%d zones fit on the PIO bus, not %d", n,
		    NR_IOBUS_DEVS - PIC_PIO_DEVS);
	TEST_ASSERT(guest_write(c, 1, 0x4000, 1, 15),
		    "write to the filled bus's zones not coalesced");
	/* One unregister inside them all removes every one, and the bus takes zones again. */
	TEST_ASSERT_EQ(unreg(c, 0x4002, 2, 1), 0);
	TEST_ASSERT(!guest_write(c, 1, 0x4000, 1, 16), "zones left after unregistering them all");
	TEST_ASSERT_EQ(reg(c, 0x4000, 8, 1), 0);
	TEST_ASSERT_EQ(unreg(c, 0x4000, 8, 1), 0);
	set_ring(c->ring, 0, 0);
	printf("register edges: %d zones filled the PIO bus (-ENOSPC after)\n", n);
}

static struct ctx new_ctx(void)
{
	struct ctx c;

	c.vm = vm_create_with_one_vcpu(&c.vcpu, guest_code);
	c.ring = (void *)c.vcpu->run + kvm_check_cap(KVM_CAP_COALESCED_MMIO) * getpagesize();
	c.max = (getpagesize() - sizeof(struct kvm_coalesced_mmio_ring)) /
		sizeof(struct kvm_coalesced_mmio);
	virt_map(c.vm, MMIO_GPA, MMIO_GPA, 1);
	return c;
}

/* The -c mode: CYCLES VMs made and destroyed with zones, and buffers where there are buffers. */
static void run_cycles(int n)
{
	int entries = kvm_check_cap(KVM_CAP_COALESCED_MMIO2);
	struct kvm_vm *vm;
	int i, fd;

	for (i = 0; i < n; i++) {
		vm = vm_create_barebones();
		TEST_ASSERT_EQ(zone_ioctl(vm, KVM_REGISTER_COALESCED_MMIO, MMIO_GPA, 8, 0), 0);
		TEST_ASSERT_EQ(zone_ioctl(vm, KVM_REGISTER_COALESCED_MMIO, PIO_PORT, 1, 1), 0);
		if (entries > 0) {
			struct kvm_coalesced_mmio_buffer req = { .entries = entries };
			struct kvm_coalesced_mmio_zone2 z = { .addr = MMIO_GPA + 8, .size = 8 };
			struct kvm_coalesced_mmio_ring *ring;

			fd = ioctl(vm->fd, KVM_CREATE_COALESCED_MMIO_BUFFER, &req);
			TEST_ASSERT(fd >= 0, "cycle %d: KVM_CREATE_COALESCED_MMIO_BUFFER: %s", i,
				    strerror(errno));
			ring = mmap(NULL, req.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			TEST_ASSERT(ring != MAP_FAILED, "cycle %d: mmap: %s", i, strerror(errno));
			TEST_ASSERT_EQ(READ_ONCE(ring->last), 0);
			z.buffer_fd = fd;
			TEST_ASSERT_EQ(ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO2, &z), 0);
			munmap(ring, req.mmap_size);
			close(fd);
		}
		kvm_vm_free(vm);
	}
	printf("coalesced_io_edges_test: %d cycles of a VM with zones%s\n", n,
	       entries > 0 ? " and a buffer" : "");
}

int main(int argc, char *argv[])
{
	struct ctx c;
	int i, opt;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	while ((opt = getopt(argc, argv, "c:")) != -1) {
		if (opt != 'c') {
			printf("usage: %s [-c CYCLES]\n", argv[0]);
			return KSFT_FAIL;
		}
		run_cycles(atoi(optarg));
		return 0;
	}

	c = new_ctx();
	test_hostile_indices(&c);
	test_scribbled_indices(&c);
	test_unregister(&c);
	test_straddle(&c);
	test_register_edges(&c);
	kvm_vm_free(c.vm);

	/* VMs destroyed with zones of both kinds still registered: the bus frees them. */
	for (i = 0; i < 8; i++) {
		c = new_ctx();
		TEST_ASSERT_EQ(reg(&c, MMIO_GPA, 8, 0), 0);
		TEST_ASSERT_EQ(reg(&c, PIO_PORT, 1, 1), 0);
		TEST_ASSERT(guest_write(&c, 1, PIO_PORT, 1, i), "PIO write not coalesced");
		kvm_vm_free(c.vm);
	}
	printf("coalesced_io_edges_test: all cases passed\n");
	return 0;
}
