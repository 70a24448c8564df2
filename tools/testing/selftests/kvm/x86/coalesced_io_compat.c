// SPDX-License-Identifier: GPL-2.0
/*
 * The coalesced MMIO buffers' UAPI from a 32-bit process: built twice from this file, as a static
 * i386 program (run by a 64-bit kernel through its compat path) and as a static x86-64 one, whose
 * outputs coalesced_io_compat_test.sh requires to be identical. The structs have no implicit
 * padding, so both get the same ioctl numbers, the same sizes and offsets, the same answers to
 * every valid and invalid request, and the same entries in the ring after a guest's OUTs.
 *
 * No libc: a selftest built against libc cannot be built for i386 without a 32-bit libc, which a
 * 64-bit build machine rarely has. System calls are made directly; the i386 build uses the old
 * one-argument mmap() so that no system call needs six registers.
 */
#include <linux/kvm.h>
#include <linux/mman.h>
#include <linux/fcntl.h>
#include <linux/errno.h>
#include <asm/unistd.h>
#include <stddef.h>

#ifndef KVM_CAP_COALESCED_MMIO2
#error "these headers have no coalesced MMIO buffers"
#endif

#define PORT		0x70
#define GUEST_RAM	0x10000
#define GUEST_CODE	0x1000

static long sys(long nr, long a, long b, long c)
{
	long ret;

#ifdef __x86_64__
	asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c)
		     : "rcx", "r11", "memory");
#else
	asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
#endif
	return ret;
}

/* Compilers may emit calls to these for struct copies and initialisers. */
void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;

	while (n--)
		*d++ = c;
	return dst;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

static void out(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	sys(__NR_write, 1, (long)s, n);
}

/* A number: in hex, without division (no 64-bit division helpers for i386 here). */
static void out_hex(unsigned long long v)
{
	char buf[19] = "0x";
	int i, n = 1;

	while (n < 16 && v >> (4 * n))
		n++;
	for (i = 0; i < n; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (4 * (n - 1 - i))) & 15];
	buf[2 + n] = 0;
	out(buf);
}

static void line(const char *what, long long v)
{
	out(what);
	out(" ");
	if (v < 0) {
		out("-");
		v = -v;
	}
	out_hex(v);
	out("\n");
}

static int failures;

static void expect(const char *what, long long got, long long want)
{
	line(what, got);
	if (got != want) {
		out("FAIL: ");
		line(what, want);
		failures++;
	}
}

static void *map(void *addr, size_t len, int prot, int flags, int fd)
{
#ifdef __x86_64__
	register long r10 asm("r10") = flags;
	register long r8 asm("r8") = fd;
	register long r9 asm("r9") = 0;
	long ret;

	asm volatile("syscall" : "=a"(ret) : "a"(__NR_mmap), "D"(addr), "S"(len), "d"(prot),
		     "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
	return (void *)ret;
#else
	/* old_mmap(): one pointer to the six arguments. */
	unsigned long args[6] = { (unsigned long)addr, len, prot, flags, fd, 0 };

	return (void *)sys(__NR_mmap, (long)args, 0, 0);
#endif
}

static int mapped(void *p)
{
	return (unsigned long)p < (unsigned long)-4095;
}

static long create(int vm, unsigned int flags, unsigned int entries, unsigned long long res0,
		   unsigned long long *mmap_size)
{
	struct kvm_coalesced_mmio_buffer req = { .flags = flags, .entries = entries,
						 .reserved = { res0, 0 } };
	long fd = sys(__NR_ioctl, vm, KVM_CREATE_COALESCED_MMIO_BUFFER, (long)&req);

	*mmap_size = req.mmap_size;
	return fd;
}

static long zone2(int vm, unsigned long nr, unsigned int pio, unsigned int fd, unsigned int flags)
{
	struct kvm_coalesced_mmio_zone2 z = { .addr = PORT, .size = 1, .pio = pio,
					      .buffer_fd = fd, .flags = flags };

	return sys(__NR_ioctl, vm, nr, (long)&z);
}

/* Real mode at GUEST_CODE: OUT 0x12, 0x34 and 0x56 to PORT, then HLT. */
static const unsigned char guest[] = {
	0xb0, 0x12, 0xe6, PORT, 0xb0, 0x34, 0xe6, PORT, 0xb0, 0x56, 0xe6, PORT, 0xf4,
};

static void run_guest(int kvm, int vm, struct kvm_coalesced_mmio_ring *ring)
{
	struct kvm_userspace_memory_region region = { .memory_size = GUEST_RAM };
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = GUEST_CODE, .rflags = 2 };
	struct kvm_run *run;
	unsigned char *ram;
	long vcpu, size, i;

	ram = map(0, GUEST_RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	expect("guest memory mapped", mapped(ram), 1);
	if (!mapped(ram))
		return;
	memcpy(ram + GUEST_CODE, guest, sizeof(guest));
	region.userspace_addr = (unsigned long)ram;
	expect("KVM_SET_USER_MEMORY_REGION", sys(__NR_ioctl, vm, KVM_SET_USER_MEMORY_REGION,
						 (long)&region), 0);
	vcpu = sys(__NR_ioctl, vm, KVM_CREATE_VCPU, 0);
	expect("KVM_CREATE_VCPU ok", vcpu >= 0, 1);
	size = sys(__NR_ioctl, kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = map(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu);
	expect("kvm_run mapped", mapped(run), 1);
	if (vcpu < 0 || !mapped(run))
		return;
	expect("KVM_GET_SREGS", sys(__NR_ioctl, vcpu, KVM_GET_SREGS, (long)&sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	expect("KVM_SET_SREGS", sys(__NR_ioctl, vcpu, KVM_SET_SREGS, (long)&sregs), 0);
	expect("KVM_SET_REGS", sys(__NR_ioctl, vcpu, KVM_SET_REGS, (long)&regs), 0);

	/* Two OUTs coalesced into the 3-entry ring, which is then full: the third exits. */
	expect("KVM_RUN", sys(__NR_ioctl, vcpu, KVM_RUN, 0), 0);
	expect("exit reason (KVM_EXIT_IO)", run->exit_reason, KVM_EXIT_IO);
	expect("exit port", run->io.port, PORT);
	expect("exit data", ((unsigned char *)run)[run->io.data_offset], 0x56);
	expect("ring first", ring->first, 0);
	expect("ring last", ring->last, 2);
	for (i = 0; i < 2; i++) {
		expect("entry phys_addr", ring->coalesced_mmio[i].phys_addr, PORT);
		expect("entry len", ring->coalesced_mmio[i].len, 1);
		expect("entry pio", ring->coalesced_mmio[i].pio, 1);
		expect("entry data", ring->coalesced_mmio[i].data[0], i ? 0x34 : 0x12);
	}
	expect("KVM_RUN", sys(__NR_ioctl, vcpu, KVM_RUN, 0), 0);
	expect("exit reason (KVM_EXIT_HLT)", run->exit_reason, KVM_EXIT_HLT);
}

static void test(void)
{
	struct kvm_coalesced_mmio_ring *ring;
	unsigned long long mmap_size;
	long kvm, vm, fd, max;

	line("sizeof(struct kvm_coalesced_mmio_buffer)", sizeof(struct kvm_coalesced_mmio_buffer));
	line("offsetof(mmap_size)", offsetof(struct kvm_coalesced_mmio_buffer, mmap_size));
	line("offsetof(reserved)", offsetof(struct kvm_coalesced_mmio_buffer, reserved));
	line("sizeof(struct kvm_coalesced_mmio_zone2)", sizeof(struct kvm_coalesced_mmio_zone2));
	line("offsetof(buffer_fd)", offsetof(struct kvm_coalesced_mmio_zone2, buffer_fd));
	line("offsetof(flags)", offsetof(struct kvm_coalesced_mmio_zone2, flags));
	line("KVM_CREATE_COALESCED_MMIO_BUFFER", KVM_CREATE_COALESCED_MMIO_BUFFER);
	line("KVM_REGISTER_COALESCED_MMIO2", KVM_REGISTER_COALESCED_MMIO2);
	line("KVM_UNREGISTER_COALESCED_MMIO2", KVM_UNREGISTER_COALESCED_MMIO2);

	kvm = sys(__NR_open, (long)"/dev/kvm", O_RDWR | O_CLOEXEC, 0);
	expect("/dev/kvm opened", kvm >= 0, 1);
	if (kvm < 0)
		return;
	max = sys(__NR_ioctl, kvm, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_MMIO2);
	line("KVM_CAP_COALESCED_MMIO2", max);
	if (max < 3) {
		out("FAIL: no coalesced MMIO buffers\n");
		failures++;
		return;
	}
	vm = sys(__NR_ioctl, kvm, KVM_CREATE_VM, 0);
	expect("KVM_CREATE_VM ok", vm >= 0, 1);
	if (vm < 0)
		return;

	expect("create, flags 1", create(vm, 1, 3, 0, &mmap_size), -EINVAL);
	expect("create, reserved[0] 1", create(vm, 0, 3, 1, &mmap_size), -EINVAL);
	expect("create, 1 entry", create(vm, 0, 1, 0, &mmap_size), -EINVAL);
	expect("create, one more than the most", create(vm, 0, max + 1, 0, &mmap_size), -EINVAL);
	expect("create, request at NULL",
	       sys(__NR_ioctl, vm, KVM_CREATE_COALESCED_MMIO_BUFFER, 0), -EFAULT);
	fd = create(vm, 0, max, 0, &mmap_size);
	expect("create, the most entries: ok", fd >= 0, 1);
	line("mmap_size", mmap_size);
	sys(__NR_close, fd, 0, 0);

	fd = create(vm, 0, 3, 0, &mmap_size);
	expect("create, 3 entries: ok", fd >= 0, 1);
	expect("mmap_size", mmap_size, 4096);
	if (fd < 0)
		return;
	ring = map(0, mmap_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
	expect("mmap, private", (long)ring, -EINVAL);
	ring = map(0, 2 * mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	expect("mmap, twice mmap_size", (long)ring, -EINVAL);
	expect("register, flags 1", zone2(vm, KVM_REGISTER_COALESCED_MMIO2, 1, fd, 1), -EINVAL);
	expect("register, pio 2", zone2(vm, KVM_REGISTER_COALESCED_MMIO2, 2, fd, 0), -EINVAL);
	expect("register, bad fd", zone2(vm, KVM_REGISTER_COALESCED_MMIO2, 1, 1000, 0), -EBADF);
	expect("register, not a buffer", zone2(vm, KVM_REGISTER_COALESCED_MMIO2, 1, vm, 0),
	       -EINVAL);
	expect("register, before any mmap", zone2(vm, KVM_REGISTER_COALESCED_MMIO2, 1, fd, 0), 0);
	expect("unregister, flags 1", zone2(vm, KVM_UNREGISTER_COALESCED_MMIO2, 1, fd, 1), -EINVAL);
	ring = map(0, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
	expect("mmap, shared, mmap_size", mapped(ring), 1);
	if (!mapped(ring))
		return;
	run_guest(kvm, vm, ring);
	expect("unregister", zone2(vm, KVM_UNREGISTER_COALESCED_MMIO2, 1, fd, 0), 0);
}

/* Entered with the stack as the kernel left it, not as a call would have. */
__attribute__((force_align_arg_pointer)) void _start(void)
{
	test();
	out(failures ? "result: fail\n" : "result: pass\n");
	sys(__NR_exit_group, failures ? 1 : 0, 0, 0);
	for (;;)
		;
}
