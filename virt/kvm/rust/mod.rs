// SPDX-License-Identifier: GPL-2.0

//! Kernel-based Virtual Machine: the parts of a VM that KVM code written in Rust uses.
//!
//! C header: [`include/linux/kvm_host.h`](srctree/include/linux/kvm_host.h)
//!
//! These abstractions are compiled into `kvm.ko`, not into the kernel crate: KVM is a module,
//! and a `kvm.ko` built out of tree for a distribution's kernel finds a kernel crate that knows
//! nothing of KVM. Keeping them here lets the same sources serve both builds, and means nothing
//! in vmlinux refers to a symbol of `kvm.ko`. See `Documentation/virt/kvm/coalesced-mmio-rust.rst`.

// Only coalesced MMIO buffers have files and pages of their own.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub(crate) mod anon_file;
pub(crate) mod coalesced;
pub(crate) mod iodev;
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub(crate) mod shared_pages;

/// The C declarations this module uses: the kernel crate's bindings and KVM's, which kvm.ko's
/// build generates for it (`Makefile.bindings`), in tree and out of tree alike.
pub(crate) mod bindings;

/// Checks at compile time that each named function of ours has the signature of its declaration
/// in `virt/kvm/coalesced_mmio.h`, which `kvm_main.c` calls it by: the check the kernel crate's
/// `#[export]` makes, against kvm.ko's bindings, where that header is, rather than the kernel
/// crate's, where it is not. Both arms of the `if` must have one type: the function pointer type
/// of the declaration.
macro_rules! c_entry_points {
    ($($name:ident),* $(,)?) => {
        $(
            const _: () = {
                if true {
                    $crate::kvm::bindings::$name
                } else {
                    $name
                };
            };
        )*
    };
}
pub(crate) use c_entry_points;

use core::ptr::NonNull;
use kernel::{
    sync::{aref::AlwaysRefCounted, Mutex, MutexGuard},
    types::Opaque,
    ThisModule,
};

/// `THIS_MODULE` of `kvm.ko`, which is a C module: no `module!` makes one for its Rust code.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub(crate) static THIS_MODULE: ThisModule = this_module();

/// Makes [`THIS_MODULE`]; a `const fn` for what needs it as a constant.
pub(crate) const fn this_module() -> ThisModule {
    #[cfg(MODULE)]
    // SAFETY: `__this_module` is the module that this code is linked into.
    unsafe {
        ThisModule::from_ptr((&raw const bindings::__this_module).cast_mut())
    }
    #[cfg(not(MODULE))]
    // SAFETY: built into the kernel, code has no module: `THIS_MODULE` is null, as in C.
    unsafe {
        ThisModule::from_ptr(core::ptr::null_mut())
    }
}

/// `smp_wmb()`: orders the stores before it before those after it, as seen by other CPUs (and so
/// by the VMM).
#[inline(always)]
pub(crate) fn smp_wmb() {
    #[cfg(not(kernel_barrier_functions))]
    kernel::sync::barrier::smp_mb(kernel::sync::barrier::Write);
    // A 7.2 kernel crate has one function per barrier.
    #[cfg(kernel_barrier_functions)]
    kernel::sync::barrier::smp_wmb();
}

/// One of KVM's I/O buses, on which in-kernel devices claim guest accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bus {
    /// Memory-mapped I/O (`KVM_MMIO_BUS`).
    Mmio,
    /// x86 I/O ports (`KVM_PIO_BUS`).
    Pio,
}

impl Bus {
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
/// buses and coalesced ring page exist) and that is not destroyed while the reference lives.
#[repr(transparent)]
pub(crate) struct Vm(Opaque<bindings::kvm>);

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
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::kvm) -> &'a Self {
        // SAFETY: `Vm` is `repr(transparent)` over `Opaque<struct kvm>`, which has the layout of
        // `struct kvm`; the caller guarantees the VM is valid and initialised for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw `struct kvm` pointer.
    pub(crate) fn as_raw(&self) -> *mut bindings::kvm {
        self.0.get()
    }

    /// Takes `kvm->slots_lock`, the mutex that serialises changes to memslots and I/O buses.
    ///
    /// The lock is released when the returned guard is dropped. This may sleep.
    pub(crate) fn lock_slots(&self) -> SlotsGuard<'_> {
        // SAFETY: by the type invariant `kvm_create_vm()` initialised `slots_lock`, which lives
        // as long as the VM and so as long as `self`.
        let slots_lock = unsafe { Mutex::from_raw(&raw mut (*self.as_raw()).slots_lock) };
        SlotsGuard {
            vm: self,
            _guard: slots_lock.lock(),
        }
    }
}

// SAFETY: `kvm_get_kvm()` and `kvm_put_kvm()` are the VM's reference count: the VM is destroyed
// (and its memory freed) only when the last reference is put.
unsafe impl AlwaysRefCounted for Vm {
    fn inc_ref(&self) {
        // SAFETY: `self` is a live VM, so it has a reference that ours is added to.
        unsafe { bindings::kvm_get_kvm(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller owns a reference taken by `inc_ref` and gives it up. This may
        // destroy the VM, so it must not be called with one of the VM's own locks held.
        unsafe { bindings::kvm_put_kvm(obj.as_ptr().cast()) };
    }
}

/// Proof that the current thread holds `kvm->slots_lock`, which is released when it is dropped.
pub(crate) struct SlotsGuard<'a> {
    vm: &'a Vm,
    _guard: MutexGuard<'a, ()>,
}

impl<'a> SlotsGuard<'a> {
    /// The VM whose `slots_lock` is held.
    pub(crate) fn vm(&self) -> &'a Vm {
        self.vm
    }
}
