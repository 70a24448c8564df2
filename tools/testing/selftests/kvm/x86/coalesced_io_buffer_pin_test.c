// SPDX-License-Identifier: GPL-2.0
/*
 * A coalesced MMIO buffer keeps the vendor module (kvm_amd or kvm_intel) loaded, as VM, vCPU and
 * device files do.  A buffer holds its VM, and the VM's destruction, which happens when the last
 * buffer lets it go, calls into the vendor module: if that module could be unloaded while only a
 * buffer is left, closing the buffer would run code that is gone.
 *
 * For a buffer left with only its file descriptor, and for one left with only its mapping: the
 * vendor module has exactly one more reference than before the VM was made, unloading it fails
 * as for any module in use (EWOULDBLOCK), the ring is intact, and closing the buffer destroys the
 * VM and gives the reference back.  The module stays loaded throughout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <kvm_util.h>
#include <processor.h>

#include "ucall_common.h"

#include "coalesced_io_guest.h"

#define PIO_PORT	0x80
#define WRITES		8

static void guest_code(void)
{
	int i;

	for (i = 0; i < WRITES; i++)
		guest_out(PIO_PORT, i, 1);
	GUEST_DONE();
}

/* The loaded vendor module, which kvm_init() was called by. */
static const char *vendor_module(void)
{
	static const char * const vendors[] = { "kvm_amd", "kvm_intel" };
	char path[64];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(vendors); i++) {
		snprintf(path, sizeof(path), "/sys/module/%s", vendors[i]);
		if (!access(path, F_OK))
			return vendors[i];
	}
	TEST_FAIL("neither kvm_amd nor kvm_intel is loaded");
	return NULL;
}

static const char *refcnt_path(const char *module)
{
	static char path[64];

	snprintf(path, sizeof(path), "/sys/module/%s/refcnt", module);
	return path;
}

static long refcnt(const char *module)
{
	const char *path = refcnt_path(module);
	long n = -1;
	FILE *f;

	f = fopen(path, "r");
	TEST_ASSERT(f, "%s: %s", path, strerror(errno));
	if (fscanf(f, "%ld", &n) != 1)
		n = -1;
	fclose(f);
	TEST_ASSERT(n >= 0, "%s: no count", path);
	return n;
}

/* delete_module(2) as rmmod calls it: 0 or -errno. */
static int unload(const char *module)
{
	return syscall(__NR_delete_module, module, O_NONBLOCK) ? -errno : 0;
}

/* A VM whose buffer holds WRITES coalesced writes, then nothing left of it but the buffer. */
static void test_only_buffer_left(const char *vendor, bool keep_fd)
{
	const char *what = keep_fd ? "file descriptor" : "mapping";
	struct kvm_coalesced_mmio_zone2 zone = { .addr = PIO_PORT, .size = 1, .pio = 1 };
	struct kvm_coalesced_mmio_buffer req = { .entries = 2 * WRITES };
	struct kvm_coalesced_mmio_ring *ring;
	long before = refcnt(vendor);
	size_t len;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int fd, r, i;

	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	fd = ioctl(vm->fd, KVM_CREATE_COALESCED_MMIO_BUFFER, &req);
	TEST_ASSERT(fd >= 0, "KVM_CREATE_COALESCED_MMIO_BUFFER: %s", strerror(errno));
	len = req.mmap_size;
	ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	TEST_ASSERT(ring != MAP_FAILED, "mmap of the buffer: %s", strerror(errno));
	zone.buffer_fd = fd;
	TEST_ASSERT(!ioctl(vm->fd, KVM_REGISTER_COALESCED_MMIO2, &zone),
		    "KVM_REGISTER_COALESCED_MMIO2: %s", strerror(errno));
	vcpu_run(vcpu);
	TEST_ASSERT_EQ(get_ucall(vcpu, NULL), UCALL_DONE);
	TEST_ASSERT_EQ(ring->last, WRITES);

	/* The vCPU, the VM and /dev/kvm are closed; the VM lives on, held by the buffer. */
	kvm_vm_free(vm);
	if (keep_fd)
		TEST_ASSERT(!munmap(ring, len), "munmap: %s", strerror(errno));
	else
		TEST_ASSERT(!close(fd), "close: %s", strerror(errno));
	TEST_ASSERT(refcnt(vendor) == before + 1,
		    "%s has %ld references with only a buffer's %s left, %ld before its VM",
		    vendor, refcnt(vendor), what, before);
	r = unload(vendor);
	/* Had it gone, closing the buffer would destroy the VM through freed module text. */
	TEST_ASSERT(r == -EWOULDBLOCK,
		    "delete_module(%s) with only a buffer's %s left: %s, wanted EWOULDBLOCK",
		    vendor, what, r ? strerror(-r) : "unloaded");
	if (!keep_fd)
		for (i = 0; i < WRITES; i++)
			check_entry(ring, i, 1, PIO_PORT, 1, i);

	/* The last of the buffer: its VM is destroyed, and the module's reference given back. */
	if (keep_fd)
		TEST_ASSERT(!close(fd), "close: %s", strerror(errno));
	else
		TEST_ASSERT(!munmap(ring, len), "munmap: %s", strerror(errno));
	TEST_ASSERT(refcnt(vendor) == before,
		    "%s has %ld references after the buffer's last %s went, %ld before its VM",
		    vendor, refcnt(vendor), what, before);
	printf("only a buffer's %s left: %s in use (EWOULDBLOCK), released on close\n", what,
	       vendor);
}

int main(int argc, char *argv[])
{
	const char *vendor;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_MMIO2));
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	vendor = vendor_module();
	/* A built-in vendor module, or a kernel without module unloading, has no count to check. */
	__TEST_REQUIRE(!access(refcnt_path(vendor), R_OK), "no refcnt for the vendor module");

	test_only_buffer_left(vendor, true);
	test_only_buffer_left(vendor, false);
	return 0;
}
