// SPDX-License-Identifier: GPL-2.0

//! Zeroed pages that the kernel sees as one contiguous buffer and userspace may map.
//!
//! C header: [`include/linux/vmalloc.h`](srctree/include/linux/vmalloc.h)
//!
//! A coalesced MMIO buffer's ring is longer than a page, and its 24-byte entries straddle page
//! boundaries, so the kernel needs one virtually contiguous view of it: the pages come from
//! `vmalloc`. Each mapping into userspace inserts the same pages with `vm_insert_page()`, which
//! takes a reference on every page it maps, so a page stays alive as long as any mapping of it,
//! whatever happens to the [`SharedPages`] that allocated it.

use core::{alloc::Layout, ptr::NonNull};
use kernel::{
    alloc::{allocator::Vmalloc, flags, Allocator, NumaNode},
    mm::virt::VmaMixedMap,
    page::PAGE_SIZE,
    prelude::*,
};

/// `count` zeroed pages from `vmalloc`, charged to the caller's memory cgroup.
///
/// # Invariants
///
/// `ptr` is the start of a live [`Vmalloc`] allocation of `count * PAGE_SIZE` bytes, page
/// aligned, with `count >= 1`, owned by this object.
pub(crate) struct SharedPages {
    ptr: NonNull<u8>,
    count: usize,
}

// SAFETY: the pages are plain memory, not tied to the thread that allocated them.
unsafe impl Send for SharedPages {}

// SAFETY: `&SharedPages` only gives out the raw address and the pages; what is stored there is
// the business of its users, which access it with raw pointers.
unsafe impl Sync for SharedPages {}

impl SharedPages {
    /// Allocates `count` zeroed pages; `count` must be at least 1.
    pub(crate) fn alloc(count: usize) -> Result<Self> {
        if count == 0 {
            return Err(EINVAL);
        }
        let layout = Self::layout(count)?;
        let ptr = Vmalloc::alloc(
            layout,
            flags::GFP_KERNEL_ACCOUNT | flags::__GFP_ZERO,
            NumaNode::NO_NODE,
        )?;
        // INVARIANT: vmalloc memory is page aligned, `layout` covers `count` pages, `count >= 1`.
        Ok(SharedPages {
            ptr: ptr.cast(),
            count,
        })
    }

    fn layout(count: usize) -> Result<Layout> {
        let bytes = count.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        Layout::from_size_align(bytes, PAGE_SIZE).map_err(|_| EINVAL)
    }

    /// The kernel address of the first byte.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        // Cannot overflow: `alloc` checked this product.
        self.count * PAGE_SIZE
    }

    /// Maps every page, in order, at the start of `vma`, which must be exactly as long.
    pub(crate) fn map_into(&self, vma: &VmaMixedMap) -> Result {
        if vma.end() - vma.start() != self.len() {
            return Err(EINVAL);
        }
        for i in 0..self.count {
            // SAFETY: by the type invariant `ptr + i * PAGE_SIZE` is the start of a page of this
            // vmalloc allocation (`i < count`), which outlives the borrowed page: it is only used
            // for the insertion below.
            let page = unsafe { Vmalloc::to_page(self.ptr.add(i * PAGE_SIZE)) };
            // `vm_insert_page()` takes its own reference on the page for the mapping.
            vma.vm_insert_page(vma.start() + i * PAGE_SIZE, &page)?;
        }
        Ok(())
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        // Pages still mapped somewhere keep the reference their mapping took; `vfree()` only
        // drops ours. The layout was valid when the allocation was made.
        if let Ok(layout) = Self::layout(self.count) {
            // SAFETY: by the type invariant `ptr` is our live `Vmalloc` allocation of `layout`.
            unsafe { Vmalloc::free(self.ptr, layout) };
        }
    }
}
