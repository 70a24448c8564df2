// SPDX-License-Identifier: GPL-2.0

//! Files without an inode of their own, `anon_inode_getfile()`, whose operations are Rust.
//!
//! C header: [`include/linux/anon_inodes.h`](srctree/include/linux/anon_inodes.h)
//!
//! KVM hands out its VMs, vCPUs and devices as such files. A type implements [`AnonFileOps`]
//! for the operations it supports, and a `static` [`AnonFileType`] of it holds the C
//! `file_operations` table, built once at compile time; files made with it carry their data as
//! `private_data`, and [`AnonFileType::data`] recognises them by that table's address.
//!
//! An open file keeps its table's `owner` module loaded. That must be every module the file's
//! operations can call into, which is not always the module holding the table: a KVM file that
//! holds a VM reaches the vendor module (`kvm-amd`, `kvm-intel`) when it drops the VM, so KVM's
//! own files take the module passed to `kvm_init()` as their owner. [`AnonFileType::set_owner`]
//! does the same for ours.

use super::bindings;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    build_error,
    error::{from_err_ptr, VTABLE_DEFAULT_ERROR},
    ffi::c_int,
    fs::{File, LocalFile},
    mm::virt::VmaNew,
    prelude::*,
    sync::{aref::ARef, poll::PollTable},
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

/// The operations of a kind of anonymous file whose private data is a [`Self::Ptr`].
#[vtable]
pub(crate) trait AnonFileOps: Sized {
    /// What the file owns: given when the file is made, dropped when it is released.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called once, when the last reference to the file is gone: every file descriptor is
    /// closed and every mapping of the file is unmapped.
    fn release(data: Self::Ptr, _file: &File) {
        drop(data);
    }

    /// Sets up a new mapping of the file.
    fn mmap(
        _data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _vma: &VmaNew,
    ) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Registers the caller's wait in `table` and returns the events ready now (`EPOLL*`).
    fn poll(
        _data: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _table: PollTable<'_>,
    ) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The C operations table of anonymous files with operations `T`; declare one `static` per `T`.
pub(crate) struct AnonFileType<T> {
    /// Written only by [`Self::set_owner`], before any file of this type exists; read by the
    /// kernel for every file.
    ops: Opaque<bindings::file_operations>,
    _ops: PhantomData<T>,
}

// SAFETY: the table is written only by `set_owner`, whose callers guarantee that nothing else
// uses it meanwhile; otherwise the kernel only reads it.
unsafe impl<T> Sync for AnonFileType<T> {}

impl<T: AnonFileOps> AnonFileType<T> {
    /// Builds the operations table; its files keep `owner` loaded until [`Self::set_owner`]
    /// names another module.
    pub(crate) const fn new(owner: &'static ThisModule) -> Self {
        AnonFileType {
            ops: Opaque::new(bindings::file_operations {
                owner: owner.as_ptr(),
                release: Some(Self::release_callback),
                mmap: if T::HAS_MMAP {
                    Some(Self::mmap_callback)
                } else {
                    None
                },
                poll: if T::HAS_POLL {
                    Some(Self::poll_callback)
                } else {
                    None
                },
                // Every other member is an optional function pointer, a pointer or a plain
                // integer, for which all zeroes means "none".
                ..pin_init::zeroed()
            }),
            _ops: PhantomData,
        }
    }

    /// Makes `owner` the module that files of this type made from now on keep loaded, as
    /// `kvm_init()` does with `kvm_vm_fops.owner`.
    ///
    /// # Safety
    ///
    /// `owner` must be a live module (or null, for code built into the kernel). No file of this
    /// type may exist, and no other thread may use `self` during the call: each file took a
    /// reference to the owner the table named when it was made, and `__fput()` gives it back to
    /// the owner the table names at release. Call it from the initialisation that makes files of
    /// this type reachable, before they are.
    pub(crate) unsafe fn set_owner(&'static self, owner: *mut bindings::module) {
        // SAFETY: `ops` is a valid table; the caller guarantees that nothing reads or writes it
        // meanwhile, and that no file holds a reference to the module it names now.
        unsafe { (*self.ops.get()).owner = owner };
    }

    /// Makes a new file of this type owning `data`, opened with `flags` (`O_*`). On failure
    /// `data` is dropped. The caller installs the file in a descriptor, or drops it, which
    /// releases it.
    pub(crate) fn create_file(
        &'static self,
        name: &CStr,
        data: T::Ptr,
        flags: u32,
    ) -> Result<ARef<File>> {
        let data = data.into_foreign();
        // SAFETY: `name` is a valid C string for the call; `self.ops` lives for ever. The new
        // file owns `data`, which `release_callback` takes back. `anon_inode_getfile()` takes a
        // reference to the table's owner for the file, or fails if that module is going away.
        let file = unsafe {
            bindings::anon_inode_getfile(name.as_char_ptr(), self.ops.get(), data, flags as c_int)
        };
        match from_err_ptr(file) {
            // SAFETY: `anon_inode_getfile()` returned a new file with one reference, which is
            // ours and which the `ARef` takes over; the file is not in any descriptor table, so
            // no `fdget_pos` region can be open on it.
            Ok(file) => Ok(unsafe { ARef::from_raw(NonNull::from(File::from_raw_file(file))) }),
            Err(e) => {
                // SAFETY: no file was made, so `data` from `into_foreign` above is still ours.
                drop(unsafe { T::Ptr::from_foreign(data) });
                Err(e)
            }
        }
    }

    /// The data of `file` if it is a file of this type, or `None` for any other file.
    pub(crate) fn data<'a>(
        &'static self,
        file: &'a LocalFile,
    ) -> Option<<T::Ptr as ForeignOwnable>::Borrowed<'a>> {
        let raw = file.as_ptr();
        // SAFETY: `file` is a valid file, whose `f_op` is set when it is made and never changes.
        if !core::ptr::eq(unsafe { (*raw).f_op }, self.ops.get()) {
            return None;
        }
        // SAFETY: the file is ours, so `private_data` came from `into_foreign` in `create_file`,
        // and it is only taken back by `release_callback`, which cannot run while `file` is
        // borrowed: the caller's reference keeps the file alive for `'a`.
        Some(unsafe { T::Ptr::borrow((*raw).private_data) })
    }

    /// # Safety
    ///
    /// `file` must be a file of this type being released (its last reference is gone).
    unsafe extern "C" fn release_callback(
        _inode: *mut bindings::inode,
        file: *mut bindings::file,
    ) -> c_int {
        // SAFETY: the file is ours, so `private_data` came from `into_foreign`; release is the
        // last call for the file, so the data is ours again.
        let data = unsafe { T::Ptr::from_foreign((*file).private_data) };
        // SAFETY: the file is valid for the duration of this call, and a file being released has
        // no `fdget_pos` region open.
        T::release(data, unsafe { File::from_raw_file(file) });
        0
    }

    /// # Safety
    ///
    /// `file` must be a live file of this type and `vma` a mapping of it being set up in its
    /// `->mmap()` hook.
    unsafe extern "C" fn mmap_callback(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: the file is live, so its data is, and only `release_callback` takes it back.
        let data = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: the caller guarantees a vma being set up by `->mmap()`.
        let vma = unsafe { VmaNew::from_raw(vma) };
        // SAFETY: the file is valid during the call; mmap has no `fdget_pos` region open.
        let file = unsafe { File::from_raw_file(file) };
        match T::mmap(data, file, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `file` must be a live file of this type and `table` null or a valid poll table, as
    /// `vfs_poll()` passes them.
    unsafe extern "C" fn poll_callback(
        file: *mut bindings::file,
        table: *mut bindings::poll_table,
    ) -> bindings::__poll_t {
        // SAFETY: as in `mmap_callback`.
        let data = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: the caller guarantees the table, which lives for the duration of the call.
        let table = unsafe { PollTable::from_raw(table) };
        // SAFETY: the file is valid during the call; poll has no `fdget_pos` region open.
        let file = unsafe { File::from_raw_file(file) };
        T::poll(data, file, table)
    }
}
