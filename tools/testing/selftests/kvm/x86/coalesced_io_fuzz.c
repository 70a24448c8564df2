// SPDX-License-Identifier: GPL-2.0
/*
 * A seeded, bounded differential fuzzer for coalesced MMIO/PIO.
 *
 * One run is a random sequence of operations on a VM: register and unregister random zones
 * (random address, size and pio, wrapping, huge and invalid ones included), corrupt the ring's
 * first/last indices, drain the ring like a VMM, destroy the VM with its zones and make a new
 * one, and have the guest write random widths to random MMIO addresses and I/O ports. Everything
 * the kernel gives back goes into a trace: each ioctl's return code, each exit to userspace, and
 * after every KVM_RUN the ring indices and a hash of the whole ring page. The same seed gives
 * the same operations, so two kvm.ko builds must give byte-identical traces;
 * scripts/guest/fuzz-compare runs this on the stock C kvm.ko and on the Rust one and compares.
 *
 * On its own the program also checks what any correct kernel must do: every exit is one of the
 * guest's writes, unchanged, in order, and while userspace has not corrupted the ring indices
 * the ring holds exactly the writes that did not exit, in order, untorn.
 *
 *   coalesced_io_fuzz [-s SEED] [-n OPS] [-t TRACE_FILE] [-F]
 *
 * It prints the seed first so that any failure can be replayed, and stops by itself after OPS
 * operations (default 20000) with a summary and the trace's digest. With -F it also fails unless
 * the run covered what it is for, in proportion to OPS (coverage_floors()): a fuzzer whose writes
 * stopped landing in zones, or whose ring never filled, would otherwise compare two trivially
 * identical traces.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/sizes.h>

#include <kvm_util.h>
#include <processor.h>

#include "coalesced_io_guest.h"

#define MMIO_GPA	(4ull * SZ_1G)	/* no memslot here: identity-mapped MMIO */
#define MMIO_PAGES	2
#define MMIO_HOT	256		/* most addresses fall in the window's first bytes */
#define PIO_BASE	0x60		/* clear of the in-kernel PIC (0x20, 0xa0, 0x4d0) */
#define PIO_SPAN	0x40
#define SYNC_PORT	0xf0f0		/* an IN from here ends a batch; never coalesced */
#define BATCH		64
#define MAX_LIVE	128		/* zones the host keeps track of */
#define PHASE_OPS	1000		/* operation weights are redrawn every PHASE_OPS */

/* One guest write, and the batch the guest runs before it stops at SYNC_PORT. */
struct guest_write {
	uint64_t addr;
	uint64_t val;
	uint32_t len;
	uint32_t pio;
};

static struct guest_write batch[BATCH];
static uint32_t batch_len;

/* No ucalls: a PIO zone may cover the ucall port, and an OUT there would be coalesced. */
static void guest_code(void)
{
	uint8_t ignored;
	uint32_t i, n;

	for (;;) {
		n = READ_ONCE(batch_len);
		for (i = 0; i < n && i < BATCH; i++) {
			struct guest_write w = READ_ONCE(batch[i]);

			if (w.pio)
				guest_out(w.addr, w.val, w.len);
			else
				guest_mmio(w.addr, w.val, w.len);
		}
		__asm__ __volatile__("inb %%dx, %%al" : "=a"(ignored) : "d"(SYNC_PORT));
	}
}

/* splitmix64: small, and the same sequence everywhere for a given seed. */
static uint64_t rng_state;

static uint64_t rnd64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t n)
{
	return rnd64() % n;
}

/* The trace, and an FNV-1a digest of it so runs can be compared without the file. */
static FILE *trace_file;
static uint64_t digest = 0xcbf29ce484222325ull;
static uint32_t op_nr;

static void fnv(const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--) {
		digest ^= *b++;
		digest *= 0x100000001b3ull;
	}
}

/* FNV-1a over the ring page in 64-bit words: cheap enough to take after every KVM_RUN. */
static uint64_t ring_hash(struct kvm_coalesced_mmio_ring *ring)
{
	const uint64_t *w = (const uint64_t *)ring;
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	for (i = 0; i < getpagesize() / sizeof(*w); i++) {
		h ^= READ_ONCE(w[i]);
		h *= 0x100000001b3ull;
	}
	return h;
}

/* One trace line: the operation number, the event, and optionally the ring's state after it. */
static void vtrace(struct kvm_coalesced_mmio_ring *ring, const char *fmt, va_list ap)
{
	char line[256];
	int n;

	n = snprintf(line, sizeof(line), "%u ", op_nr);
	n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (ring && n < (int)sizeof(line))
		n += snprintf(line + n, sizeof(line) - n, " | ring %u %u %016" PRIx64,
			      READ_ONCE(ring->first), READ_ONCE(ring->last), ring_hash(ring));
	if (n >= (int)sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	fnv(line, n);
	if (trace_file)
		fwrite(line, 1, n, trace_file);
}

static void __printf(1, 2) trace(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vtrace(NULL, fmt, ap);
	va_end(ap);
}

/* An event that follows a KVM_RUN: the ring indices and contents are part of the result. */
static void __printf(2, 3)
trace_ring(struct kvm_coalesced_mmio_ring *ring, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vtrace(ring, fmt, ap);
	va_end(ap);
}

static struct {
	uint64_t ops, writes, exits, drained, checked, batches, vms;
	uint64_t reg, reg_ok, unreg, bad_zones, corruptions, resets;
	/* Exits of writes inside a registered zone: with the ring full, and otherwise. */
	uint64_t full_exits, zone_exits;
	/* Refusals of each ioctl by errno (anything above 255 is counted at 255). */
	uint64_t reg_refused[256], unreg_refused[256];
} stats;

struct zone {
	uint64_t addr;
	uint32_t size;
	uint32_t pio;
};

struct fuzz {
	uint64_t seed;
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	struct kvm_coalesced_mmio_ring *ring;
	uint32_t max;
	struct zone live[MAX_LIVE];	/* registered zones, as far as the host can tell */
	int nr_live;
	/* Writes that did not exit, oldest first; valid while the ring indices are trusted. */
	struct guest_write expected[BATCH * 4];
	uint32_t nr_expected;
	bool tracked;
};

#define FUZZ_ASSERT(f, cond, fmt, ...) \
	TEST_ASSERT(cond, "seed %" PRIu64 " op %u: " fmt, (f)->seed, op_nr, ##__VA_ARGS__)

static void run_batch(struct fuzz *f);

static void new_vm(struct fuzz *f)
{
	if (f->vm)
		kvm_vm_free(f->vm);	/* with whatever zones it still has */
	f->vm = vm_create_with_one_vcpu(&f->vcpu, guest_code);
	f->ring = (void *)f->vcpu->run + kvm_check_cap(KVM_CAP_COALESCED_MMIO) * getpagesize();
	f->max = (getpagesize() - sizeof(struct kvm_coalesced_mmio_ring)) /
		 sizeof(struct kvm_coalesced_mmio);
	virt_map(f->vm, MMIO_GPA, MMIO_GPA, MMIO_PAGES);
	f->nr_live = 0;
	f->nr_expected = 0;
	f->tracked = true;
	stats.vms++;
	trace("new vm, ring max %u", f->max);
	/* Bring the guest to its first stop at SYNC_PORT. */
	batch_len = 0;
	run_batch(f);
}

static uint64_t write_data(const struct guest_write *w)
{
	return w->len == 8 ? w->val : w->val & ((1ull << (8 * w->len)) - 1);
}

/* coalesced_mmio_in_range(): [addr, addr + len) does not wrap and lies inside the zone. */
static bool range_inside(uint64_t addr, uint64_t len, const struct zone *z)
{
	return addr + len >= addr && addr >= z->addr && addr + len <= z->addr + z->size;
}

/* As a write uses it: the write lies inside a zone of its bus. */
static bool in_live_zone(struct fuzz *f, const struct guest_write *w)
{
	int i;

	for (i = 0; i < f->nr_live; i++)
		if (f->live[i].pio == w->pio && range_inside(w->addr, w->len, &f->live[i]))
			return true;
	return false;
}

/* An exit must be the next write that has not yet been accounted for, unchanged. */
static uint32_t match_exit(struct fuzz *f, uint32_t next, bool pio, uint64_t addr, uint32_t len,
			   uint64_t data)
{
	uint32_t i;

	for (i = next; i < batch_len; i++) {
		struct guest_write *w = &batch[i];

		if (w->pio == pio && w->addr == addr && w->len == len && write_data(w) == data)
			break;
	}
	FUZZ_ASSERT(f, i < batch_len, "%s exit at 0x%" PRIx64 " len %u data 0x%" PRIx64
		    " is none of the guest's remaining writes", pio ? "PIO" : "MMIO", addr, len,
		    data);
	/* The writes skipped over did not exit: KVM coalesced them. */
	for (; next < i; next++)
		if (f->tracked && f->nr_expected < ARRAY_SIZE(f->expected))
			f->expected[f->nr_expected++] = batch[next];
	/* A write to a zone exits when the ring has no room (or KVM refused it otherwise). */
	if (f->tracked && in_live_zone(f, &batch[i])) {
		if (f->nr_expected == f->max - 1)
			stats.full_exits++;
		else
			stats.zone_exits++;
	}
	return i + 1;
}

/* Runs the queued writes and records every exit until the guest stops at SYNC_PORT. */
static void run_batch(struct fuzz *f)
{
	struct kvm_run *run = f->vcpu->run;
	uint32_t next = 0, n;
	uint64_t data;

	sync_global_to_guest(f->vm, batch);
	sync_global_to_guest(f->vm, batch_len);
	stats.batches++;
	for (;;) {
		vcpu_run(f->vcpu);
		data = 0;
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN &&
		    run->io.port == SYNC_PORT) {
			trace_ring(f->ring, "sync");
			break;
		}
		stats.exits++;
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
		    run->io.count == 1 && run->io.size <= 4) {
			memcpy(&data, (uint8_t *)run + run->io.data_offset, run->io.size);
			trace_ring(f->ring, "exit io 0x%x %u 0x%" PRIx64, run->io.port,
				   run->io.size, data);
			next = match_exit(f, next, true, run->io.port, run->io.size, data);
		} else if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write &&
			   run->mmio.len <= 8) {
			memcpy(&data, run->mmio.data, run->mmio.len);
			trace_ring(f->ring, "exit mmio 0x%llx %u 0x%" PRIx64, run->mmio.phys_addr,
				   run->mmio.len, data);
			next = match_exit(f, next, false, run->mmio.phys_addr, run->mmio.len, data);
		} else {
			trace_ring(f->ring, "exit %u", run->exit_reason);
			FUZZ_ASSERT(f, false, "unexpected exit %u (%s)", run->exit_reason,
				    exit_reason_str(run->exit_reason));
		}
	}
	n = batch_len;
	for (; next < n; next++)
		if (f->tracked && f->nr_expected < ARRAY_SIZE(f->expected))
			f->expected[f->nr_expected++] = batch[next];
	batch_len = 0;
}

static void flush(struct fuzz *f)
{
	if (batch_len)
		run_batch(f);
}

/* Guest writes stay in the mapped MMIO pages (each within one page) and the PIO window. */
static bool write_in_window(const struct guest_write *w)
{
	uint64_t page = getpagesize();

	if (w->pio)
		return w->addr >= PIO_BASE && w->addr <= PIO_BASE + PIO_SPAN - w->len;
	return w->addr >= MMIO_GPA && w->addr - MMIO_GPA <= MMIO_PAGES * page - w->len &&
	       (w->addr & (page - 1)) + w->len <= page;
}

static void op_write(struct fuzz *f)
{
	struct guest_write *w = &batch[batch_len++];
	uint64_t page = getpagesize();

	/* Half of the writes aim at (or just past) a zone registered earlier. */
	if (f->nr_live && rnd(2)) {
		const struct zone *z = &f->live[rnd(f->nr_live)];

		w->pio = z->pio;
		w->len = 1u << rnd(w->pio ? 3 : 4);
		w->addr = z->addr + rnd((z->size < 64 ? z->size : 64) + 1);
		if (write_in_window(w))
			goto chosen;
	}
	w->pio = rnd(3) == 0;
	if (w->pio) {
		w->len = 1u << rnd(3);
		w->addr = PIO_BASE + rnd(PIO_SPAN - w->len + 1);
	} else {
		w->len = 1u << rnd(4);
		w->addr = rnd(4) ? rnd(MMIO_HOT) : rnd(page - w->len + 1);
		w->addr += MMIO_GPA + rnd(MMIO_PAGES) * page;
	}
chosen:
	w->val = rnd64();
	stats.writes++;
	if (batch_len == BATCH)
		run_batch(f);
}

static uint64_t pick_addr(uint32_t pio)
{
	uint64_t r = rnd(100);

	if (r < 70)
		return pio ? PIO_BASE + rnd(PIO_SPAN) : MMIO_GPA + rnd(MMIO_HOT);
	if (r < 85)
		return pio ? rnd(0x10000) : MMIO_GPA + rnd(MMIO_PAGES * getpagesize());
	if (r < 95)
		return UINT64_MAX - rnd(4096);	/* zones that wrap past 2^64 */
	return rnd64();
}

static uint32_t pick_size(void)
{
	static const uint32_t sizes[] = { 0, 1, 2, 3, 4, 5, 7, 8, 16, 4096, 1u << 31,
					  (1u << 31) - 1, UINT32_MAX };
	uint64_t r = rnd(100);

	if (r < 60)
		return sizes[rnd(ARRAY_SIZE(sizes))];
	if (r < 90)
		return rnd(64);
	return rnd64();
}

/* pio must be 0 or 1; anything else is -EINVAL for both ioctls. */
static uint32_t pick_pio(void)
{
	static const uint32_t bad[] = { 2, 3, 0x80000000, UINT32_MAX };
	uint64_t r = rnd(100);

	if (r < 45)
		return 0;
	if (r < 92)
		return 1;
	return r < 96 ? bad[rnd(ARRAY_SIZE(bad))] : rnd64();
}

static int zone_ioctl(struct fuzz *f, unsigned long nr, const struct zone *z)
{
	struct kvm_coalesced_mmio_zone zone = { .addr = z->addr, .size = z->size, .pio = z->pio };

	if (z->pio > 1 || z->addr + z->size < z->addr || z->size >= (1u << 31))
		stats.bad_zones++;
	return ioctl(f->vm->fd, nr, &zone) ? -errno : 0;
}

static void count_refusal(uint64_t *refused, int ret)
{
	if (ret)
		refused[-ret < 255 ? -ret : 255]++;
}

/* A random zone: its bus first, then an address on that bus, then a size. */
static struct zone pick_zone(void)
{
	struct zone z;

	z.pio = pick_pio();
	z.addr = pick_addr(z.pio);
	z.size = pick_size();
	return z;
}

static void op_register(struct fuzz *f)
{
	struct zone z = pick_zone();
	int ret;

	ret = zone_ioctl(f, KVM_REGISTER_COALESCED_MMIO, &z);
	trace("reg 0x%" PRIx64 " 0x%x %u = %d", z.addr, z.size, z.pio, ret);
	stats.reg++;
	count_refusal(stats.reg_refused, ret);
	if (!ret) {
		stats.reg_ok++;
		if (f->nr_live < MAX_LIVE)
			f->live[f->nr_live++] = z;
	}
}

/* coalesced_mmio_in_range() as unregister uses it: the request lies inside the zone. */
static bool request_inside(const struct zone *req, const struct zone *z)
{
	int len = req->size;

	return len >= 0 && range_inside(req->addr, len, z);
}

static void op_unregister(struct fuzz *f)
{
	struct zone req;
	uint64_t r = rnd(100);
	int i, ret;

	if (f->nr_live && r < 80) {
		const struct zone *z = &f->live[rnd(f->nr_live)];

		req = *z;
		if (r < 20 && z->size) {		/* a part of it */
			req.size = rnd(z->size);
			req.addr += rnd((uint64_t)z->size - req.size + 1);
		} else if (r < 30) {			/* the other bus */
			req.pio ^= 1;
		} else if (r < 40) {			/* one byte more */
			if (rnd(2))
				req.size++;
			else
				req.addr--;
		}
	} else {
		req = pick_zone();
	}
	ret = zone_ioctl(f, KVM_UNREGISTER_COALESCED_MMIO, &req);
	trace("unreg 0x%" PRIx64 " 0x%x %u = %d", req.addr, req.size, req.pio, ret);
	stats.unreg++;
	count_refusal(stats.unreg_refused, ret);
	for (i = 0; i < f->nr_live; i++) {
		if (req.pio == f->live[i].pio && request_inside(&req, &f->live[i]))
			f->live[i--] = f->live[--f->nr_live];
	}
}

/* Compares the ring with the writes that did not exit, then consumes it as a VMM would. */
static void op_drain(struct fuzz *f)
{
	uint32_t first = READ_ONCE(f->ring->first), last = READ_ONCE(f->ring->last);
	uint32_t n = 0;

	if (first >= f->max || last >= f->max) {
		trace("drain: indices %u %u out of range, nothing read", first, last);
		return;
	}
	for (; first != last; first = (first + 1) % f->max, n++) {
		struct kvm_coalesced_mmio *e = &f->ring->coalesced_mmio[first];
		uint64_t data = 0;

		memcpy(&data, e->data, e->len <= 8 ? e->len : 8);
		trace("entry %u: %u 0x%llx %u 0x%" PRIx64, first, e->pio, e->phys_addr, e->len,
		      data);
		if (f->tracked) {
			struct guest_write *w = &f->expected[n];

			FUZZ_ASSERT(f, n < f->nr_expected,
				    "ring entry %u: more entries than writes", first);
			FUZZ_ASSERT(f, e->pio == w->pio && e->phys_addr == w->addr &&
				    e->len == w->len && data == write_data(w),
				    "ring entry %u is %s 0x%llx len %u data 0x%" PRIx64
				    ", wanted %s 0x%" PRIx64 " len %u data 0x%" PRIx64, first,
				    e->pio ? "PIO" : "MMIO", e->phys_addr, e->len, data,
				    w->pio ? "PIO" : "MMIO", w->addr, w->len, write_data(w));
		}
	}
	FUZZ_ASSERT(f, !f->tracked || n == f->nr_expected,
		    "%u writes did not exit but the ring holds %u", f->nr_expected, n);
	WRITE_ONCE(f->ring->first, last);
	f->nr_expected = 0;
	stats.drained += n;
	if (f->tracked)
		stats.checked += n;
	trace("drained %u", n);
}

static uint32_t pick_index(struct fuzz *f)
{
	const uint32_t bad[] = { 0, 1, f->max - 2, f->max - 1, f->max, f->max + 1, 1u << 31,
				 UINT32_MAX };
	uint64_t r = rnd(100);

	if (r < 60)
		return bad[rnd(ARRAY_SIZE(bad))];
	return r < 90 ? rnd(f->max) : rnd64();
}

/* Userspace owns the ring page and may write anything to it. */
static void op_corrupt(struct fuzz *f)
{
	uint64_t r = rnd(3);

	if (r != 1)
		WRITE_ONCE(f->ring->first, pick_index(f));
	if (r != 0)
		WRITE_ONCE(f->ring->last, pick_index(f));
	f->tracked = false;
	stats.corruptions++;
	trace("corrupt: ring %u %u", f->ring->first, f->ring->last);
}

/* Back to an empty ring, anywhere in it, so that wrapping is exercised too. */
static void op_reset(struct fuzz *f)
{
	uint32_t at = rnd(f->max);

	WRITE_ONCE(f->ring->first, at);
	WRITE_ONCE(f->ring->last, at);
	f->tracked = true;
	f->nr_expected = 0;
	stats.resets++;
	trace("reset: ring %u %u", at, at);
}

enum { OP_WRITE, OP_REGISTER, OP_UNREGISTER, OP_DRAIN, OP_CORRUPT, OP_RESET, OP_NEW_VM, NR_OPS };

static const uint32_t base_weight[NR_OPS] = {
	[OP_WRITE] = 500, [OP_REGISTER] = 120, [OP_UNREGISTER] = 100, [OP_DRAIN] = 120,
	[OP_CORRUPT] = 15, [OP_RESET] = 60, [OP_NEW_VM] = 1,
};

static int pick_op(const uint32_t *weight)
{
	uint32_t total = 0, r;
	int i;

	for (i = 0; i < NR_OPS; i++)
		total += weight[i];
	r = rnd(total);
	for (i = 0; r >= weight[i]; i++)
		r -= weight[i];
	return i;
}

/*
 * What a run of OPS operations must cover (-F): a quarter of what the seed make check uses
 * (20261125) gives per 100000 operations, each at least 1. Other seeds may fall short of the
 * rarest, a full ring while the indices are trusted (a phase that neither drains, resets nor
 * corrupts the ring: about 1 in 64), so `make fuzz` does not ask for them.
 */
static void coverage_floors(uint64_t ops)
{
	const struct {
		const char *what;
		uint64_t got, per_100k;
	} floors[] = {
		{ "writes coalesced", stats.writes - stats.exits, 4500 },
		{ "ring entries checked against the writes", stats.checked, 1800 },
		{ "exits with the ring full", stats.full_exits, 25 },
		{ "registers accepted", stats.reg_ok, 2200 },
		{ "registers refused with EINVAL", stats.reg_refused[EINVAL], 100 },
		{ "unregisters refused with EINVAL", stats.unreg_refused[EINVAL], 50 },
		{ "unregisters", stats.unreg, 2200 },
		{ "index corruptions", stats.corruptions, 300 },
		{ "VMs", stats.vms, 20 },
	};
	uint64_t floor;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(floors); i++) {
		floor = floors[i].per_100k * ops / 100000;
		if (!floor)
			floor = 1;
		TEST_ASSERT(floors[i].got >= floor,
			    "coverage: %" PRIu64 " %s in %" PRIu64 " operations, under %" PRIu64,
			    floors[i].got, floors[i].what, ops, floor);
	}
}

int main(int argc, char *argv[])
{
	uint32_t weight[NR_OPS];
	struct fuzz f = {};
	uint64_t nr_ops = 20000;
	bool floors = false;
	int opt, i, op;

	f.seed = time(NULL) ^ ((uint64_t)getpid() << 32);
	while ((opt = getopt(argc, argv, "s:n:t:F")) != -1) {
		switch (opt) {
		case 's':
			f.seed = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			nr_ops = strtoull(optarg, NULL, 0);
			break;
		case 't':
			trace_file = fopen(optarg, "w");
			TEST_ASSERT(trace_file, "cannot open %s", optarg);
			break;
		case 'F':
			floors = true;
			break;
		default:
			printf("usage: %s [-s SEED] [-n OPS] [-t TRACE_FILE] [-F]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	printf("coalesced_io_fuzz: seed %" PRIu64 ", %" PRIu64 " operations\n", f.seed, nr_ops);
	fflush(stdout);
	rng_state = f.seed;

	new_vm(&f);
	for (op_nr = 0; op_nr < nr_ops; op_nr++) {
		/* Phases with different mixes: some never drain, so the ring fills up. */
		if (op_nr % PHASE_OPS == 0)
			for (i = 0; i < NR_OPS; i++)
				weight[i] = base_weight[i] * rnd(4);
		weight[OP_WRITE] += 1;
		op = pick_op(weight);
		if (op != OP_WRITE)
			flush(&f);
		switch (op) {
		case OP_WRITE:
			op_write(&f);
			break;
		case OP_REGISTER:
			if (f.nr_live < MAX_LIVE)
				op_register(&f);
			else
				op_unregister(&f);
			break;
		case OP_UNREGISTER:
			op_unregister(&f);
			break;
		case OP_DRAIN:
			op_drain(&f);
			break;
		case OP_CORRUPT:
			op_corrupt(&f);
			break;
		case OP_RESET:
			op_reset(&f);
			break;
		case OP_NEW_VM:
			new_vm(&f);
			break;
		}
	}
	flush(&f);
	op_drain(&f);
	kvm_vm_free(f.vm);
	stats.ops = nr_ops;
	if (trace_file)
		TEST_ASSERT(!fclose(trace_file), "writing the trace failed");

	/* One line, printed in parts. */
	printf("coalesced_io_fuzz: seed %" PRIu64 ": %" PRIu64 " operations: ", f.seed, stats.ops);
	printf("%" PRIu64 " guest writes in %" PRIu64 " runs (%" PRIu64 " coalesced, ",
	       stats.writes, stats.batches, stats.writes - stats.exits);
	printf("%" PRIu64 " exited; %" PRIu64 " ring entries read, ", stats.exits, stats.drained);
	printf("%" PRIu64 " of them checked against the writes), ", stats.checked);
	printf("%" PRIu64 " registers (%" PRIu64 " accepted), %" PRIu64 " unregisters, ",
	       stats.reg, stats.reg_ok, stats.unreg);
	printf("%" PRIu64 " hostile zones, %" PRIu64 " index corruptions, %" PRIu64 " VMs\n",
	       stats.bad_zones, stats.corruptions, stats.vms);
	printf("coalesced_io_fuzz: %" PRIu64 " writes to zones exited with the ring full, %" PRIu64
	       " otherwise; ", stats.full_exits, stats.zone_exits);
	printf("refused: %" PRIu64 " registers and %" PRIu64 " unregisters with EINVAL, %" PRIu64
	       " registers with ENOSPC\n", stats.reg_refused[EINVAL], stats.unreg_refused[EINVAL],
	       stats.reg_refused[ENOSPC]);
	printf("coalesced_io_fuzz: trace digest %016" PRIx64 "\n", digest);
	if (floors)
		coverage_floors(stats.ops);
	return 0;
}
