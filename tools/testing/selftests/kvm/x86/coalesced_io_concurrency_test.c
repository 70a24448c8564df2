// SPDX-License-Identifier: GPL-2.0
/*
 * Coalesced MMIO/PIO under concurrency: several vCPUs write to coalesced MMIO and PIO zones at once
 * while a drainer thread consumes the shared ring the way a VMM does, and, in a second phase,
 * while another thread unregisters and re-registers the zones. Every write must reach userspace
 * exactly once, either as a ring entry or as an ordinary exit, in each vCPU's program order, and
 * no entry may be torn (its data must match its address).
 *
 * Ordering rule, as in QEMU: before handling an exit, the VMM drains the ring, so everything a
 * vCPU coalesced before the exiting write is seen before it.
 *
 * A third phase has no drainer: a thread keeps storing hostile values (MAX - 1, MAX, 2^31,
 * 2^32 - 1, random ones) into the ring's first and last while the vCPUs write. Coalesced writes
 * are then lost to a VMM that cannot trust the indices, but each vCPU's exits must still come in
 * order without duplicates, every entry KVM wrote must be whole, and KVM must never write past
 * the ring's last entry.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/sizes.h>

#include <kvm_util.h>
#include <processor.h>

#include "ucall_common.h"

#define NR_VCPUS	4
#define WRITES		4000		/* per vCPU and per kind (MMIO, PIO) */
#define MMIO_GPA	(4ull * SZ_1G)
#define PIO_BASE	0x80		/* vCPU i writes port PIO_BASE + 4 * i */
#define UCALL_PORT	0x1000

static void guest_code(uint64_t id)
{
	uint64_t seq;

	for (seq = 0; seq < WRITES; seq++) {
		WRITE_ONCE(*(uint64_t *)(MMIO_GPA + 8 * id), id << 32 | seq);
		outl(PIO_BASE + 4 * id, id << 24 | seq);
	}
	GUEST_DONE();
}

static struct kvm_vm *vm;
static struct kvm_coalesced_mmio_ring *ring;
static uint32_t ring_max;
static pthread_mutex_t vmm_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_seq[NR_VCPUS][2];	/* [vcpu][pio]: the next write expected */
static uint64_t from_ring, from_exits;
static bool stop_helper, stop_toggler;	/* helper: the drainer or the scribbler */
static bool scribbling;		/* the third phase: coalesced writes are not drained */

/* Checks that a write is one of the guest's, whole; returns its vCPU and sequence number. */
static void decode_write(bool pio, uint64_t addr, uint64_t val, uint32_t len, uint64_t *idp,
			 uint64_t *seqp)
{
	uint64_t id, seq;

	if (pio) {
		TEST_ASSERT(len == 4 && addr >= PIO_BASE && addr < PIO_BASE + 4 * NR_VCPUS &&
			    !((addr - PIO_BASE) % 4),
			    "unexpected PIO write 0x%lx len %u", addr, len);
		id = (addr - PIO_BASE) / 4;
		TEST_ASSERT(val >> 24 == id, "torn PIO entry: port 0x%lx data 0x%lx", addr, val);
		seq = val & 0xffffff;
	} else {
		TEST_ASSERT(len == 8 && addr >= MMIO_GPA && addr < MMIO_GPA + 8 * NR_VCPUS &&
			    !((addr - MMIO_GPA) % 8),
			    "unexpected MMIO write 0x%lx len %u", addr, len);
		id = (addr - MMIO_GPA) / 8;
		TEST_ASSERT(val >> 32 == id, "torn MMIO entry: addr 0x%lx data 0x%lx", addr, val);
		seq = val & 0xffffffff;
	}
	TEST_ASSERT(seq < WRITES, "%s write with sequence number %lu", pio ? "PIO" : "MMIO", seq);
	*idp = id;
	*seqp = seq;
}

/*
 * Accounts for one write seen by the VMM; called with vmm_lock held. While the indices are
 * scribbled over, coalesced writes never reach the VMM: the exits must only keep their order.
 */
static void record(bool pio, uint64_t addr, uint64_t val, uint32_t len)
{
	uint64_t id, seq;

	decode_write(pio, addr, val, len, &id, &seq);
	TEST_ASSERT(seq == next_seq[id][pio] || (scribbling && seq > next_seq[id][pio]),
		    "vCPU %lu %s write %lu arrived when %lu was due (lost, duplicated, reordered)",
		    id, pio ? "PIO" : "MMIO", seq, next_seq[id][pio]);
	next_seq[id][pio] = seq + 1;
}

/* Consumes every published entry, like a VMM; called with vmm_lock held. */
static void drain_ring(void)
{
	uint32_t first = READ_ONCE(ring->first);

	while (first != READ_ONCE(ring->last)) {
		struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[first];
		uint64_t val = 0;

		__sync_synchronize();	/* read the entry only after seeing `last` move */
		memcpy(&val, e->data, e->len <= 8 ? e->len : 8);
		record(e->pio, e->phys_addr, val, e->len);
		from_ring++;
		first = (first + 1) % ring_max;
		__sync_synchronize();	/* done with the entry before handing it back */
		WRITE_ONCE(ring->first, first);
	}
}

static void *drainer(void *arg)
{
	while (!READ_ONCE(stop_helper)) {
		pthread_mutex_lock(&vmm_lock);
		drain_ring();
		pthread_mutex_unlock(&vmm_lock);
		sched_yield();
	}
	return NULL;
}

static unsigned long toggles;	/* unregister/register rounds the toggler completed */
static unsigned long toggles_seen = ULONG_MAX;	/* the fewest any vCPU saw when it finished */

static void *toggler(void *arg)
{
	while (!READ_ONCE(stop_toggler)) {
		kvm_vm_unregister_coalesced_io(vm, MMIO_GPA, 8 * NR_VCPUS, false);
		kvm_vm_unregister_coalesced_io(vm, PIO_BASE, 4 * NR_VCPUS, true);
		usleep(200);
		kvm_vm_register_coalesced_io(vm, MMIO_GPA, 8 * NR_VCPUS, false);
		kvm_vm_register_coalesced_io(vm, PIO_BASE, 4 * NR_VCPUS, true);
		WRITE_ONCE(toggles, toggles + 1);
		usleep(1000);
	}
	return NULL;
}

/* Userspace may store anything into the indices at any moment: keep doing so. */
static void *scribbler(void *arg)
{
	const uint32_t pick[] = { 0, 1, ring_max - 2, ring_max - 1, ring_max, ring_max + 1,
				  1u << 31, UINT32_MAX - 1, UINT32_MAX };
	uint32_t x = 2026;

	while (!READ_ONCE(stop_helper)) {
		x = x * 1103515245 + 12345;
		WRITE_ONCE(ring->last,
			   x & 1 ? pick[(x >> 8) % ARRAY_SIZE(pick)] : (x >> 8) % ring_max);
		WRITE_ONCE(ring->first,
			   x & 2 ? pick[(x >> 16) % ARRAY_SIZE(pick)] : (x >> 16) % ring_max);
	}
	return NULL;
}

/*
 * After the scribbled phase: every entry KVM wrote is one of the guest's writes, whole, and the
 * bytes after the last entry, which no index can reach, are still zero. Returns the entries.
 */
static uint32_t check_scribbled_ring(void)
{
	size_t ring_end = sizeof(*ring) + ring_max * sizeof(struct kvm_coalesced_mmio), off;
	uint32_t i, written = 0;
	uint64_t id, seq;

	for (off = ring_end; off < getpagesize(); off++)
		TEST_ASSERT(((uint8_t *)ring)[off] == 0,
			    "KVM wrote past the ring's last entry, at byte %zu", off);
	for (i = 0; i < ring_max; i++) {
		struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[i];
		uint64_t val = 0;

		if (!e->phys_addr && !e->len)
			continue;	/* never written: the page starts zeroed */
		memcpy(&val, e->data, e->len <= 8 ? e->len : 8);
		decode_write(e->pio, e->phys_addr, val, e->len, &id, &seq);
		written++;
	}
	return written;
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == UCALL_PORT) {
			switch (get_ucall(vcpu, &uc)) {
			case UCALL_DONE:
				pthread_mutex_lock(&vmm_lock);
				if (READ_ONCE(toggles) < toggles_seen)
					toggles_seen = READ_ONCE(toggles);
				pthread_mutex_unlock(&vmm_lock);
				return NULL;
			case UCALL_ABORT:
				REPORT_GUEST_ASSERT(uc);
			default:
				TEST_FAIL("unexpected ucall %lu", uc.cmd);
			}
		}
		pthread_mutex_lock(&vmm_lock);
		if (!scribbling)
			drain_ring();
		if (run->exit_reason == KVM_EXIT_MMIO) {
			uint64_t val = 0;

			TEST_ASSERT(run->mmio.is_write, "MMIO read exit");
			memcpy(&val, run->mmio.data, run->mmio.len <= 8 ? run->mmio.len : 8);
			record(false, run->mmio.phys_addr, val, run->mmio.len);
		} else {
			TEST_ASSERT(run->exit_reason == KVM_EXIT_IO &&
				    run->io.direction == KVM_EXIT_IO_OUT && run->io.count == 1,
				    "unexpected exit %u", run->exit_reason);
			record(true, run->io.port,
			       *(uint32_t *)((void *)run + run->io.data_offset), run->io.size);
		}
		from_exits++;
		pthread_mutex_unlock(&vmm_lock);
	}
}

enum phase { DRAIN, DRAIN_AND_TOGGLE, SCRIBBLE };

static void run_phase(const char *name, enum phase phase)
{
	struct kvm_vcpu *vcpus[NR_VCPUS];
	pthread_t threads[NR_VCPUS], helper_thread, toggle_thread;
	bool toggle = phase == DRAIN_AND_TOGGLE;
	uint32_t entries;
	int i, k;

	vm = vm_create_with_vcpus(NR_VCPUS, guest_code, vcpus);
	virt_map(vm, MMIO_GPA, MMIO_GPA, 1);
	ring = (void *)vcpus[0]->run + kvm_check_cap(KVM_CAP_COALESCED_MMIO) * getpagesize();
	ring_max = (getpagesize() - sizeof(*ring)) / sizeof(struct kvm_coalesced_mmio);
	memset(next_seq, 0, sizeof(next_seq));
	from_ring = 0;
	from_exits = 0;
	WRITE_ONCE(stop_helper, false);
	WRITE_ONCE(stop_toggler, false);
	toggles = 0;
	toggles_seen = ULONG_MAX;
	scribbling = phase == SCRIBBLE;

	kvm_vm_register_coalesced_io(vm, MMIO_GPA, 8 * NR_VCPUS, false);
	kvm_vm_register_coalesced_io(vm, PIO_BASE, 4 * NR_VCPUS, true);
	for (i = 0; i < NR_VCPUS; i++)
		vcpu_args_set(vcpus[i], 1, (uint64_t)i);

	pthread_create(&helper_thread, NULL, scribbling ? scribbler : drainer, NULL);
	if (toggle)
		pthread_create(&toggle_thread, NULL, toggler, NULL);
	for (i = 0; i < NR_VCPUS; i++)
		pthread_create(&threads[i], NULL, vcpu_thread, vcpus[i]);
	for (i = 0; i < NR_VCPUS; i++)
		pthread_join(threads[i], NULL);
	if (toggle) {
		WRITE_ONCE(stop_toggler, true);
		pthread_join(toggle_thread, NULL);
		/* The zones came and went while every vCPU was still writing. */
		TEST_ASSERT(toggles_seen > 0, "%s: no vCPU wrote while zones were re-registered",
			    name);
		printf("%s: zones unregistered and registered again %lu times, ", name, toggles);
		printf("%lu before the first vCPU finished\n", toggles_seen);
	}
	WRITE_ONCE(stop_helper, true);
	pthread_join(helper_thread, NULL);

	if (scribbling) {
		entries = check_scribbled_ring();
		printf("%s: %d vCPUs x %d writes x 2 kinds: %lu exited in order, %lu coalesced, ",
		       name, NR_VCPUS, WRITES, from_exits, 2ul * NR_VCPUS * WRITES - from_exits);
		printf("%u whole entries in the ring, nothing written past it\n", entries);
		TEST_ASSERT(entries > 0, "%s: nothing was coalesced", name);
		TEST_ASSERT(from_exits < 2ul * NR_VCPUS * WRITES, "%s: every write exited", name);
		kvm_vm_free(vm);
		return;
	}
	pthread_mutex_lock(&vmm_lock);
	drain_ring();
	pthread_mutex_unlock(&vmm_lock);

	for (i = 0; i < NR_VCPUS; i++)
		for (k = 0; k < 2; k++)
			TEST_ASSERT(next_seq[i][k] == WRITES,
				    "vCPU %d %s: %lu of %d writes arrived",
				    i, k ? "PIO" : "MMIO", next_seq[i][k], WRITES);
	TEST_ASSERT(from_ring > 0, "%s: nothing was coalesced", name);
	printf("%s: %d vCPUs x %d writes x 2 kinds: %lu from the ring, %lu as exits, in order\n",
	       name, NR_VCPUS, WRITES, from_ring, from_exits);
	kvm_vm_free(vm);
}

int main(int argc, char *argv[])
{
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));

	run_phase("drainer", DRAIN);
	run_phase("drainer + zones re-registered", DRAIN_AND_TOGGLE);
	run_phase("indices scribbled", SCRIBBLE);
	return 0;
}
