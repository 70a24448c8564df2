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

mod coalesced_mmio_buffer;
mod coalesced_mmio_logic;

// The buffers' entry points, which kvm_main.c calls like the four below.
pub use coalesced_mmio_buffer::{
    kvm_coalesced_mmio_buffer_init, kvm_vm_ioctl_create_coalesced_mmio_buffer,
    kvm_vm_ioctl_register_coalesced_mmio2, kvm_vm_ioctl_unregister_coalesced_mmio2,
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

use coalesced_mmio_logic::{access_inside, next_insert, zone_contains};
use kernel::{error::from_result, ffi::c_int, prelude::*, static_lock_class};
use kvm::{
    bindings,
    coalesced::{self, RingGuard, Zone, ENTRY_DATA, VM_RING},
    eopnotsupp,
    iodev::{IoDevice, IoDeviceOps, IoRange},
    Bus, Vm,
};

/// The device behind a registered zone; its range and VM live in the [`IoDevice`] around it.
struct CoalescedZone;

/// Whether a `len`-byte access at `addr` lies wholly inside `zone`.
fn in_range(zone: &IoRange, addr: u64, len: i32) -> bool {
    zone_contains(zone.addr, zone.size, addr, len)
}

/// The `pio` value of ring entries and zones on `bus`.
fn pio_flag(bus: Bus) -> u32 {
    match bus {
        Bus::Mmio => 0,
        Bus::Pio => 1,
    }
}

#[vtable]
impl IoDeviceOps for CoalescedZone {
    /// An entry holds at most 8 bytes, as many as KVM's accesses have. Refusing longer ones
    /// before the callback's length becomes a slice costs nothing (the same compare rejects a
    /// negative length) and lets the compiler drop `fill()`'s own check of that bound.
    const MAX_ACCESS: usize = ENTRY_DATA;

    /// Appends the write to the ring instead of exiting to userspace. `EOPNOTSUPP` makes it an
    /// ordinary MMIO or PIO exit: when it is not wholly inside the zone, when the ring is full,
    /// or when userspace has corrupted `last`.
    ///
    /// `#[inline]`, so that the C callback the abstraction builds for this type contains the
    /// whole write path instead of tail-calling into it.
    #[inline]
    fn write(dev: &IoDevice<Self>, addr: u64, data: &[u8]) -> Result {
        let zone = dev.range();
        if !access_inside(zone.addr, zone.size, addr, data.len()) {
            return Err(eopnotsupp());
        }

        append(
            &mut dev.vm().lock_coalesced_ring(),
            addr,
            data,
            pio_flag(zone.bus),
        )
    }
}

/// Appends a write to the ring whose lock `ring` holds; `EOPNOTSUPP` when it is full or userspace
/// has corrupted `last`.
#[inline(always)]
fn append(ring: &mut RingGuard<'_>, addr: u64, data: &[u8], pio: u32) -> Result {
    // Each index is read once: userspace may rewrite both at any time, and only the checked
    // snapshot of `last` is used as an index (CVE-2019-14821).
    let last = ring.last();
    let Some(insert) = next_insert(ring.first(), last, ring.entries()) else {
        return Err(eopnotsupp());
    };

    // Copy the data in the first free entry of the ring, then move `last`; publishing issues
    // smp_wmb() first, so the VMM never sees `last` ahead of the entry.
    ring.fill(insert.slot, addr, data, pio)
        .map_err(|_| eopnotsupp())?;
    ring.publish_last(insert.next_last);
    Ok(())
}

/// The bus a zone goes on: its `pio` field must be 0 (MMIO) or 1 (PIO).
fn zone_bus(zone: &Zone) -> Result<Bus> {
    match zone.pio {
        0 => Ok(Bus::Mmio),
        1 => Ok(Bus::Pio),
        _ => Err(EINVAL),
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

/// Puts a device for `zone` on its bus, writing to the ring `owner` with `data`.
fn add_zone<T: IoDeviceOps>(vm: &Vm, zone: &Zone, owner: usize, data: T) -> Result {
    let range = IoRange {
        bus: zone_bus(zone)?,
        addr: zone.addr,
        size: zone.size,
    };
    let dev = IoDevice::alloc(vm, range, owner, data)?;
    vm.lock_slots().register_coalesced_zone(dev)
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

/// Unregisters the zones of the same bus as `request` that contain its range and write to the
/// ring `owner`.
fn unregister_ring_zones(vm: &Vm, request: Zone, owner: usize) -> Result {
    let bus = zone_bus(&request)?;
    // The C passes the u32 size where an int is expected: 2^31 and above turn negative and
    // match no zone.
    let len = request.size as i32;
    vm.lock_slots()
        .unregister_coalesced_zones(|zone, zone_owner| {
            zone_owner == owner && zone.bus == bus && in_range(zone, request.addr, len)
        });
    // Ignore the result of kvm_io_bus_unregister_dev(): from userspace's perspective, the
    // coalesced MMIO is most definitely unregistered.
    Ok(())
}
