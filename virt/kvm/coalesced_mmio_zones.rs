// SPDX-License-Identifier: GPL-2.0

//! Zones and the rings they append to: what the VM's ring (`coalesced_mmio_rust.rs`) and the
//! coalesced MMIO buffers (`coalesced_mmio_buffer.rs`) share.
//!
//! A zone is a range of one bus whose writes go to one ring, which the zone's owner names:
//! [`VM_RING`] for the VM's ring, the buffer's address for a buffer. Registering puts a device for
//! the zone on its bus; unregistering removes every zone of one owner and one bus inside the
//! requested range. A write inside a zone is appended to its ring under that ring's lock.

use crate::{
    coalesced_mmio_logic::{next_insert, zone_contains},
    kvm::{
        coalesced::{RingGuard, Zone},
        iodev::{IoDevice, IoDeviceOps, IoRange, NotTaken},
        Bus, Vm,
    },
};
use kernel::prelude::*;

pub(crate) use crate::kvm::coalesced::VM_RING;

/// The bus a zone goes on: its `pio` field must be 0 (MMIO) or 1 (PIO).
pub(crate) fn zone_bus(zone: &Zone) -> Result<Bus> {
    match zone.pio {
        0 => Ok(Bus::Mmio),
        1 => Ok(Bus::Pio),
        _ => Err(EINVAL),
    }
}

/// The `pio` value of ring entries and zones on `bus`.
pub(crate) fn pio_flag(bus: Bus) -> u32 {
    match bus {
        Bus::Mmio => 0,
        Bus::Pio => 1,
    }
}

/// Appends a write to the ring whose lock `ring` holds; [`NotTaken`] (an exit) when it is full
/// or userspace has corrupted `last`.
#[inline(always)]
pub(crate) fn append<T>(
    ring: &mut RingGuard<'_, T>,
    addr: u64,
    data: &[u8],
    pio: u32,
) -> Result<(), NotTaken> {
    // Each index is read once: userspace may rewrite both at any time, and only the checked
    // snapshot of `last` is used as an index (CVE-2019-14821).
    let last = ring.last();
    let Some(insert) = next_insert(ring.first(), last, ring.entries()) else {
        return Err(NotTaken);
    };

    // Copy the data in the first free entry of the ring, then move `last`; publishing issues
    // smp_wmb() first, so the VMM never sees `last` ahead of the entry.
    ring.fill(insert.slot, addr, data, pio)
        .map_err(|_| NotTaken)?;
    ring.publish_last(insert.next_last);
    Ok(())
}

/// Puts a device for `zone` on its bus, writing to the ring `owner` with `data`.
pub(crate) fn add_zone<T: IoDeviceOps>(vm: &Vm, zone: &Zone, owner: usize, data: T) -> Result {
    let range = IoRange {
        bus: zone_bus(zone)?,
        addr: zone.addr,
        size: zone.size,
    };
    let dev = IoDevice::alloc(vm, range, owner, data)?;
    vm.lock_slots().register_coalesced_zone(dev)
}

/// Unregisters the zones of the same bus as `request` that contain its range and write to the
/// ring `owner`.
pub(crate) fn unregister_ring_zones(vm: &Vm, request: Zone, owner: usize) -> Result {
    let bus = zone_bus(&request)?;
    // The C passes the u32 size where an int is expected: 2^31 and above turn negative and
    // match no zone.
    let len = request.size as i32;
    vm.lock_slots()
        .unregister_coalesced_zones(|zone, zone_owner| {
            zone_owner == owner
                && zone.bus == bus
                && zone_contains(zone.addr, zone.size, request.addr, len)
        });
    // Ignore the result of kvm_io_bus_unregister_dev(): from userspace's perspective, the
    // coalesced MMIO is most definitely unregistered.
    Ok(())
}
