/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for kvm.ko built out of tree (the top-level Kbuild): functions that are static
 * inline or macros in C, which Rust cannot call. An in-tree build takes them from
 * rust/helpers/, where our patches add them; a distribution's kernel does not have them.
 * The bindings generated for an out-of-tree build call each kvm_rs_helper_X() X().
 */
#ifndef __KVM_RUST_HELPERS_H__
#define __KVM_RUST_HELPERS_H__

#include <linux/gfp_types.h>
#include <linux/types.h>

struct list_head;

void kvm_rs_helper_list_del(struct list_head *entry);
unsigned long kvm_rs_helper___get_free_pages(gfp_t gfp_mask, unsigned int order);

#endif
