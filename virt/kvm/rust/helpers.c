// SPDX-License-Identifier: GPL-2.0
/* See helpers.h: linked into kvm.ko only when it is built out of tree. */

#include <linux/gfp.h>
#include <linux/list.h>

#include "helpers.h"

void kvm_rs_helper_list_del(struct list_head *entry)
{
	list_del(entry);
}

unsigned long kvm_rs_helper___get_free_pages(gfp_t gfp_mask, unsigned int order)
{
	return __get_free_pages(gfp_mask, order);
}
