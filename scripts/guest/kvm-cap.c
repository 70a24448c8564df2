// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-cap CAP...: prints KVM_CHECK_EXTENSION's answer on /dev/kvm for each capability number,
 * one a line. Run in the test guest by scripts/guest/kvm-load to tell the kvm.ko variants apart;
 * built static by scripts/vm-run.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define KVMIO 0xAE
#define KVM_CHECK_EXTENSION _IO(KVMIO, 0x03)

int main(int argc, char *argv[])
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int i, ret;

	if (fd < 0) {
		perror("kvm-cap: /dev/kvm");
		return 1;
	}
	for (i = 1; i < argc; i++) {
		ret = ioctl(fd, KVM_CHECK_EXTENSION, strtoul(argv[i], NULL, 0));
		if (ret < 0) {
			perror("kvm-cap: KVM_CHECK_EXTENSION");
			return 1;
		}
		printf("%d\n", ret);
	}
	return 0;
}
