// SPDX-License-Identifier: GPL-2.0

//! Kernel-based Virtual Machine: the parts of a VM that KVM code written in Rust uses.
//!
//! C header: [`include/linux/kvm_host.h`](srctree/include/linux/kvm_host.h)
//!
//! KVM is normally a module (`kvm.ko`) while this crate is built into vmlinux. Every function here
//! that reaches a symbol of `kvm.ko` is therefore `#[inline]` or generic, so that it is
//! instantiated only in the KVM object that calls it and vmlinux never refers to KVM's symbols.

pub mod coalesced;
pub mod iodev;

use crate::{bindings, types::Opaque};
use core::{marker::PhantomData, ptr::addr_of_mut};

/// One of KVM's I/O buses, on which in-kernel devices claim guest accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// Memory-mapped I/O (`KVM_MMIO_BUS`).
    Mmio,
    /// x86 I/O ports (`KVM_PIO_BUS`).
    Pio,
}

impl Bus {
    #[inline]
    fn as_raw(self) -> bindings::kvm_bus {
        match self {
            Bus::Mmio => bindings::kvm_bus_KVM_MMIO_BUS,
            Bus::Pio => bindings::kvm_bus_KVM_PIO_BUS,
        }
    }
}

/// A virtual machine, `struct kvm`.
///
/// # Invariants
///
/// A `&Vm` refers to a `struct kvm` that `kvm_create_vm()` has finished initialising (its locks,
/// buses and, with `CONFIG_KVM_MMIO`, its coalesced ring page exist) and that is not destroyed
/// while the reference lives.
#[repr(transparent)]
pub struct Vm(Opaque<bindings::kvm>);

// SAFETY: KVM uses a `struct kvm` from many threads at once (every vCPU and every VM ioctl); the
// state this abstraction touches is guarded by the VM's own locks or accessed atomically.
unsafe impl Sync for Vm {}

// SAFETY: a `Vm` is only ever reached by reference; the VM it names is not tied to a thread.
unsafe impl Send for Vm {}

impl Vm {
    /// Borrows the VM behind a raw pointer that C code passed in.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a `struct kvm` that `kvm_create_vm()` has finished initialising and that
    /// stays alive for `'a`, as is the case for the VM an ioctl or a device callback runs for.
    #[inline]
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::kvm) -> &'a Self {
        // SAFETY: `Vm` is `repr(transparent)` over `Opaque<struct kvm>`, which has the layout of
        // `struct kvm`; the caller guarantees the VM is valid and initialised for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw `struct kvm` pointer.
    #[inline]
    pub fn as_raw(&self) -> *mut bindings::kvm {
        self.0.get()
    }

    /// Takes `kvm->slots_lock`, the mutex that serialises changes to memslots and I/O buses.
    ///
    /// The lock is released when the returned guard is dropped. This may sleep.
    #[inline]
    pub fn lock_slots(&self) -> SlotsGuard<'_> {
        // SAFETY: by the type invariant the VM is valid and `kvm_create_vm()` initialised its
        // `slots_lock`.
        unsafe { bindings::mutex_lock(addr_of_mut!((*self.as_raw()).slots_lock)) };
        // INVARIANT: this thread took `slots_lock` just above.
        SlotsGuard {
            vm: self,
            _not_send: PhantomData,
        }
    }
}

/// Proof that the current thread holds `kvm->slots_lock`; releases it when dropped.
///
/// # Invariants
///
/// The thread that owns the guard holds `vm`'s `slots_lock`. The guard cannot move to another
/// thread, because a mutex must be released by the thread that took it.
pub struct SlotsGuard<'a> {
    vm: &'a Vm,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> SlotsGuard<'a> {
    /// The VM whose `slots_lock` is held.
    #[inline]
    pub fn vm(&self) -> &'a Vm {
        self.vm
    }
}

impl Drop for SlotsGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: by the type invariant this thread holds `slots_lock` of a valid VM.
        unsafe { bindings::mutex_unlock(addr_of_mut!((*self.vm.as_raw()).slots_lock)) };
    }
}
