// SPDX-License-Identifier: GPL-2.0
/*
 * Coalesced MMIO buffers (KVM_CAP_COALESCED_MMIO2): rings with a file descriptor of their own,
 * of the number of entries asked for, pollable, safe across fork() and against hostile indices.
 *
 * The cases of the 2024 "KVM: Improve MMIO Coalescing API" series' test (initial indices, full
 * with one slot free, a ucall mid-batch, two zones to two rings, re-registration onto another
 * ring, unmap and close unregister), and what its review asked for: poll() waking a blocked
 * thread, fork(), ring sizes, four vCPUs with a draining thread, closing the buffer while vCPUs
 * write, a VM destroyed with buffers open, and every error code; and the ordering rules: a full
 * ring exits with its entries still in it, and zones of two rings never share an address.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#include <linux/sizes.h>

#include <kvm_util.h>
#include <processor.h>

#include "ucall_common.h"

#include "coalesced_io_guest.h"

#define MMIO_GPA	(4ull * SZ_1G)	/* no memslot here: identity-mapped MMIO */
#define PIO_PORT	0x80
#define UCALL_PORT	0x1000	/* x86 ucalls are OUTs to this port */
#define NR_VCPUS	4
#define WRITES		3000	/* per vCPU and per ring in the four-vCPU case */

/* A batch of guest writes, described by the host before each KVM_RUN: val, val + 1, ... */
struct guest_cmd {
	uint64_t addr;
	uint64_t val;
	uint32_t len;
	uint32_t pio;
	uint32_t count;
};

static struct guest_cmd cmd;

static void guest_code(void)
{
	for (;;) {
		struct guest_cmd c = READ_ONCE(cmd);
		uint32_t i;

		/* The count is read each time: the host sets it to 0 to end a batch early. */
		for (i = 0; i < READ_ONCE(cmd.count); i++) {
			if (c.pio)
				guest_out(c.addr, c.val + i, c.len);
			else
				guest_mmio(c.addr, c.val + i, c.len);
		}
		GUEST_SYNC(0);
	}
}

struct buffer {
	int fd;
	struct kvm_coalesced_mmio_ring *ring;
	size_t len;	/* mmap_size */
	uint32_t max;	/* entries */
};

struct ctx {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	struct kvm_coalesced_mmio_ring *vm_ring;
};

static size_t page;
static uint32_t max_entries;	/* KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO2) */
static uint32_t page_entries;	/* what a page holds: 170 with 4 KiB pages, as the VM's ring */

/* KVM_CREATE_COALESCED_MMIO_BUFFER: the fd, or -errno; the request as KVM left it in *req. */
static int try_create(struct kvm_vm *vm, struct kvm_coalesced_mmio_buffer *req)
{
	int fd = ioctl(vm->fd, KVM_CREATE_COALESCED_MMIO_BUFFER, req);

	return fd < 0 ? -errno : fd;
}

/* mmap_size for a ring of `entries`: the header and the entries, in whole pages. */
static size_t ring_bytes(uint32_t entries)
{
	size_t bytes = sizeof(struct kvm_coalesced_mmio_ring) +
		       entries * sizeof(struct kvm_coalesced_mmio);

	return (bytes + page - 1) / page * page;
}

static int create_buffer(struct kvm_vm *vm, uint32_t entries, size_t *mmap_size)
{
	struct kvm_coalesced_mmio_buffer req = { .entries = entries };
	int fd = try_create(vm, &req);

	TEST_ASSERT(fd >= 0, "KVM_CREATE_COALESCED_MMIO_BUFFER(%u): %s", entries, strerror(-fd));
	TEST_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC, "a buffer fd must be close-on-exec");
	TEST_ASSERT(req.mmap_size == ring_bytes(entries), "%u entries: mmap_size %llu, not %zu",
		    entries, req.mmap_size, ring_bytes(entries));
	TEST_ASSERT(req.flags == 0 && req.entries == entries &&
		    !req.reserved[0] && !req.reserved[1], "KVM changed the request's input fields");
	if (mmap_size)
		*mmap_size = req.mmap_size;
	return fd;
}

/* mmap() of a buffer: 0 or -errno; the mapping in *ring. */
static int map_ring(int fd, size_t len, int flags, off_t off, void **ring)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, off);

	*ring = p == MAP_FAILED ? NULL : p;
	return p == MAP_FAILED ? -errno : 0;
}

static struct buffer new_buffer(struct kvm_vm *vm, uint32_t entries)
{
	struct buffer b = { .max = entries };
	void *p;

	b.fd = create_buffer(vm, entries, &b.len);
	TEST_ASSERT_EQ(map_ring(b.fd, b.len, MAP_SHARED, 0, &p), 0);
	b.ring = p;
	/* The series' first case: a new ring starts empty at 0. */
	TEST_ASSERT(b.ring->first == 0 && b.ring->last == 0, "new ring at %u/%u",
		    b.ring->first, b.ring->last);
	return b;
}

static void free_buffer(struct buffer *b)
{
	munmap(b->ring, b->len);
	close(b->fd);
}

static int zone2_flags(struct kvm_vm *vm, unsigned long nr, uint64_t addr, uint32_t size,
		       uint32_t pio, uint32_t fd, uint32_t flags)
{
	struct kvm_coalesced_mmio_zone2 z = { .addr = addr, .size = size, .pio = pio,
					      .buffer_fd = fd, .flags = flags };

	return ioctl(vm->fd, nr, &z) ? -errno : 0;
}

static int zone2(struct kvm_vm *vm, unsigned long nr, uint64_t addr, uint32_t size, uint32_t pio,
		 uint32_t fd)
{
	return zone2_flags(vm, nr, addr, size, pio, fd, 0);
}

static int reg2(struct kvm_vm *vm, uint64_t addr, uint32_t size, uint32_t pio, uint32_t fd)
{
	return zone2(vm, KVM_REGISTER_COALESCED_MMIO2, addr, size, pio, fd);
}

static int unreg2(struct kvm_vm *vm, uint64_t addr, uint32_t size, uint32_t pio, uint32_t fd)
{
	return zone2(vm, KVM_UNREGISTER_COALESCED_MMIO2, addr, size, pio, fd);
}

static int legacy(struct kvm_vm *vm, unsigned long nr, uint64_t addr, uint32_t size, uint32_t pio)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size, .pio = pio };

	return ioctl(vm->fd, nr, &z) ? -errno : 0;
}

static struct ctx new_ctx(void)
{
	struct ctx c;

	c.vm = vm_create_with_one_vcpu(&c.vcpu, guest_code);
	c.vm_ring = (void *)c.vcpu->run + kvm_check_cap(KVM_CAP_COALESCED_MMIO) * page;
	virt_map(c.vm, MMIO_GPA, MMIO_GPA, 1);
	return c;
}

/*
 * Runs a batch of `count` guest writes and returns how many were coalesced: all of them, or
 * those before the first one that exited to userspace (checked to be that very write), after
 * which the batch stops.
 */
static uint32_t guest_writes(struct ctx *c, uint32_t pio, uint64_t addr, uint32_t len,
			     uint64_t val, uint32_t count)
{
	struct kvm_run *run = c->vcpu->run;
	uint32_t done;

	cmd = (struct guest_cmd){ .addr = addr, .val = val, .len = len, .pio = pio,
				  .count = count };
	sync_global_to_guest(c->vm, cmd);
	vcpu_run(c->vcpu);
	if (run->exit_reason == KVM_EXIT_IO && run->io.port == UCALL_PORT) {
		TEST_ASSERT_EQ(get_ucall(c->vcpu, NULL), UCALL_SYNC);
		return count;
	}
	if (pio)
		TEST_ASSERT(run->exit_reason == KVM_EXIT_IO && run->io.port == addr &&
			    run->io.size == len, "wanted an OUT to 0x%lx, got exit %u", addr,
			    run->exit_reason);
	else
		TEST_ASSERT(run->exit_reason == KVM_EXIT_MMIO && run->mmio.phys_addr == addr &&
			    run->mmio.is_write && run->mmio.len == len,
			    "wanted an MMIO write to 0x%lx, got exit %u", addr, run->exit_reason);
	/* Which write of the batch exited: its data says. */
	done = (pio ? *(uint32_t *)((uint8_t *)run + run->io.data_offset) :
		      *(uint32_t *)run->mmio.data) - (uint32_t)val;
	/* Finish the batch without coalescing: stop the guest at its next write. */
	cmd.count = 0;
	sync_global_to_guest(c->vm, cmd);
	for (;;) {
		vcpu_run(c->vcpu);
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == UCALL_PORT)
			break;
	}
	TEST_ASSERT_EQ(get_ucall(c->vcpu, NULL), UCALL_SYNC);
	return done;
}

static bool guest_write(struct ctx *c, uint32_t pio, uint64_t addr, uint32_t len, uint64_t val)
{
	return guest_writes(c, pio, addr, len, val, 1) == 1;
}

/* Every error code, and the mappings a buffer refuses. */
static void test_errors(struct ctx *c)
{
	const uint32_t bad_entries[] = { 0, 1, max_entries + 1, UINT32_MAX };
	struct ctx other = new_ctx();
	struct kvm_coalesced_mmio_buffer req;
	struct buffer b, theirs;
	int fd, efd, ret, n;
	uint32_t i;
	void *p;

	/* Creation: the entries 2 to the maximum, flags and reserved 0, a readable request. */
	for (i = 0; i < ARRAY_SIZE(bad_entries); i++) {
		req = (struct kvm_coalesced_mmio_buffer){ .entries = bad_entries[i] };
		TEST_ASSERT_EQ(try_create(c->vm, &req), -EINVAL);
		TEST_ASSERT_EQ(req.mmap_size, 0);
	}
	req = (struct kvm_coalesced_mmio_buffer){ .entries = 2, .flags = 1 };
	TEST_ASSERT_EQ(try_create(c->vm, &req), -EINVAL);
	req = (struct kvm_coalesced_mmio_buffer){ .entries = 2, .flags = 1u << 31 };
	TEST_ASSERT_EQ(try_create(c->vm, &req), -EINVAL);
	req = (struct kvm_coalesced_mmio_buffer){ .entries = 2, .reserved = { 1, 0 } };
	TEST_ASSERT_EQ(try_create(c->vm, &req), -EINVAL);
	req = (struct kvm_coalesced_mmio_buffer){ .entries = 2, .reserved = { 0, 1ull << 63 } };
	TEST_ASSERT_EQ(try_create(c->vm, &req), -EINVAL);
	TEST_ASSERT_EQ(try_create(c->vm, NULL), -EFAULT);
	/* A valid request that KVM can read but not write back: no descriptor is left behind. */
	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(p != MAP_FAILED, "mmap");
	*(struct kvm_coalesced_mmio_buffer *)p = (struct kvm_coalesced_mmio_buffer){ .entries = 2 };
	TEST_ASSERT_EQ(mprotect(p, page, PROT_READ), 0);
	/* The lowest free descriptor, which a new one would take. */
	fd = open("/dev/null", O_RDONLY);
	TEST_ASSERT(fd >= 0, "open /dev/null: %s", strerror(errno));
	close(fd);
	TEST_ASSERT_EQ(try_create(c->vm, p), -EFAULT);
	TEST_ASSERT_EQ(((struct kvm_coalesced_mmio_buffer *)p)->mmap_size, 0);
	munmap(p, page);
	TEST_ASSERT_EQ(open("/dev/null", O_RDONLY), fd);
	close(fd);

	/* Mappings: shared, at offset 0, mmap_size long; a zone needs none of them. */
	fd = create_buffer(c->vm, 3 * page_entries, NULL);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, fd), 0);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, fd), 0);
	TEST_ASSERT_EQ(map_ring(fd, 4 * page, MAP_SHARED, 0, &p), -EINVAL);
	TEST_ASSERT_EQ(map_ring(fd, 2 * page, MAP_SHARED, 0, &p), -EINVAL);
	TEST_ASSERT_EQ(map_ring(fd, page, MAP_SHARED, 0, &p), -EINVAL);
	TEST_ASSERT_EQ(map_ring(fd, 3 * page, MAP_SHARED, page, &p), -EINVAL);
	TEST_ASSERT_EQ(map_ring(fd, 3 * page, MAP_PRIVATE, 0, &p), -EINVAL);
	TEST_ASSERT_EQ(map_ring(fd, 0, MAP_SHARED, 0, &p), -EINVAL);
	/* mmap() rounds a length up to whole pages before KVM sees it. */
	TEST_ASSERT_EQ(map_ring(fd, 3 * page - 1, MAP_SHARED, 0, &p), 0);
	munmap(p, 3 * page);
	close(fd);

	b = new_buffer(c->vm, page_entries);
	TEST_ASSERT_EQ(map_ring(b.fd, b.len, MAP_SHARED, 0, &p), 0);
	TEST_ASSERT(p != b.ring, "a second mapping at the same address");
	munmap(p, b.len);

	TEST_ASSERT_EQ(zone2_flags(c->vm, KVM_REGISTER_COALESCED_MMIO2, MMIO_GPA, 8, 0, b.fd, 1),
		       -EINVAL);
	TEST_ASSERT_EQ(zone2_flags(c->vm, KVM_REGISTER_COALESCED_MMIO2, MMIO_GPA, 8, 0, b.fd,
				   1u << 31), -EINVAL);
	TEST_ASSERT_EQ(zone2_flags(c->vm, KVM_UNREGISTER_COALESCED_MMIO2, MMIO_GPA, 8, 0, b.fd, 1),
		       -EINVAL);
	/* Flags are checked before the descriptor. */
	TEST_ASSERT_EQ(zone2_flags(c->vm, KVM_REGISTER_COALESCED_MMIO2, MMIO_GPA, 8, 0, UINT32_MAX,
				   1), -EINVAL);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 2, b.fd), -EINVAL);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, UINT32_MAX, b.fd), -EINVAL);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 2, b.fd), -EINVAL);
	/* Bad descriptors: EBADF; files of other kinds: EINVAL. */
	efd = eventfd(0, 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, UINT32_MAX), -EBADF);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, 100000), -EBADF);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, UINT32_MAX), -EBADF);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, efd), -EINVAL);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, c->vm->fd), -EINVAL);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, c->vcpu->fd), -EINVAL);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, efd), -EINVAL);
	close(efd);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, efd), -EBADF);
	/* Another VM's buffer. */
	theirs = new_buffer(other.vm, page_entries);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, theirs.fd), -EINVAL);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, theirs.fd), -EINVAL);
	free_buffer(&theirs);
	kvm_vm_free(other.vm);
	/* Nothing was registered by any of the above. */
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 1), "a refused zone coalesces");

	/* A full bus: ENOSPC, as for the legacy ioctl; closing the buffer frees the bus. */
	for (n = 0; n <= 1000; n++) {
		ret = reg2(c->vm, 0x4000, 8, 1, b.fd);
		if (ret)
			break;
	}
	TEST_ASSERT(ret == -ENOSPC && n > 0, "register %d on a full bus: %d", n, ret);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_REGISTER_COALESCED_MMIO, 0x5000, 1, 1), -ENOSPC);
	free_buffer(&b);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_REGISTER_COALESCED_MMIO, 0x5000, 1, 1), 0);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_UNREGISTER_COALESCED_MMIO, 0x5000, 1, 1), 0);
	printf("errors: EINVAL, EFAULT, EBADF, ENOSPC after %d zones; closing freed the bus\n", n);
}

/*
 * Rings of 2, a page's worth, one more and the most entries fill up to one free slot, whatever
 * the page size; the write that finds the ring full exits with every earlier write still in the
 * ring, in order (so a VMM drains the ring before it handles the exit).
 */
static void test_sizes(struct ctx *c)
{
	const uint32_t sizes[] = { 2, page_entries, page_entries + 1, max_entries };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		struct buffer b = new_buffer(c->vm, sizes[i]);
		uint32_t got, slot;

		TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, b.fd), 0);
		got = guest_writes(c, 0, MMIO_GPA, 8, 0x1000, b.max);
		TEST_ASSERT(got == b.max - 1, "%u-entry ring took %u writes", b.max, got);
		TEST_ASSERT(b.ring->first == 0 && b.ring->last == b.max - 1, "indices %u/%u",
			    b.ring->first, b.ring->last);
		for (slot = 0; slot < b.max - 1; slot += 97)
			check_entry(b.ring, slot, 0, MMIO_GPA, 8, 0x1000 + slot);
		check_entry(b.ring, b.max - 2, 0, MMIO_GPA, 8, 0x1000 + b.max - 2);
		/* The legacy ring saw none of it. */
		TEST_ASSERT(c->vm_ring->last == 0, "a buffer's write reached the VM's ring");
		/* Consume one: room for exactly one more. */
		WRITE_ONCE(b.ring->first, 1);
		TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 7), "no room after consuming one");
		TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 8), "room for two after consuming one");
		free_buffer(&b);
		TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 9), "zone outlived its buffer");
		printf("ring of %u entries in %zu bytes: %u coalesced before the exit\n", b.max,
		       b.len, got);
	}
}

/*
 * Zones of different rings never share an address on a bus, so a write goes to the ring its zone
 * names or exits, even when that ring is full: EEXIST, between buffers and between a buffer and
 * the VM's ring. Zones of one ring may overlap, as KVM_REGISTER_COALESCED_MMIO always allowed.
 */
static void test_overlap(struct ctx *c)
{
	struct buffer a = new_buffer(c->vm, 2), b = new_buffer(c->vm, page_entries);

	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 16, 0, a.fd), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA + 8, 4, 0, b.fd), -EEXIST);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA - 8, 9, 0, b.fd), -EEXIST);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_REGISTER_COALESCED_MMIO, MMIO_GPA + 15, 1, 0), -EEXIST);
	/* The same ring, another bus, or next to the zone: allowed. */
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA + 8, 4, 0, a.fd), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 16, 1, b.fd), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA + 16, 8, 0, b.fd), 0);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_REGISTER_COALESCED_MMIO, MMIO_GPA - 8, 8, 0), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA - 4, 4, 0, b.fd), -EEXIST);
	/* Ring a is full after one write: the next one exits instead of reaching ring b. */
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 8, 4, 1), "write not coalesced into a");
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA + 8, 4, 2), "write coalesced into a full ring");
	TEST_ASSERT(a.ring->last == 1 && b.ring->last == 0 && c->vm_ring->last == 0,
		    "entries went to the wrong rings: %u %u %u", a.ring->last, b.ring->last,
		    c->vm_ring->last);
	/*
	 * Unregistered, the zones no longer stand in the way. Unregistering removes the zones that
	 * contain the requested range: the 16-byte zone first, then the 4-byte one it contained.
	 */
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 16, 0, a.fd), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA + 8, 4, 0, b.fd), -EEXIST);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA + 8, 4, 0, a.fd), 0);
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA + 8, 4, 0, b.fd), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 8, 4, 3), "write not coalesced into b");
	check_entry(b.ring, 0, 0, MMIO_GPA + 8, 4, 3);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA - 8, 8, 0), 0);
	free_buffer(&a);
	free_buffer(&b);
	printf("overlap: EEXIST between rings; a full ring's zone exits, it never spills over\n");
}

/* The series' cases: batches across ucalls, two rings, re-registration, unmap and close. */
static void test_series_cases(struct ctx *c)
{
	struct buffer a = new_buffer(c->vm, page_entries), b = new_buffer(c->vm, page_entries);
	uint32_t i;

	/* A ucall mid-batch leaves the ring as it is: 10 writes, an exit, 10 more. */
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, a.fd), 0);
	TEST_ASSERT_EQ(guest_writes(c, 0, MMIO_GPA, 8, 100, 10), 10);
	TEST_ASSERT_EQ(a.ring->last, 10);
	TEST_ASSERT_EQ(guest_writes(c, 0, MMIO_GPA, 8, 110, 10), 10);
	TEST_ASSERT_EQ(a.ring->last, 20);
	for (i = 0; i < 20; i++)
		check_entry(a.ring, i, 0, MMIO_GPA, 8, 100 + i);

	/* Two zones, two rings; the VM's ring beside them with a zone of its own. */
	TEST_ASSERT_EQ(reg2(c->vm, PIO_PORT, 4, 1, b.fd), 0);
	TEST_ASSERT_EQ(legacy(c->vm, KVM_REGISTER_COALESCED_MMIO, MMIO_GPA + 8, 8, 0), 0);
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 4, 0xabcd), "PIO zone of ring b");
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 8, 8, 0xef), "zone of the VM's ring");
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 4, 0x1234), "MMIO zone of ring a");
	TEST_ASSERT(a.ring->last == 21 && b.ring->last == 1 && c->vm_ring->last == 1,
		    "entries went to the wrong rings: %u %u %u", a.ring->last, b.ring->last,
		    c->vm_ring->last);
	check_entry(b.ring, 0, 1, PIO_PORT, 4, 0xabcd);
	check_entry(c->vm_ring, 0, 0, MMIO_GPA + 8, 8, 0xef);
	check_entry(a.ring, 20, 0, MMIO_GPA, 4, 0x1234);

	/* Each unregister only reaches its own ring's zones. */
	TEST_ASSERT_EQ(legacy(c->vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA, 8, 0), 0);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA + 8, 8, 0, a.fd), 0);
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, b.fd), 0);
	TEST_ASSERT_EQ(unreg2(c->vm, PIO_PORT, 4, 0, b.fd), 0);	/* wrong bus */
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 1), "zone of a removed by another ring");
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA + 8, 8, 2), "VM ring's zone removed by a");
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 4, 3), "zone of b removed by the wrong bus");
	TEST_ASSERT_EQ(legacy(c->vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA + 8, 8, 0), 0);

	/* Re-registered onto the other ring, the zone writes there. */
	TEST_ASSERT_EQ(unreg2(c->vm, MMIO_GPA, 8, 0, a.fd), 0);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 4), "unregistered zone still coalesces");
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, b.fd), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 5), "re-registered zone does not coalesce");
	check_entry(b.ring, b.ring->last - 1, 0, MMIO_GPA, 8, 5);
	TEST_ASSERT_EQ(a.ring->last, 22);

	/* Closing alone keeps the zone (the mapping holds the file); unmapping ends it. */
	close(b.fd);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 6), "closed but mapped buffer stopped");
	check_entry(b.ring, b.ring->last - 1, 0, MMIO_GPA, 8, 6);
	munmap(b.ring, b.len);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 7), "unmapped and closed buffer coalesces");
	TEST_ASSERT(!guest_write(c, 1, PIO_PORT, 4, 8), "unmapped and closed buffer coalesces");
	/* And the other way round: unmapping alone keeps it, closing ends it. */
	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, a.fd), 0);
	munmap(a.ring, a.len);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 9), "unmapped but open buffer stopped");
	close(a.fd);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 10), "closed buffer coalesces");
}

/* CVE-2019-14821 for buffers: a hostile `last` is never an index, `first` only compared. */
static void test_hostile_indices(struct ctx *c)
{
	struct buffer b = new_buffer(c->vm, page_entries);
	const uint32_t bad[] = { b.max, b.max + 1, 1u << 31, UINT32_MAX };
	size_t end = sizeof(*b.ring) + b.max * sizeof(struct kvm_coalesced_mmio), off;
	static uint8_t before[SZ_4K];
	uint32_t i;

	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, b.fd), 0);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		set_ring(b.ring, 0, bad[i]);
		memcpy(before, b.ring, page);
		TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, i), "coalesced with last = %u", bad[i]);
		TEST_ASSERT(!memcmp(before, b.ring, page), "KVM wrote with last = %u", bad[i]);
		set_ring(b.ring, bad[i], 0);
		TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, i), "refused with first = %u", bad[i]);
		check_entry(b.ring, 0, 0, MMIO_GPA, 8, i);
	}
	set_ring(b.ring, 5, b.max - 1);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 42), "last slot refused");
	TEST_ASSERT_EQ(b.ring->last, 0);
	for (off = end; off < page; off++)
		TEST_ASSERT(((uint8_t *)b.ring)[off] == 0, "byte %zu past the ring written", off);
	free_buffer(&b);
}

struct poller {
	int fd;
	short revents;
	int ret;
	struct timespec woke;
};

static void *poll_thread(void *arg)
{
	struct poller *p = arg;
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN | POLLRDNORM };

	p->ret = poll(&pfd, 1, 20000);
	clock_gettime(CLOCK_MONOTONIC, &p->woke);
	p->revents = pfd.revents;
	return NULL;
}

static double ms_between(struct timespec a, struct timespec b)
{
	return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

/* A thread blocks in poll() on the empty ring `b`; a write of `val` must wake it. */
static void blocked_poll_wakes(struct ctx *c, struct buffer *b, uint64_t val)
{
	struct poller p = { .fd = b->fd };
	struct timespec wrote;
	pthread_t thread;

	pthread_create(&thread, NULL, poll_thread, &p);
	/* Give the thread time to block; a write before it does would still be reported. */
	usleep(200 * 1000);
	clock_gettime(CLOCK_MONOTONIC, &wrote);
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, val), "write not coalesced");
	pthread_join(thread, NULL);
	TEST_ASSERT(p.ret == 1 && p.revents == (POLLIN | POLLRDNORM),
		    "poll returned %d, revents 0x%x", p.ret, p.revents);
	/* Woken by the write, not found ready when its 20 s ran out. */
	TEST_ASSERT(ms_between(wrote, p.woke) < 10000, "poll woke %.0f ms after the write",
		    ms_between(wrote, p.woke));
	printf("poll: the blocked thread woke %.3f ms after the write began\n",
	       ms_between(wrote, p.woke));
}

struct epoller {
	int epfd;
	int ret;
	uint32_t events;
};

static void *epoll_thread(void *arg)
{
	struct epoller *e = arg;
	struct epoll_event ev;

	e->ret = epoll_wait(e->epfd, &ev, 1, 20000);
	e->events = e->ret > 0 ? ev.events : 0;
	return NULL;
}

/*
 * Edge-triggered epoll: the waiter gets an event, drains the ring and sleeps in epoll_wait()
 * without KVM's poll() being called again; the next write must wake it, every time, including
 * after writes that found entries waiting.
 */
static void test_epoll_edge(struct ctx *c, struct buffer *b)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	struct epoller e = {};
	pthread_t thread;
	uint32_t last;
	int round;

	e.epfd = epoll_create1(EPOLL_CLOEXEC);
	TEST_ASSERT(e.epfd >= 0, "epoll_create1: %s", strerror(errno));
	TEST_ASSERT_EQ(epoll_ctl(e.epfd, EPOLL_CTL_ADD, b->fd, &ev), 0);
	for (round = 0; round < 3; round++) {
		TEST_ASSERT_EQ(pthread_create(&thread, NULL, epoll_thread, &e), 0);
		usleep(200 * 1000);
		TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x60 + round), "write not coalesced");
		/* A second write into a ring with an entry: no event needed for it. */
		TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x70 + round), "write not coalesced");
		pthread_join(thread, NULL);
		TEST_ASSERT(e.ret == 1 && (e.events & EPOLLIN),
			    "round %d: epoll_wait %d, events 0x%x", round, e.ret, e.events);
		WRITE_ONCE(b->ring->first, b->ring->last);
		/* Whatever the second write queued, the ring is empty now: no event is given. */
		TEST_ASSERT_EQ(epoll_wait(e.epfd, &ev, 1, 0), 0);
	}
	/*
	 * A write made after the last event, into a ring that still holds entries, is reported
	 * too: a waiter that took one event and consumed only what it saw then would otherwise
	 * sleep with the second write unseen (waking only on a write into an empty ring lost it).
	 */
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x80), "write not coalesced");
	TEST_ASSERT_EQ(epoll_wait(e.epfd, &ev, 1, 0), 1);
	last = READ_ONCE(b->ring->last);
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x81), "write not coalesced");
	WRITE_ONCE(b->ring->first, last);
	TEST_ASSERT_EQ(epoll_wait(e.epfd, &ev, 1, 0), 1);
	WRITE_ONCE(b->ring->first, b->ring->last);
	close(e.epfd);
	printf("epoll, edge-triggered: woken in each of %d rounds after draining\n", round);
}

/*
 * A thread blocked in poll() wakes on the next write, every time; a ring with entries is
 * readable at once, an empty one is not. (KVM wakes pollers on the first write after a poll().)
 */
static void test_poll(struct ctx *c)
{
	struct buffer b = new_buffer(c->vm, page_entries);
	struct pollfd pfd = { .fd = b.fd, .events = POLLIN };
	int unmapped = create_buffer(c->vm, 2, NULL);

	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 0);
	pfd.fd = unmapped;
	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 0);
	close(unmapped);
	pfd.fd = b.fd;
	TEST_ASSERT_EQ(reg2(c->vm, PIO_PORT, 1, 1, b.fd), 0);
	blocked_poll_wakes(c, &b, 0x5a);
	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 1);
	/* Another write into a ring that has entries: still readable. */
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x5b), "write not coalesced");
	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 1);
	WRITE_ONCE(b.ring->first, b.ring->last);
	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 0);
	/* Drained by userspace alone: the next write into the empty ring wakes a poller again. */
	blocked_poll_wakes(c, &b, 0x5c);
	check_entry(b.ring, 2, 1, PIO_PORT, 1, 0x5c);
	WRITE_ONCE(b.ring->first, b.ring->last);
	/* A write while nobody waits: a poll then finds it. */
	TEST_ASSERT(guest_write(c, 1, PIO_PORT, 1, 0x5d), "write not coalesced");
	TEST_ASSERT_EQ(poll(&pfd, 1, 0), 1);
	WRITE_ONCE(b.ring->first, b.ring->last);
	blocked_poll_wakes(c, &b, 0x5e);
	WRITE_ONCE(b.ring->first, b.ring->last);
	test_epoll_edge(c, &b);
	free_buffer(&b);
}

/* Is any of [p, p + len) mapped in this process? */
static bool mapped(void *p, size_t len)
{
	unsigned char vec[64];

	TEST_ASSERT(len <= sizeof(vec) * page, "mincore() of %zu bytes", len);

	return mincore(p, len, vec) == 0 || errno != ENOMEM;
}

/*
 * fork(): the child gets no mapping of the parent's ring, and once the parent has closed and
 * unmapped, still reaches nothing of it but through the descriptor it inherited, which keeps
 * the pages alive. The parent's ring keeps working meanwhile.
 */
static void test_fork(struct ctx *c)
{
	struct buffer b = new_buffer(c->vm, 2 * page_entries);
	int to_child[2], to_parent[2], status;
	char x = 0;
	pid_t pid;

	TEST_ASSERT_EQ(reg2(c->vm, MMIO_GPA, 8, 0, b.fd), 0);
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x71), "write not coalesced");
	TEST_ASSERT(!pipe(to_child) && !pipe(to_parent), "pipe");
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork");
	if (!pid) {
		struct kvm_coalesced_mmio_ring *again;
		void *p;

		/* No mapping was inherited, so nothing to read, write or leak. */
		TEST_ASSERT(!mapped(b.ring, b.len), "the child inherited the ring's mapping");
		TEST_ASSERT(write(to_parent[1], &x, 1) == 1 && read(to_child[0], &x, 1) == 1,
			    "pipe");
		/* The parent has closed and unmapped; the inherited fd maps the same ring. */
		TEST_ASSERT(!mapped(b.ring, b.len), "the parent's ring appeared in the child");
		TEST_ASSERT_EQ(map_ring(b.fd, b.len, MAP_SHARED, 0, &p), 0);
		again = p;
		TEST_ASSERT(again->last == 3, "child sees last = %u", again->last);
		check_entry(again, 2, 0, MMIO_GPA, 8, 0x73);
		munmap(p, b.len);
		close(b.fd);
		_exit(0);
	}
	/* Only the child's ends stay open, so that a child that dies ends our reads. */
	close(to_parent[1]);
	close(to_child[0]);
	TEST_ASSERT(read(to_parent[0], &x, 1) == 1, "the child failed before it reached the pipe");
	/* The parent's ring is unharmed by the fork. */
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x72), "write after fork not coalesced");
	check_entry(b.ring, 0, 0, MMIO_GPA, 8, 0x71);
	check_entry(b.ring, 1, 0, MMIO_GPA, 8, 0x72);
	free_buffer(&b);
	/* The child still holds the file: the zone stays until it lets go. */
	TEST_ASSERT(guest_write(c, 0, MMIO_GPA, 8, 0x73), "zone gone while the child holds it");
	TEST_ASSERT(write(to_child[1], &x, 1) == 1, "pipe");
	TEST_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 0, "child failed: status 0x%x", status);
	TEST_ASSERT(!guest_write(c, 0, MMIO_GPA, 8, 0x74), "zone outlived every holder");
	printf("fork: no mapping inherited; the child mapped the inherited fd and saw 3 entries\n");
	close(to_child[1]);
	close(to_parent[0]);
}

/* Four vCPUs, per-vCPU buffers and one shared buffer, a thread draining them all. */
struct stream {
	pthread_mutex_t lock;	/* one consumer at a time: the drainer or an exiting vCPU */
	struct buffer b;
};

static struct stream streams[NR_VCPUS + 1];	/* [NR_VCPUS] is the shared one */
static uint32_t next_own[NR_VCPUS], next_shared[NR_VCPUS];
static bool stop_draining;

static void guest_four(uint64_t id)
{
	uint32_t i;

	for (i = 0; i < WRITES; i++) {
		guest_mmio(MMIO_GPA + 8 * id, i, 4);
		guest_out(PIO_PORT, id << 24 | i, 4);
	}
	GUEST_DONE();
}

/* Takes one write, from the ring or from an exit: it must be the next of its vCPU. */
static void consume(int stream, uint64_t addr, uint32_t val)
{
	uint32_t id = stream < NR_VCPUS ? stream : val >> 24, seq = val & 0xffffff;
	uint32_t *next = stream < NR_VCPUS ? &next_own[id] : &next_shared[id];

	TEST_ASSERT(id < NR_VCPUS && seq == *next,
		    "stream %d: write %u of vCPU %u where %u was due", stream, seq, id, *next);
	TEST_ASSERT(addr == (stream < NR_VCPUS ? MMIO_GPA + 8 * id : PIO_PORT),
		    "stream %d: address 0x%lx", stream, addr);
	(*next)++;
}

static uint32_t drain(int s)
{
	struct kvm_coalesced_mmio_ring *r = streams[s].b.ring;
	uint32_t n = 0, first = READ_ONCE(r->first), last = READ_ONCE(r->last);

	__sync_synchronize();	/* pairs with KVM's smp_wmb() before it moved `last` */
	while (first != last) {
		struct kvm_coalesced_mmio *e = &r->coalesced_mmio[first];

		consume(s, e->phys_addr, *(uint32_t *)e->data);
		first = (first + 1) % streams[s].b.max;
		n++;
	}
	__sync_synchronize();
	WRITE_ONCE(r->first, first);
	return n;
}

static uint64_t drained_by_thread, exits_seen;

static void *drainer(void *arg)
{
	struct pollfd pfd[NR_VCPUS + 1];
	int s;

	for (s = 0; s <= NR_VCPUS; s++)
		pfd[s] = (struct pollfd){ .fd = streams[s].b.fd, .events = POLLIN };
	while (!READ_ONCE(stop_draining)) {
		/* Not before a ring has filled, so that the vCPUs' side of the order is tested. */
		if (!__atomic_load_n(&exits_seen, __ATOMIC_RELAXED)) {
			usleep(1000);
			continue;
		}
		if (poll(pfd, NR_VCPUS + 1, 100) <= 0)
			continue;
		for (s = 0; s <= NR_VCPUS; s++) {
			if (!(pfd[s].revents & POLLIN))
				continue;
			pthread_mutex_lock(&streams[s].lock);
			__atomic_add_fetch(&drained_by_thread, drain(s), __ATOMIC_RELAXED);
			pthread_mutex_unlock(&streams[s].lock);
		}
	}
	return NULL;
}

static void *vcpu_four(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	for (;;) {
		int s;

		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == UCALL_PORT) {
			TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_DONE, "guest: %s",
				    uc.buffer);
			return NULL;
		}
		/*
		 * A full ring: what is in it came first, so drain it, then take this write. Any
		 * other exit is a failure of its own (its run->io would hold an old exit's data).
		 */
		TEST_ASSERT(run->exit_reason == KVM_EXIT_MMIO ||
			    (run->exit_reason == KVM_EXIT_IO && run->io.port == PIO_PORT &&
			     run->io.direction == KVM_EXIT_IO_OUT),
			    "vCPU %u: unexpected exit %s", vcpu->id,
			    exit_reason_str(run->exit_reason));
		s = run->exit_reason == KVM_EXIT_MMIO ? vcpu->id : NR_VCPUS;
		pthread_mutex_lock(&streams[s].lock);
		drain(s);
		if (s < NR_VCPUS)
			consume(s, run->mmio.phys_addr, *(uint32_t *)run->mmio.data);
		else
			consume(s, run->io.port,
				*(uint32_t *)((uint8_t *)run + run->io.data_offset));
		pthread_mutex_unlock(&streams[s].lock);
		__atomic_add_fetch(&exits_seen, 1, __ATOMIC_RELAXED);
	}
}

static void test_four_vcpus(void)
{
	struct kvm_vcpu *vcpus[NR_VCPUS];
	pthread_t threads[NR_VCPUS], drain_thread;
	struct kvm_vm *vm;
	int i;

	vm = vm_create_with_vcpus(NR_VCPUS, guest_four, vcpus);
	virt_map(vm, MMIO_GPA, MMIO_GPA, 1);
	for (i = 0; i <= NR_VCPUS; i++) {
		pthread_mutex_init(&streams[i].lock, NULL);
		streams[i].b = new_buffer(vm, i < NR_VCPUS ? page_entries : 2 * page_entries);
		if (i < NR_VCPUS)
			TEST_ASSERT_EQ(reg2(vm, MMIO_GPA + 8 * i, 4, 0, streams[i].b.fd), 0);
		else
			TEST_ASSERT_EQ(reg2(vm, PIO_PORT, 4, 1, streams[i].b.fd), 0);
	}
	for (i = 0; i < NR_VCPUS; i++)
		vcpu_args_set(vcpus[i], 1, (uint64_t)i);
	pthread_create(&drain_thread, NULL, drainer, NULL);
	for (i = 0; i < NR_VCPUS; i++)
		pthread_create(&threads[i], NULL, vcpu_four, vcpus[i]);
	for (i = 0; i < NR_VCPUS; i++)
		pthread_join(threads[i], NULL);
	WRITE_ONCE(stop_draining, true);
	pthread_join(drain_thread, NULL);
	for (i = 0; i <= NR_VCPUS; i++)
		drain(i);
	TEST_ASSERT(drained_by_thread && exits_seen, "drained %lu, exits %lu: a path untested",
		    drained_by_thread, exits_seen);
	for (i = 0; i < NR_VCPUS; i++)
		TEST_ASSERT(next_own[i] == WRITES && next_shared[i] == WRITES,
			    "vCPU %d: %u and %u of %u writes arrived", i, next_own[i],
			    next_shared[i], WRITES);
	printf("four vCPUs: %d writes each to its own and the shared ring, each once, in order\n",
	       2 * WRITES);
	printf("four vCPUs: %lu drained by the polling thread, %lu exits on a full ring\n",
	       drained_by_thread, exits_seen);
	for (i = 0; i <= NR_VCPUS; i++)
		free_buffer(&streams[i].b);
	kvm_vm_free(vm);
}

/* Closing the buffer while vCPUs write: their writes start to exit, nothing else happens. */
static uint32_t closing_writes;

static void guest_closing(uint64_t id)
{
	uint32_t i;

	for (i = 0; i < closing_writes; i++)
		guest_mmio(MMIO_GPA + 8 * id, i, 4);
	GUEST_DONE();
}

static void *vcpu_closing(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct ucall uc;
	uint64_t exits = 0;

	for (;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason == KVM_EXIT_IO && vcpu->run->io.port == UCALL_PORT) {
			TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_DONE, "guest: %s", uc.buffer);
			return (void *)exits;
		}
		TEST_ASSERT(vcpu->run->exit_reason == KVM_EXIT_MMIO, "vCPU %u: unexpected exit %s",
			    vcpu->id, exit_reason_str(vcpu->run->exit_reason));
		exits++;
	}
}

static void test_close_while_writing(void)
{
	struct kvm_vcpu *vcpus[NR_VCPUS];
	pthread_t threads[NR_VCPUS];
	struct kvm_vm *vm;
	struct buffer b;
	uint64_t total = 0;
	void *exits;
	int i;

	/* More than the ring holds: some writes come after the close, whatever the timing. */
	closing_writes = 5000;
	vm = vm_create_with_vcpus(NR_VCPUS, guest_closing, vcpus);
	virt_map(vm, MMIO_GPA, MMIO_GPA, 1);
	sync_global_to_guest(vm, closing_writes);
	b = new_buffer(vm, max_entries);
	TEST_ASSERT_EQ(reg2(vm, MMIO_GPA, 8 * NR_VCPUS, 0, b.fd), 0);
	for (i = 0; i < NR_VCPUS; i++) {
		vcpu_args_set(vcpus[i], 1, (uint64_t)i);
		pthread_create(&threads[i], NULL, vcpu_closing, vcpus[i]);
	}
	/* Keep the ring from filling until writes flow, then let go of it mid-stream. */
	while (READ_ONCE(b.ring->last) < 1000)
		WRITE_ONCE(b.ring->first, READ_ONCE(b.ring->last));
	free_buffer(&b);
	for (i = 0; i < NR_VCPUS; i++) {
		pthread_join(threads[i], &exits);
		total += (uint64_t)exits;
	}
	TEST_ASSERT(total, "no write exited after the buffer was closed");
	printf("close while writing: %lu of %u writes exited after the close\n", total,
	       NR_VCPUS * closing_writes);
	kvm_vm_free(vm);
}

/* A VM destroyed while buffers are open: the buffers keep working memory, then let it go. */
static void test_vm_destroyed(void)
{
	int i;

	for (i = 0; i < 4; i++) {
		struct ctx c = new_ctx();
		struct buffer mapped_open = new_buffer(c.vm, page_entries);
		struct buffer mapped_closed = new_buffer(c.vm, page_entries);
		int never_mapped = create_buffer(c.vm, 2, NULL);

		TEST_ASSERT_EQ(reg2(c.vm, MMIO_GPA, 8, 0, mapped_open.fd), 0);
		TEST_ASSERT_EQ(reg2(c.vm, PIO_PORT, 1, 1, mapped_closed.fd), 0);
		TEST_ASSERT(guest_write(&c, 0, MMIO_GPA, 8, i), "MMIO write not coalesced");
		TEST_ASSERT(guest_write(&c, 1, PIO_PORT, 1, i), "PIO write not coalesced");
		close(mapped_closed.fd);
		kvm_vm_free(c.vm);
		/* The rings are still there to read. */
		check_entry(mapped_open.ring, 0, 0, MMIO_GPA, 8, i);
		check_entry(mapped_closed.ring, 0, 1, PIO_PORT, 1, i);
		if (i & 1) {
			close(never_mapped);
			munmap(mapped_closed.ring, mapped_closed.len);
			free_buffer(&mapped_open);
		} else {
			free_buffer(&mapped_open);
			munmap(mapped_closed.ring, mapped_closed.len);
			close(never_mapped);
		}
	}
}

/*
 * What the test is doing, for the watchdog to name if it hangs. Set before the call to alarm()
 * in start(), which the compiler cannot move it past.
 */
static const char *phase = "setup";

static void watchdog(int sig)
{
	static const char msg[] = "coalesced_io_buffer_test: no progress for 60 s in: ";

	/* Only async-signal-safe calls here. */
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) > 0 &&
	    write(STDERR_FILENO, phase, strlen(phase)) > 0)
		(void)!write(STDERR_FILENO, "\n", 1);
	_exit(KSFT_FAIL);
}

/* Starts a phase: a hang in it ends the test, naming it, after 60 s. */
static void start(const char *what)
{
	phase = what;
	alarm(60);
}

int main(int argc, char *argv[])
{
	struct ctx c;

	page = getpagesize();
	page_entries = (page - sizeof(struct kvm_coalesced_mmio_ring)) /
		       sizeof(struct kvm_coalesced_mmio);
	signal(SIGALRM, watchdog);
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO2));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	/* The largest ring KVM accepts: at least one that a VMM could ever use. */
	max_entries = kvm_check_cap(KVM_CAP_COALESCED_MMIO2);
	TEST_ASSERT(max_entries > page_entries, "KVM_CAP_COALESCED_MMIO2 is %u", max_entries);

	c = new_ctx();
	start("errors");
	test_errors(&c);
	start("ring sizes");
	test_sizes(&c);
	start("overlapping zones");
	test_overlap(&c);
	start("the series' cases");
	test_series_cases(&c);
	start("hostile indices");
	test_hostile_indices(&c);
	start("poll");
	test_poll(&c);
	start("fork");
	test_fork(&c);
	kvm_vm_free(c.vm);
	start("four vCPUs");
	test_four_vcpus();
	start("close while writing");
	test_close_while_writing();
	start("VMs destroyed with buffers open");
	test_vm_destroyed();
	alarm(0);
	printf("coalesced_io_buffer_test: all cases passed\n");
	return 0;
}
