// SPDX-License-Identifier: GPL-2.0

//! KVM coalesced MMIO and PIO, in Rust.
//!
//! The same job as `coalesced_mmio.c`, chosen instead of it by `CONFIG_KVM_COALESCED_MMIO_RUST`.
//! A zone is a guest-physical (MMIO) or port (PIO) range whose writes need not reach the VMM at
//! once: KVM appends each one to a ring page shared with the VMM and resumes the guest, and the
//! VMM replays the ring before it handles its next exit.
//!
//! `kvm_main.c` calls the four functions declared in `coalesced_mmio.h`; they are the only
//! `unsafe` code here. Locking, as in C: `kvm->slots_lock` guards the zone list and the buses,
//! `kvm->ring_lock` serialises the vCPUs that append to the ring.
//!
//! Beyond C, zones can write to rings of their own, coalesced MMIO buffers: see
//! `coalesced_mmio_buffer.rs`.
//!
//! The abstractions over `struct kvm` and its buses live beside this file, in `rust/`, and
//! are compiled into `kvm.ko` with it.

#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
mod coalesced_mmio_buffer;
mod coalesced_mmio_logic;
mod coalesced_mmio_zones;

// The buffers' entry points, which kvm_main.c calls like the four below.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub use coalesced_mmio_buffer::{
    kvm_coalesced_mmio_buffer_init, kvm_coalesced_mmio_buffer_max_entries,
    kvm_vm_ioctl_create_coalesced_mmio_buffer, kvm_vm_ioctl_register_coalesced_mmio2,
    kvm_vm_ioctl_unregister_coalesced_mmio2,
};
#[path = "rust/mod.rs"]
mod kvm;

/// The module that `#[vtable]` impls name as their owner (`module!` makes it for a Rust module;
/// `kvm.ko` is a C module with Rust objects). A 7.2 `#[vtable]` has no owner.
#[cfg(not(kernel_vtable_without_owner))]
struct LocalModule;

#[cfg(not(kernel_vtable_without_owner))]
impl kernel::ModuleMetadata for LocalModule {
    const NAME: &'static kernel::str::CStr = c"kvm";
    const THIS_MODULE: kernel::ThisModule = kvm::this_module();
}

use coalesced_mmio_logic::access_inside;
use coalesced_mmio_zones::{add_zone, append, pio_flag, unregister_ring_zones, VM_RING};
use kernel::{error::from_result, ffi::c_int, prelude::*, static_lock_class};
use kvm::{
    bindings,
    coalesced::{self, Zone, ENTRY_DATA},
    iodev::{IoDevice, IoDeviceOps, NotTaken},
    Vm,
};

/// The device behind a registered zone; its range and VM live in the [`IoDevice`] around it.
struct CoalescedZone;

#[vtable]
impl IoDeviceOps for CoalescedZone {
    /// An entry holds at most 8 bytes, as many as KVM's accesses have. Refusing longer ones
    /// before the callback's length becomes a slice costs nothing (the same compare rejects a
    /// negative length) and lets the compiler drop `fill()`'s own check of that bound.
    const MAX_ACCESS: usize = ENTRY_DATA;

    /// Appends the write to the ring instead of exiting to userspace. [`NotTaken`] makes it an
    /// ordinary MMIO or PIO exit: when it is not wholly inside the zone, when the ring is full,
    /// or when userspace has corrupted `last`.
    ///
    /// `#[inline]`, so that the C callback the abstraction builds for this type contains the
    /// whole write path instead of tail-calling into it.
    #[inline]
    fn write(dev: &IoDevice<Self>, addr: u64, data: &[u8]) -> Result<(), NotTaken> {
        let zone = dev.range();
        if !access_inside(zone.addr, zone.size, addr, data.len()) {
            return Err(NotTaken);
        }

        append(
            &mut dev.vm().lock_coalesced_ring(),
            addr,
            data,
            pio_flag(zone.bus),
        )
    }
}

/// Sets up a new VM's ring page, ring lock and zone list.
///
/// # Safety
///
/// `kvm` must point to a VM that `kvm_create_vm()` is creating and no other thread can reach
/// yet; called once for it.
#[no_mangle]
pub unsafe extern "C" fn kvm_coalesced_mmio_init(kvm: *mut bindings::kvm) -> c_int {
    // We're using this spinlock to sync access to the coalesced ring. The list doesn't need its
    // own lock since device registration and unregistration only happen under slots_lock.
    //
    // SAFETY: the caller guarantees a VM under construction, seen by no one else, and calls
    // this once for it.
    let ret = unsafe { coalesced::init_vm(kvm, c"&kvm->ring_lock", static_lock_class!()) };
    from_result(|| ret.map(|()| 0))
}

/// Frees a VM's ring page.
///
/// # Safety
///
/// `kvm` must point to a VM that is being destroyed, whose buses (and so all its zones) are
/// gone; called once for it.
#[no_mangle]
pub unsafe extern "C" fn kvm_coalesced_mmio_free(kvm: *mut bindings::kvm) {
    // SAFETY: the caller guarantees a VM being torn down, whose ring no one uses any more.
    unsafe { coalesced::free_vm(kvm) }
}

/// `KVM_REGISTER_COALESCED_MMIO`: starts coalescing writes to `zone`.
///
/// # Safety
///
/// `kvm` must point to a live VM and `zone` to a zone readable for the whole call, as
/// `kvm_vm_ioctl()` passes them.
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_register_coalesced_mmio(
    kvm: *mut bindings::kvm,
    zone: *mut bindings::kvm_coalesced_mmio_zone,
) -> c_int {
    // SAFETY: the caller guarantees a live VM and a readable zone.
    let (vm, zone) = unsafe { (Vm::from_raw(kvm), Zone::read_raw(zone)) };
    from_result(|| register_zone(vm, zone).map(|()| 0))
}

fn register_zone(vm: &Vm, zone: Zone) -> Result {
    add_zone(vm, &zone, VM_RING, CoalescedZone)
}

/// `KVM_UNREGISTER_COALESCED_MMIO`: stops coalescing every zone of the same kind (MMIO or PIO)
/// that contains the requested range and writes to the VM's ring.
///
/// # Safety
///
/// As for [`kvm_vm_ioctl_register_coalesced_mmio`].
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_unregister_coalesced_mmio(
    kvm: *mut bindings::kvm,
    zone: *mut bindings::kvm_coalesced_mmio_zone,
) -> c_int {
    // SAFETY: the caller guarantees a live VM and a readable zone.
    let (vm, zone) = unsafe { (Vm::from_raw(kvm), Zone::read_raw(zone)) };
    from_result(|| unregister_zones(vm, zone).map(|()| 0))
}

fn unregister_zones(vm: &Vm, request: Zone) -> Result {
    unregister_ring_zones(vm, request, VM_RING)
}

// The signatures `coalesced_mmio.h` declares for the four functions above.
kvm::c_entry_points!(
    kvm_coalesced_mmio_init,
    kvm_coalesced_mmio_free,
    kvm_vm_ioctl_register_coalesced_mmio,
    kvm_vm_ioctl_unregister_coalesced_mmio,
);
