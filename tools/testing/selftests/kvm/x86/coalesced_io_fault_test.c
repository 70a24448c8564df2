// SPDX-License-Identifier: GPL-2.0
/*
 * Allocation failures in every coalesced I/O operation, injected one at a time as syzkaller
 * injects them: for each operation, /proc/thread-self/fail-nth = 1, 2, 3, ... makes the n-th
 * allocation of the operation's system call fail, until the call completes without reaching it.
 * Each sweep is run twice, once failing slab allocations (failslab) and once page allocations
 * (fail_page_alloc), the other kind left alone.
 *
 * After every attempt: the return code must be success or ENOMEM (never another error, never a
 * descriptor left behind by a failed call); the VM must still run, a write to a zone that should
 * exist must land in the right ring, one to a zone that should not must exit, and the ring's
 * indices must be sane; where the operation adds a zone, doing it again without a fault must
 * work. After each operation's sweeps: kmemleak (no unreferenced object) and the kernel log (no
 * warning or sanitizer report).
 *
 *   coalesced_io_fault_test [-t TRACE] [-v] [-o OPERATION]...
 *
 * With -o, only the operations named; with -v, the trace is printed as well.
 * The trace has a line per attempt, "<op> <kind> <n> <return code> <state after>", which the
 * stock C kvm.ko and ours must give identically for every operation C has; the operations on
 * coalesced MMIO buffers (ours only) are named buffer_*. Where each injected fault was (the
 * caller of the allocator and the first KVM function on the stack) is printed as "site:" lines.
 *
 * Counting must be the same from run to run, so the slab allocator's allocations for itself are
 * left out by the stack filters (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER), and a kernel with
 * KASAN or kmemleak should be booted with stack_depot_disable=true: both record each new stack
 * in the stack depot, which takes pages for them when it runs short.
 *
 * The guest is a few real-mode instructions: OUTs to two ports and stores to two MMIO
 * addresses, then HLT. Without an in-kernel irqchip nothing else is on the buses.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <kvm_util.h>

#define DEBUGFS		"/sys/kernel/debug"
#define KMEMLEAK	DEBUGFS "/kmemleak"
#define MAX_FAULTS	2000	/* a sweep that long has lost its way */

#define MEM_SIZE	0x10000	/* guest memory at GPA 0; MMIO above it */
#define CODE_GPA	0x1000
#define PORT_A		0x80
#define PORT_B		0x87
#define MMIO_A		0xd0000
#define MMIO_B		0xd0100
/* Registered after an unregister: is the PIO bus still there? */
#define SPARE_PORT	0x90

/*
 *	mov al, 0x42; out 0x80, al; mov al, 0x43; out 0x87, al
 *	mov ax, 0xd000; mov ds, ax
 *	mov byte [0x0000], 0x44; mov byte [0x0100], 0x45
 *	hlt
 */
static const uint8_t guest_code[] = {
	0xb0, 0x42, 0xe6, PORT_A, 0xb0, 0x43, 0xe6, PORT_B,
	0xb8, 0x00, 0xd0, 0x8e, 0xd8,
	0xc6, 0x06, 0x00, 0x00, 0x44, 0xc6, 0x06, 0x00, 0x01, 0x45,
	0xf4,
};

/* The guest's four writes, in order. */
static const struct {
	uint32_t pio;
	uint64_t addr;
	uint8_t val;
} writes[] = {
	{ 1, PORT_A, 0x42 }, { 1, PORT_B, 0x43 }, { 0, MMIO_A, 0x44 }, { 0, MMIO_B, 0x45 },
};

#define NR_WRITES	4

/* What became of each write: exited, into the VM's ring, into a buffer's ring. */
#define EXITED		'x'
#define VM_RING		'r'
#define BUFFER_RING	'b'

struct vm {
	int fd, vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	struct kvm_coalesced_mmio_ring *ring;
	uint32_t ring_max;
	void *mem;
};

struct buffer {
	int fd;
	struct kvm_coalesced_mmio_ring *ring;
	size_t size;
	uint32_t entries;
};

/* One attempt's outcome. */
struct outcome {
	int rc;			/* 0 or a descriptor on success, else -errno */
	char state[160];	/* the VM after it */
};

static int kvm_fd, fail_nth_fd, kmsg_fd;
static int buffer_entries;	/* KVM_CAP_COALESCED_MMIO2: 0 without buffers */
static FILE *trace;
static bool verbose;
static int failures;
static const char *cur_op, *cur_kind;

/* A failure that does not stop the sweep: counted, and the test fails at the end. */
static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	printf("FAIL: %s %s: ", cur_op, cur_kind);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	failures++;
}

/* A function's text, from its address to the next symbol's, as the stack filters take them. */
struct text_range {
	char start[24], end[24];
};

static struct text_range slab_refill, slab_internal;

static void find_function(const char *name, struct text_range *range)
{
	unsigned long long addr, start = 0, end = ~0ull;
	char line[512], type, sym[256];
	FILE *f = fopen("/proc/kallsyms", "r");

	TEST_ASSERT(f, "/proc/kallsyms: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%llx %c %255s", &addr, &type, sym) == 3 && !strcmp(sym, name))
			start = addr;
	TEST_ASSERT(start, "no %s in /proc/kallsyms: %s", name,
		    "the sweeps would count the slab allocator's own allocations");
	rewind(f);
	while (fgets(line, sizeof(line), f)) {
		addr = strtoull(line, NULL, 16);
		if (addr > start && addr < end)
			end = addr;
	}
	fclose(f);
	snprintf(range->start, sizeof(range->start), "0x%llx", start);
	snprintf(range->end, sizeof(range->end), "0x%llx", end);
}

static void write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	TEST_ASSERT(fd >= 0, "open %s: %s", path, strerror(errno));
	TEST_ASSERT(write(fd, val, strlen(val)) == (ssize_t)strlen(val), "write %s to %s: %s",
		    val, path, strerror(errno));
	close(fd);
}

/*
 * The kinds of allocation a sweep fails. fail-nth counts the allocations that the enabled kinds
 * would fail; a kind is left out of the count by its own filter: failslab's cache filter with no
 * cache marked, fail_page_alloc's minimum order beyond any order. By default both ignore
 * allocations that may sleep (GFP_KERNEL, and so every allocation here), fail_page_alloc also
 * order-0 pages and highmem (vmalloc's pages), so those defaults are turned off.
 */
static void set_kind(const char *kind)
{
	bool slab = !strcmp(kind, "slab");

	write_file(DEBUGFS "/failslab/ignore-gfp-wait", "N");
	write_file(DEBUGFS "/failslab/cache-filter", slab ? "N" : "Y");
	write_file(DEBUGFS "/fail_page_alloc/ignore-gfp-wait", "N");
	write_file(DEBUGFS "/fail_page_alloc/ignore-gfp-highmem", "N");
	write_file(DEBUGFS "/fail_page_alloc/min-order", slab ? "4294967295" : "0");
	/*
	 * Allocations are counted on the operation's own path only, not those the slab allocator
	 * makes for itself: its refills (all in new_slab()) and its kmallocs for itself, per-CPU
	 * sheaves above all (all through __kmalloc_flags_noprof(), which only mm/ calls; a
	 * sheaf's failure is absorbed). When those happen depends on what
	 * earlier allocations and KASAN's quarantine left in the caches; without them two runs,
	 * and two kvm.ko, count alike.
	 */
	write_file(DEBUGFS "/failslab/reject-start", slab_internal.start);
	write_file(DEBUGFS "/failslab/reject-end", slab_internal.end);
	write_file(DEBUGFS "/fail_page_alloc/reject-start", slab_refill.start);
	write_file(DEBUGFS "/fail_page_alloc/reject-end", slab_refill.end);
	/* Each injected fault logs its stack, unlimited: that is where the sites come from. */
	write_file(DEBUGFS "/failslab/verbose", "2");
	write_file(DEBUGFS "/fail_page_alloc/verbose", "2");
	write_file(DEBUGFS "/failslab/verbose_ratelimit_interval_ms", "0");
	write_file(DEBUGFS "/fail_page_alloc/verbose_ratelimit_interval_ms", "0");
	cur_kind = kind;
}

/* The next system call's n-th allocation (of the kind set) fails. */
static void arm(unsigned int n)
{
	char buf[16];
	int len = snprintf(buf, sizeof(buf), "%u", n);

	TEST_ASSERT(pwrite(fail_nth_fd, buf, len, 0) == len, "fail-nth: %s", strerror(errno));
}

/* Whether the fault was injected: fail-nth reads 0 once it has been. Then no more faults. */
static bool disarm(void)
{
	char buf[16] = {};
	bool injected;

	TEST_ASSERT(pread(fail_nth_fd, buf, sizeof(buf) - 1, 0) > 0, "fail-nth: %s",
		    strerror(errno));
	injected = strtoul(buf, NULL, 10) == 0;
	arm(0);
	return injected;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	TEST_ASSERT(d, "/proc/self/fd: %s", strerror(errno));
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/*
 * This process's VMs: kvm_create_vm() makes /sys/kernel/debug/kvm/<pid>-<fd>, and
 * kvm_destroy_vm() removes it.
 */
static int count_vms(void)
{
	DIR *d = opendir(DEBUGFS "/kvm");
	char prefix[24];
	struct dirent *e;
	int n = 0;

	TEST_ASSERT(d, DEBUGFS "/kvm: %s", strerror(errno));
	snprintf(prefix, sizeof(prefix), "%d-", getpid());
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

/* The call closed a VM's last reference: it must have been destroyed there and then. */
static void vm_gone(struct outcome *o, int vms_before)
{
	int vms = count_vms();

	snprintf(o->state, sizeof(o->state), "vms%+d", vms - vms_before);
	if (vms != vms_before - 1)
		fail("the VM was not destroyed (%d of this process's VMs before, %d after)",
		     vms_before, vms);
}

static int zone_ioctl(int vm_fd, unsigned long nr, uint64_t addr, uint32_t size, uint32_t pio)
{
	struct kvm_coalesced_mmio_zone zone = { .addr = addr, .size = size, .pio = pio };

	return ioctl(vm_fd, nr, &zone) ? -errno : 0;
}

static int zone2_ioctl(int vm_fd, unsigned long nr, struct buffer *b, uint64_t addr,
		       uint32_t pio)
{
	struct kvm_coalesced_mmio_zone2 zone = {
		.addr = addr, .size = 1, .pio = pio, .buffer_fd = b->fd,
	};

	return ioctl(vm_fd, nr, &zone) ? -errno : 0;
}

static void must(int rc, const char *what)
{
	TEST_ASSERT(rc >= 0, "%s (without a fault): %s", what, strerror(-rc));
}

/* Gives a new VM its memory, the guest's code and a vCPU, all without a fault. */
static void vm_setup(struct vm *vm, int fd)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
	};
	int page = getpagesize();

	vm->fd = fd;
	vm->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(vm->mem != MAP_FAILED, "guest memory: %s", strerror(errno));
	memcpy((char *)vm->mem + CODE_GPA, guest_code, sizeof(guest_code));
	region.userspace_addr = (uintptr_t)vm->mem;
	TEST_ASSERT(!ioctl(fd, KVM_SET_USER_MEMORY_REGION, &region), "memslot: %s",
		    strerror(errno));
	vm->vcpu_fd = ioctl(fd, KVM_CREATE_VCPU, 0);
	TEST_ASSERT(vm->vcpu_fd >= 0, "KVM_CREATE_VCPU: %s", strerror(errno));
	vm->run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
	TEST_ASSERT(vm->run != MAP_FAILED, "vCPU mmap: %s", strerror(errno));
	vm->ring = (void *)((char *)vm->run + kvm_check_cap(KVM_CAP_COALESCED_MMIO) * page);
	vm->ring_max = (page - sizeof(*vm->ring)) / sizeof(vm->ring->coalesced_mmio[0]);
}

static void vm_new(struct vm *vm)
{
	int fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);

	TEST_ASSERT(fd >= 0, "KVM_CREATE_VM: %s", strerror(errno));
	vm_setup(vm, fd);
}

/* Everything but the VM's own descriptor, which keeps the VM alive. */
static void vm_close_vcpu(struct vm *vm)
{
	munmap(vm->run, vm->run_size);
	close(vm->vcpu_fd);
	munmap(vm->mem, MEM_SIZE);
	vm->vcpu_fd = -1;
}

static void vm_free(struct vm *vm)
{
	if (vm->vcpu_fd >= 0)
		vm_close_vcpu(vm);
	close(vm->fd);
}

static void buffer_new(struct vm *vm, struct buffer *b)
{
	struct kvm_coalesced_mmio_buffer req = { .entries = buffer_entries };

	b->fd = ioctl(vm->fd, KVM_CREATE_COALESCED_MMIO_BUFFER, &req);
	TEST_ASSERT(b->fd >= 0, "KVM_CREATE_COALESCED_MMIO_BUFFER: %s", strerror(errno));
	b->size = req.mmap_size;
	b->entries = req.entries;
	b->ring = mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	TEST_ASSERT(b->ring != MAP_FAILED, "buffer mmap: %s", strerror(errno));
}

static void buffer_free(struct buffer *b)
{
	if (b->ring)
		munmap(b->ring, b->size);
	b->ring = NULL;
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

/*
 * Takes the entries of one ring, checking each against the write it must be (one not yet
 * accounted for), and empties the ring as a VMM does.
 */
static void drain(struct kvm_coalesced_mmio_ring *ring, uint32_t max, char *fate, char mark,
		  char *note, size_t note_len)
{
	uint32_t first = READ_ONCE(ring->first), last = READ_ONCE(ring->last);
	int i;

	if (first >= max || last >= max) {
		snprintf(note, note_len, " ring%c=%u,%u", mark, first, last);
		fail("a ring's indices out of range: first %u, last %u, %u entries", first, last,
		     max);
		WRITE_ONCE(ring->first, 0);
		WRITE_ONCE(ring->last, 0);
		return;
	}
	for (; first != last; first = (first + 1) % max) {
		struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[first];

		for (i = 0; i < NR_WRITES; i++)
			if (writes[i].pio == e->pio && writes[i].addr == e->phys_addr)
				break;
		if (i == NR_WRITES || fate[i] != '-' || e->len != 1 ||
		    e->data[0] != writes[i].val) {
			fail("ring entry %u: %s 0x%llx len %u data 0x%x: %s", first,
			     e->pio ? "PIO" : "MMIO", e->phys_addr, e->len, e->data[0],
			     "no write of the guest's, or one seen twice");
			continue;
		}
		fate[i] = mark;
	}
	WRITE_ONCE(ring->first, last);
}

/*
 * Runs the guest's four writes and says what became of each, in order: "x" an exit, "r" an
 * entry in the VM's ring, "b" one in the buffer's. A write that neither exited nor reached a
 * ring, or reached one twice, fails the test.
 */
static void probe(struct vm *vm, struct buffer *b, char *out, size_t len)
{
	struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
	struct kvm_sregs sregs;
	char fate[NR_WRITES + 1] = "----", note[64] = "";
	int i, runs;

	TEST_ASSERT(!ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds.base = 0;
	sregs.ds.selector = 0;
	TEST_ASSERT(!ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
	TEST_ASSERT(!ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs), "KVM_SET_REGS");
	for (runs = 0;; runs++) {
		TEST_ASSERT(runs <= NR_WRITES, "the guest did not reach its HLT");
		TEST_ASSERT(!ioctl(vm->vcpu_fd, KVM_RUN, 0), "KVM_RUN: %s", strerror(errno));
		if (vm->run->exit_reason == KVM_EXIT_HLT)
			break;
		for (i = 0; i < NR_WRITES; i++) {
			if (vm->run->exit_reason == KVM_EXIT_IO && writes[i].pio &&
			    vm->run->io.port == writes[i].addr)
				break;
			if (vm->run->exit_reason == KVM_EXIT_MMIO && !writes[i].pio &&
			    vm->run->mmio.phys_addr == writes[i].addr)
				break;
		}
		TEST_ASSERT(i < NR_WRITES && fate[i] == '-', "unexpected exit %u",
			    vm->run->exit_reason);
		fate[i] = EXITED;
	}
	drain(vm->ring, vm->ring_max, fate, VM_RING, note, sizeof(note));
	if (b && b->ring)
		drain(b->ring, b->entries, fate, BUFFER_RING, note, sizeof(note));
	if (strchr(fate, '-'))
		fail("a write neither exited nor reached a ring: %s", fate);
	snprintf(out, len, "%s%s", fate, note);
}

/* The message of a negative errno, or "fd" for a descriptor. */
static const char *rc_name(int rc)
{
	static char buf[32];

	if (rc > 0)
		return "fd";
	if (!rc)
		return "0";
	snprintf(buf, sizeof(buf), "-%s", strerrorname_np(-rc) ?: "?");
	return buf;
}

/* The stages of each operation: the state it starts from, the call, its effect. */
struct op {
	const char *name;
	bool buffers;		/* ours only */
	/* Makes the starting state, then does the call itself between arm() and disarm(). */
	void (*run)(unsigned int n, struct outcome *o, bool *injected);
};

/* An armed call: the fault applies to it alone. */
#define ARMED(n, injected, call)			\
({							\
	int __rc;					\
	arm(n);						\
	__rc = (call);					\
	__rc = __rc < 0 ? -errno : __rc;		\
	*(injected) = disarm();				\
	__rc;						\
})

/*
 * The state after the call must be one of those listed (NULL-terminated) that its return code
 * allows: anything else is a partial success, or a lost one.
 */
static void expect(const struct outcome *o, ...)
{
	const char *allowed;
	va_list ap;

	va_start(ap, o);
	while ((allowed = va_arg(ap, const char *)))
		if (!strcmp(o->state, allowed))
			break;
	va_end(ap);
	if (!allowed)
		fail("\"%s\" after %s: not a state that this call may leave", o->state,
		     rc_name(o->rc));
}

static void append_state(struct outcome *o, const char *fmt, ...)
{
	size_t used = strlen(o->state);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(o->state + used, sizeof(o->state) - used, fmt, ap);
	va_end(ap);
}

/* The zones every operation on a VM starts from: one port and one MMIO address. */
static void add_zones(struct vm *vm)
{
	must(zone_ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO, PORT_A, 1, 1), "register PIO");
	must(zone_ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO, MMIO_A, 1, 0), "register MMIO");
}

static void op_create_vm(unsigned int n, struct outcome *o, bool *injected)
{
	int fds = count_fds(), vms = count_vms(), fd;
	struct vm vm;

	fd = ARMED(n, injected, ioctl(kvm_fd, KVM_CREATE_VM, 0));
	o->rc = fd;
	if (fd < 0) {
		if (count_fds() != fds)
			fail("a failed KVM_CREATE_VM left a descriptor behind");
		if (count_vms() != vms)
			fail("a failed KVM_CREATE_VM left a VM behind (its debugfs directory)");
		strcpy(o->state, "-");
		return;
	}
	vm_setup(&vm, fd);
	add_zones(&vm);
	probe(&vm, NULL, o->state, sizeof(o->state));
	expect(o, "rxrx", NULL);
	vm_free(&vm);
}

/* Registers a zone of the VM's ring under the fault, then, if that failed, again without. */
static void register_one(unsigned int n, struct outcome *o, bool *injected, uint64_t addr,
			 uint32_t pio, const char *done, const char *again)
{
	struct vm vm;

	vm_new(&vm);
	o->rc = ARMED(n, injected, zone_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO, addr, 1, pio));
	probe(&vm, NULL, o->state, sizeof(o->state));
	if (o->rc) {
		must(zone_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO, addr, 1, pio),
		     "register again");
		append_state(o, " again ");
		probe(&vm, NULL, o->state + strlen(o->state), sizeof(o->state) - strlen(o->state));
	}
	expect(o, o->rc ? again : done, NULL);
	vm_free(&vm);
}

static void op_register_pio(unsigned int n, struct outcome *o, bool *injected)
{
	register_one(n, o, injected, PORT_A, 1, "rxxx", "xxxx again rxxx");
}

static void op_register_mmio(unsigned int n, struct outcome *o, bool *injected)
{
	register_one(n, o, injected, MMIO_A, 0, "xxrx", "xxxx again xxrx");
}

/* After an unregister: can the PIO bus still take a zone? (Not if a failure destroyed it.) */
static void spare_zone(struct vm *vm, struct outcome *o)
{
	append_state(o, " spare=%s",
		     rc_name(zone_ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO, SPARE_PORT, 1, 1)));
}

static void op_unregister_one(unsigned int n, struct outcome *o, bool *injected)
{
	struct vm vm;

	vm_new(&vm);
	add_zones(&vm);
	o->rc = ARMED(n, injected, zone_ioctl(vm.fd, KVM_UNREGISTER_COALESCED_MMIO, PORT_A, 1, 1));
	probe(&vm, NULL, o->state, sizeof(o->state));
	spare_zone(&vm, o);
	/* Gone, or the whole PIO bus destroyed when it could not shrink; MMIO untouched. */
	expect(o, "xxrx spare=0", "xxrx spare=-ENOMEM", NULL);
	vm_free(&vm);
}

/*
 * Eight zones that all contain port 0x80 (0x80 of 1 to 8 ports), removed by one request for it:
 * a bus that cannot shrink is destroyed with every device on it, and the walk must stop there
 * (CVE-2021-47060).
 */
static void op_unregister_many(unsigned int n, struct outcome *o, bool *injected)
{
	struct vm vm;
	int size;

	vm_new(&vm);
	add_zones(&vm);
	for (size = 2; size <= PORT_B - PORT_A + 1; size++)
		must(zone_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO, PORT_A, size, 1),
		     "register PIO");
	o->rc = ARMED(n, injected, zone_ioctl(vm.fd, KVM_UNREGISTER_COALESCED_MMIO, PORT_A, 1, 1));
	probe(&vm, NULL, o->state, sizeof(o->state));
	spare_zone(&vm, o);
	/* Gone, or the whole PIO bus destroyed when it could not shrink; MMIO untouched. */
	expect(o, "xxrx spare=0", "xxrx spare=-ENOMEM", NULL);
	vm_free(&vm);
}

/* The VM's last descriptor closed with zones on both buses: the VM is destroyed. */
static void op_destroy_vm(unsigned int n, struct outcome *o, bool *injected)
{
	struct vm vm;
	int vms;

	vm_new(&vm);
	add_zones(&vm);
	vm_close_vcpu(&vm);
	vms = count_vms();
	o->rc = ARMED(n, injected, close(vm.fd));
	vm_gone(o, vms);
}

static void op_buffer_create(unsigned int n, struct outcome *o, bool *injected)
{
	struct kvm_coalesced_mmio_buffer req = { .entries = buffer_entries };
	struct buffer b = { .fd = -1 };
	struct vm vm;
	int fds;

	vm_new(&vm);
	fds = count_fds();
	o->rc = ARMED(n, injected, ioctl(vm.fd, KVM_CREATE_COALESCED_MMIO_BUFFER, &req));
	if (o->rc < 0) {
		if (count_fds() != fds)
			fail("a failed KVM_CREATE_COALESCED_MMIO_BUFFER left a descriptor behind");
		buffer_new(&vm, &b);
	} else {
		b.fd = o->rc;
		b.size = req.mmap_size;
		b.entries = req.entries;
		b.ring = mmap(NULL, b.size, PROT_READ | PROT_WRITE, MAP_SHARED, b.fd, 0);
		TEST_ASSERT(b.ring != MAP_FAILED, "buffer mmap: %s", strerror(errno));
	}
	/* The buffer made, by the armed call or after it: it must work. */
	must(zone2_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO2, &b, MMIO_B, 0), "register onto it");
	probe(&vm, &b, o->state, sizeof(o->state));
	expect(o, "xxxb", NULL);
	buffer_free(&b);
	vm_free(&vm);
}

static void op_buffer_mmap(unsigned int n, struct outcome *o, bool *injected)
{
	struct buffer b = { .fd = -1 };
	struct vm vm;
	void *ring;

	vm_new(&vm);
	buffer_new(&vm, &b);
	must(zone2_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO2, &b, MMIO_B, 0), "register onto it");
	arm(n);
	ring = mmap(NULL, b.size, PROT_READ | PROT_WRITE, MAP_SHARED, b.fd, 0);
	o->rc = ring == MAP_FAILED ? -errno : 0;
	*injected = disarm();
	probe(&vm, &b, o->state, sizeof(o->state));
	expect(o, "xxxb", NULL);
	if (ring != MAP_FAILED) {
		/* The second mapping shows what the first does: the same pages. */
		if (memcmp(ring, b.ring, b.size))
			fail("a second mapping differs from the first");
		munmap(ring, b.size);
	}
	buffer_free(&b);
	vm_free(&vm);
}

static void op_buffer_register(unsigned int n, struct outcome *o, bool *injected)
{
	struct buffer b = { .fd = -1 };
	struct vm vm;

	vm_new(&vm);
	buffer_new(&vm, &b);
	o->rc = ARMED(n, injected, zone2_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO2, &b, PORT_B, 1));
	probe(&vm, &b, o->state, sizeof(o->state));
	if (o->rc) {
		must(zone2_ioctl(vm.fd, KVM_REGISTER_COALESCED_MMIO2, &b, PORT_B, 1),
		     "register onto it again");
		append_state(o, " again ");
		probe(&vm, &b, o->state + strlen(o->state), sizeof(o->state) - strlen(o->state));
	}
	expect(o, o->rc ? "xxxx again xbxx" : "xbxx", NULL);
	buffer_free(&b);
	vm_free(&vm);
}

/* A buffer with a zone on each bus, beside the VM ring's own zones. */
static void buffer_with_zones(struct vm *vm, struct buffer *b)
{
	vm_new(vm);
	add_zones(vm);
	buffer_new(vm, b);
	must(zone2_ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO2, b, PORT_B, 1), "register onto it");
	must(zone2_ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO2, b, MMIO_B, 0), "register onto it");
}

static void op_buffer_unregister(unsigned int n, struct outcome *o, bool *injected)
{
	struct buffer b = { .fd = -1 };
	struct vm vm;

	buffer_with_zones(&vm, &b);
	o->rc = ARMED(n, injected,
		      zone2_ioctl(vm.fd, KVM_UNREGISTER_COALESCED_MMIO2, &b, PORT_B, 1));
	probe(&vm, &b, o->state, sizeof(o->state));
	spare_zone(&vm, o);
	/* The buffer's port zone gone, or the whole PIO bus with the VM ring's zone too. */
	expect(o, "rxrb spare=0", "xxrb spare=-ENOMEM", NULL);
	buffer_free(&b);
	vm_free(&vm);
}

/* The buffer's last descriptor closed (its mapping gone): its zones are unregistered. */
static void op_buffer_close(unsigned int n, struct outcome *o, bool *injected)
{
	struct buffer b = { .fd = -1 };
	struct vm vm;

	buffer_with_zones(&vm, &b);
	munmap(b.ring, b.size);
	b.ring = NULL;
	o->rc = ARMED(n, injected, close(b.fd));
	b.fd = -1;
	probe(&vm, NULL, o->state, sizeof(o->state));
	spare_zone(&vm, o);
	/*
	 * The buffer's zones gone; where a bus could not shrink, it is gone with the VM ring's zone
	 * on it (the release walks the MMIO bus, then the PIO bus).
	 */
	expect(o, "rxrx spare=0", "rxxx spare=0", "xxrx spare=-ENOMEM", NULL);
	vm_free(&vm);
}

/* The VM's descriptors closed first, then its buffer: the buffer's release destroys the VM. */
static void op_buffer_destroy_vm(unsigned int n, struct outcome *o, bool *injected)
{
	struct buffer b = { .fd = -1 };
	struct vm vm;
	int vms;

	buffer_with_zones(&vm, &b);
	vm_free(&vm);
	munmap(b.ring, b.size);
	vms = count_vms();
	o->rc = ARMED(n, injected, close(b.fd));
	vm_gone(o, vms);
}

static const struct op ops[] = {
	{ "create_vm", false, op_create_vm },
	{ "register_pio", false, op_register_pio },
	{ "register_mmio", false, op_register_mmio },
	{ "unregister_one", false, op_unregister_one },
	{ "unregister_many", false, op_unregister_many },
	{ "destroy_vm", false, op_destroy_vm },
	{ "buffer_create", true, op_buffer_create },
	{ "buffer_mmap", true, op_buffer_mmap },
	{ "buffer_register", true, op_buffer_register },
	{ "buffer_unregister", true, op_buffer_unregister },
	{ "buffer_close", true, op_buffer_close },
	{ "buffer_destroy_vm", true, op_buffer_destroy_vm },
};

/* What the kernel log must never say, during a sweep or after it. */
static const char *const reports[] = {
	"WARNING:", "BUG:", "Oops", "general protection", "KASAN", "UBSAN", "kernel BUG",
	"possible recursive locking", "circular locking", "inconsistent lock state",
	"suspicious RCU usage", "rust_panic", "panicked at", "unreferenced object", "INFO: task",
	"rcu: INFO", "soft lockup",
};

/* Frames of the allocators and of fault injection itself, above the allocation's caller. */
static bool allocator_frame(const char *f)
{
	static const char *const prefixes[] = {
		"dump_stack", "fail_dump", "should_fail", "__should_fail", "should_failslab",
		"__kmalloc", "kmalloc", "__kvmalloc", "kvmalloc", "kmem_cache_alloc", "kzalloc",
		"krealloc", "__alloc_pages", "alloc_pages", "__alloc_frozen_pages",
		"__get_free_pages", "get_free_pages", "get_zeroed_page", "__vmalloc", "vmalloc",
		"vzalloc", "__folio_alloc", "folio_alloc",
		"alloc_slab_page", "allocate_slab", "new_slab", "___slab_alloc", "__slab_alloc",
		"prepare_alloc_pages", "vm_area_alloc_pages", "alloc_pages_bulk", "__pcs_",
		"refill_", "slab_alloc", "__do_kmalloc", "kmalloc_large", "___kmalloc_large",
		"__kmalloc_large", "alloc_slab_obj_exts", "kmalloc_trace", "__vmalloc_area_node",
		"__vmalloc_node", "vrealloc", "kvrealloc",
	};
	size_t i;

	/* The kernel crate's allocators, by their mangled names. */
	if (strstr(f, "5alloc9allocator"))
		return true;
	for (i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (!strncmp(f, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

/*
 * Reads the kernel log written since the last call: the site of an injected fault (the caller
 * of the allocator, and the first KVM function below it, or "silent" where the allocation asked
 * for no warning), and any report, which fails the test.
 */
static void read_kmsg(unsigned int n, bool injected)
{
	char rec[8192], caller[96] = "", kvm[96] = "";
	bool in_fault = false, in_trace = false;
	ssize_t len;
	size_t i;

	for (;;) {
		char *msg, *end, *plus;

		len = read(kmsg_fd, rec, sizeof(rec) - 1);
		if (len < 0 && errno == EPIPE)
			continue;	/* records lost to the ring's wrap: read on */
		if (len <= 0)
			break;
		rec[len] = 0;
		msg = strchr(rec, ';');
		if (!msg)
			continue;
		msg++;
		end = strchr(msg, '\n');
		if (end)
			*end = 0;
		for (i = 0; i < ARRAY_SIZE(reports); i++)
			if (strstr(msg, reports[i]))
				fail("kernel report after fault %u: %s", n, msg);
		if (strstr(msg, "FAULT_INJECTION: forcing a failure")) {
			in_fault = true;
			continue;
		}
		if (in_fault && strstr(msg, "Call Trace:")) {
			in_trace = true;
			continue;
		}
		if (!in_trace)
			continue;
		if (strstr(msg, "</TASK>")) {
			in_fault = false;
			in_trace = false;
			continue;
		}
		/* " func+0x1a/0x40 [kvm]" (a leading "? " marks an unreliable frame) */
		while (*msg == ' ')
			msg++;
		if (!strncmp(msg, "? ", 2) || *msg == '<')
			continue;
		plus = strchr(msg, '+');
		if (!plus)
			continue;
		if (!caller[0] && !allocator_frame(msg))
			snprintf(caller, sizeof(caller), "%.*s", (int)(plus - msg), msg);
		if (!kvm[0] && (strstr(plus, "[kvm]") || strstr(plus, "[kvm_amd]") ||
				 strstr(plus, "[kvm_intel]")))
			snprintf(kvm, sizeof(kvm), "%.*s", (int)(plus - msg), msg);
	}
	if (injected)
		printf("site: %s %s %u: %s%s%s\n", cur_op, cur_kind, n,
		       caller[0] ? caller : "silent",
		       kvm[0] && strcmp(kvm, caller) ? " < " : "", strcmp(kvm, caller) ? kvm : "");
}

/* Objects leaked since the last clear: kmemleak reports only objects older than 5 s. */
static int kmemleak_scan(void)
{
	char line[512];
	int leaks = 0;
	FILE *f;

	sleep(6);
	write_file(KMEMLEAK, "scan");
	write_file(KMEMLEAK, "scan");
	f = fopen(KMEMLEAK, "r");
	TEST_ASSERT(f, "%s: %s", KMEMLEAK, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		fputs(line, stdout);
		leaks += !!strstr(line, "unreferenced object");
	}
	fclose(f);
	write_file(KMEMLEAK, "clear");
	return leaks;
}

static const char *const kinds[] = { "slab", "page" };

/* Returns the number of attempts made. */
static unsigned int sweep(const struct op *op, const char *kind)
{
	struct outcome o;
	bool injected;
	unsigned int n;

	cur_op = op->name;
	set_kind(kind);
	for (n = 1;; n++) {
		TEST_ASSERT(n <= MAX_FAULTS, "%s %s: still failing after %u faults", op->name, kind,
			    MAX_FAULTS);
		memset(&o, 0, sizeof(o));
		injected = false;
		op->run(n, &o, &injected);
		read_kmsg(n, injected);
		if (o.rc < 0 && o.rc != -ENOMEM)
			fail("fault %u: %s, expected success or ENOMEM", n, rc_name(o.rc));
		if (o.rc < 0 && !injected)
			fail("%s without an injected fault", rc_name(o.rc));
		fprintf(trace, "%s %s %u %s %s\n", op->name, kind, n, rc_name(o.rc), o.state);
		if (verbose)
			printf("trace: %s %s %u %s %s\n", op->name, kind, n, rc_name(o.rc),
			       o.state);
		if (!injected)
			return n;
	}
}

int main(int argc, char *argv[])
{
	const char *trace_path = "/dev/null";
	bool chosen[ARRAY_SIZE(ops)] = {}, any_chosen = false;
	char keeper_state[160], summary[160];
	unsigned int attempts, total = 0;
	struct vm keeper;
	int opt, leaks;
	size_t i, k;

	while ((opt = getopt(argc, argv, "t:vo:")) != -1) {
		switch (opt) {
		case 't':
			trace_path = optarg;
			break;
		case 'v':
			verbose = true;
			break;
		case 'o':
			for (i = 0; i < ARRAY_SIZE(ops); i++)
				if (!strcmp(optarg, ops[i].name))
					chosen[i] = true;
			break;
		default:
			printf("usage: %s [-t TRACE] [-v] [-o OPERATION]...\n", argv[0]);
			return KSFT_FAIL;
		}
	}
	for (i = 0; i < ARRAY_SIZE(ops); i++)
		any_chosen |= chosen[i];
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	__TEST_REQUIRE(!access("/proc/thread-self/fail-nth", W_OK),
		       "no /proc/thread-self/fail-nth: a kernel without CONFIG_FAULT_INJECTION");
	__TEST_REQUIRE(!access(DEBUGFS "/failslab", F_OK) &&
		       !access(DEBUGFS "/fail_page_alloc", F_OK),
		       "no failslab or fail_page_alloc in debugfs (%s)",
		       "CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC, CONFIG_FAULT_INJECTION_DEBUG_FS");
	__TEST_REQUIRE(!access(KMEMLEAK, W_OK), "no kmemleak (CONFIG_DEBUG_KMEMLEAK)");
	__TEST_REQUIRE(!access(DEBUGFS "/fail_page_alloc/reject-start", W_OK),
		       "no stack filter for fault injection (%s)",
		       "CONFIG_FAULT_INJECTION_STACKTRACE_FILTER");
	buffer_entries = kvm_check_cap(KVM_CAP_COALESCED_MMIO2);
	find_function("new_slab", &slab_refill);
	find_function("__kmalloc_flags_noprof", &slab_internal);

	trace = fopen(trace_path, "w");
	TEST_ASSERT(trace, "%s: %s", trace_path, strerror(errno));
	setlinebuf(stdout);
	kvm_fd = open_kvm_dev_path_or_exit();
	fail_nth_fd = open("/proc/thread-self/fail-nth", O_RDWR);
	TEST_ASSERT(fail_nth_fd >= 0, "fail-nth: %s", strerror(errno));
	kmsg_fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	TEST_ASSERT(kmsg_fd >= 0, "/dev/kmsg: %s", strerror(errno));
	lseek(kmsg_fd, 0, SEEK_END);
	/* Nothing of ours faults a page in while a fault is armed. */
	TEST_ASSERT(!mlockall(MCL_CURRENT | MCL_FUTURE), "mlockall: %s", strerror(errno));

	/*
	 * A VM kept for the whole run, run once: what KVM sets up for its first VM, or its first
	 * vCPU run, is then not part of any sweep, and the sweeps see the same kernel each time.
	 */
	cur_op = "keeper";
	cur_kind = "-";
	vm_new(&keeper);
	add_zones(&keeper);
	probe(&keeper, NULL, keeper_state, sizeof(keeper_state));
	TEST_ASSERT(!strcmp(keeper_state, "rxrx"), "a VM without faults: %s", keeper_state);

	write_file(KMEMLEAK, "clear");
	for (i = 0; i < ARRAY_SIZE(ops); i++) {
		if ((ops[i].buffers && buffer_entries <= 0) || (any_chosen && !chosen[i]))
			continue;
		snprintf(summary, sizeof(summary), "%s:", ops[i].name);
		for (k = 0; k < ARRAY_SIZE(kinds); k++) {
			attempts = sweep(&ops[i], kinds[k]);
			total += attempts;
			snprintf(summary + strlen(summary), sizeof(summary) - strlen(summary),
				 " %s %u faults,", kinds[k], attempts - 1);
		}
		cur_kind = "kmemleak";
		leaks = kmemleak_scan();
		read_kmsg(0, false);
		if (leaks)
			fail("%d unreferenced objects", leaks);
		printf("%s %d leaks\n", summary, leaks);
	}
	vm_free(&keeper);
	fclose(trace);
	printf("coalesced_io_fault_test: %u attempts, %d failures%s\n", total, failures,
	       buffer_entries > 0 ? "" : " (no coalesced MMIO buffers here)");
	return failures ? KSFT_FAIL : KSFT_PASS;
}
