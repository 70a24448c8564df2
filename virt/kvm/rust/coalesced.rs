// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO and PIO: the ring page a VM shares with userspace, and the VM's zone list.
//!
//! C headers: [`include/uapi/linux/kvm.h`](srctree/include/uapi/linux/kvm.h),
//! [`include/linux/kvm_host.h`](srctree/include/linux/kvm_host.h)
//!
//! A ring (the VM's page, or a coalesced MMIO buffer's pages) is mapped writable into the VMM,
//! which may store anything into it at any moment. No Rust reference to it is ever formed. The two
//! indices, which both sides write, are only accessed as [`Atomic`]s (`READ_ONCE`/`WRITE_ONCE` in
//! C), and only a bounds-checked snapshot of `last` is used as an index; the entries are written
//! under the ring's lock (`kvm->ring_lock` for the VM's ring), as in C.

use super::{
    bindings,
    iodev::{Header, IoDeviceOps, IoRange, NewIoDevice},
    smp_wmb, SlotsGuard, Vm,
};
use crate::coalesced_mmio_logic::zones_overlap;
use core::{marker::PhantomData, ops::ControlFlow, pin::Pin};
use kernel::{
    error::{
        code::{EEXIST, ENOMEM},
        to_result,
    },
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        lock::{spinlock::SpinLockBackend, Backend},
        LockClassKey, SpinLock, SpinLockGuard,
    },
    types::Opaque,
};

/// Number of entries in the ring, `KVM_COALESCED_MMIO_MAX`: 170 with 4 KiB pages.
const RING_ENTRIES: u32 = bindings::KVM_COALESCED_MMIO_MAX as u32;
const _: () = assert!(bindings::KVM_COALESCED_MMIO_MAX <= u32::MAX as usize);

/// Bytes of data one ring entry holds (`kvm_coalesced_mmio.data`).
pub(crate) const ENTRY_DATA: usize = 8;

/// Bytes of the ring's header (`first`, `last`) and of one entry: what sizes a buffer's ring.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub(crate) const RING_HEADER_BYTES: usize =
    core::mem::size_of::<bindings::kvm_coalesced_mmio_ring>();
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
pub(crate) const RING_ENTRY_BYTES: usize = core::mem::size_of::<bindings::kvm_coalesced_mmio>();

/// The owner of the VM's own ring, in [`IoRange`]-matching walks of the zone list: zones on a
/// coalesced MMIO buffer carry the buffer's address instead.
pub(crate) const VM_RING: usize = 0;

/// A zone as userspace passes it to `KVM_(UN)REGISTER_COALESCED_MMIO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Zone {
    /// First guest-physical address (MMIO) or port (PIO).
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) size: u32,
    /// 1 for a zone of I/O ports, 0 for MMIO; userspace may pass anything here.
    pub(crate) pio: u32,
}

impl Zone {
    /// Reads the zone that a VM ioctl copied from userspace.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reading a `struct kvm_coalesced_mmio_zone`.
    pub(crate) unsafe fn read_raw(ptr: *const bindings::kvm_coalesced_mmio_zone) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for reads; the struct is plain data.
        let zone = unsafe { ptr.read() };
        Zone {
            addr: zone.addr,
            size: zone.size,
            // SAFETY: `pad` and `pio` are the two `u32` members of one union (`pad` is the name
            // from before coalesced PIO), so reading `pio` reads those four bytes either way.
            pio: unsafe { zone.__bindgen_anon_1.pio },
        }
    }
}

/// A zone as userspace passes it to `KVM_(UN)REGISTER_COALESCED_MMIO2`: a [`Zone`], the file
/// descriptor of the coalesced MMIO buffer it writes to, and flags.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BufferZone {
    pub(crate) zone: Zone,
    /// Any value at all: userspace's word that it is a buffer's file descriptor.
    pub(crate) buffer_fd: u32,
    /// None are defined: anything but 0 is refused.
    pub(crate) flags: u32,
}

#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
impl BufferZone {
    /// Reads the zone that a VM ioctl copied from userspace.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reading a `struct kvm_coalesced_mmio_zone2`.
    pub(crate) unsafe fn read_raw(ptr: *const bindings::kvm_coalesced_mmio_zone2) -> Self {
        // SAFETY: the caller guarantees `ptr` is valid for reads; the struct is plain data.
        let zone = unsafe { ptr.read() };
        BufferZone {
            zone: Zone {
                addr: zone.addr,
                size: zone.size,
                pio: zone.pio,
            },
            buffer_fd: zone.buffer_fd,
            flags: zone.flags,
        }
    }
}

// The UAPI structs of the buffers have no implicit padding, so they have the same layout for a
// 32-bit VMM as for a 64-bit one, and every byte is one that userspace wrote.
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
const _: () = assert!(core::mem::size_of::<bindings::kvm_coalesced_mmio_zone2>() == 24);
#[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
const _: () = assert!(core::mem::size_of::<bindings::kvm_coalesced_mmio_buffer>() == 32);

/// Sets up a new VM's coalesced MMIO state: its ring page, `ring_lock` and zone list.
///
/// The ring is one zeroed page charged to the VM's memory cgroup. It comes from the page
/// allocator in the direct map because `kvm_main.c` maps it into userspace with
/// `virt_to_page()`.
///
/// # Safety
///
/// `kvm` must point to a VM that `kvm_create_vm()` is creating and that no other thread can
/// reach yet; this must be called once for it, before any other function of this module.
pub(crate) unsafe fn init_vm(
    kvm: *mut bindings::kvm,
    lock_name: &'static CStr,
    lock_key: Pin<&'static LockClassKey>,
) -> Result {
    // SAFETY: plain page allocation; order 0 and these flags are valid for any caller that may
    // sleep, which VM creation may.
    let page = unsafe {
        bindings::__get_free_pages(bindings::GFP_KERNEL_ACCOUNT | bindings::__GFP_ZERO, 0)
    };
    if page == 0 {
        return Err(ENOMEM);
    }
    // SAFETY: the caller guarantees `kvm` is valid and ours alone. `ring_lock` is initialised in
    // place, where it stays for the VM's life, by the spinlock backend's own initialiser (the C
    // `spin_lock_init()`, with our name and lockdep class, which live for ever); from then on it
    // is only taken through `Lock::from_raw`.
    unsafe {
        (*kvm).coalesced_mmio_ring = page as *mut bindings::kvm_coalesced_mmio_ring;
        SpinLockBackend::init(
            &raw mut (*kvm).ring_lock,
            lock_name.as_char_ptr(),
            lock_key.as_ptr(),
        );
        bindings::INIT_LIST_HEAD(&raw mut (*kvm).coalesced_zones);
    }
    Ok(())
}

/// Frees a VM's ring page, if [`init_vm`] allocated one.
///
/// # Safety
///
/// `kvm` must point to a VM that `kvm_destroy_vm()` (or the error path of `kvm_create_vm()`) is
/// tearing down: its buses, and with them all its zones, are gone, and no one maps or uses the
/// ring any more. This must be called once.
pub(crate) unsafe fn free_vm(kvm: *mut bindings::kvm) {
    // SAFETY: the caller guarantees `kvm` is valid and no longer used by anyone else.
    let ring = unsafe { (*kvm).coalesced_mmio_ring };
    if !ring.is_null() {
        // SAFETY: `init_vm` got this order-0 page from `__get_free_pages()`, and the caller
        // guarantees nothing uses it any more.
        unsafe { bindings::free_pages(ring as usize, 0) };
    }
}

impl Vm {
    /// Takes `kvm->ring_lock`, which serialises the writers of the VM's coalesced ring.
    ///
    /// A spinlock: nothing may sleep until the guard is dropped.
    pub(crate) fn lock_coalesced_ring(&self) -> RingGuard<'_> {
        let kvm = self.as_raw();
        // SAFETY: by the type invariant of `Vm`, `init_vm` succeeded for this VM, so `ring_lock`
        // is initialised, and it lives as long as the VM.
        let ring_lock = unsafe { SpinLock::from_raw(&raw mut (*kvm).ring_lock) };
        // SAFETY: `kvm` is valid; the pointer field is written once, by `init_vm`, which
        // installed a ring page of `RING_ENTRIES` entries that lives as long as the VM.
        let ring = unsafe { RingView::from_raw((*kvm).coalesced_mmio_ring, RING_ENTRIES) };
        // SAFETY: `ring_lock` serialises the kernel's writers of the VM's ring.
        unsafe { RingGuard::new(ring_lock.lock(), ring) }
    }
}

/// A ring of coalesced writes in memory that userspace maps: a header and `entries` entries.
///
/// # Invariants
///
/// `ring` points to a `struct kvm_coalesced_mmio_ring` followed by `entries` entries, all valid
/// for reads and writes for `'a`, and `entries >= 1`.
#[derive(Clone, Copy)]
pub(crate) struct RingView<'a> {
    ring: *mut bindings::kvm_coalesced_mmio_ring,
    entries: u32,
    _memory: PhantomData<&'a ()>,
}

impl<'a> RingView<'a> {
    /// # Safety
    ///
    /// `ring` must point to memory, valid for reads and writes for `'a`, that holds a ring header
    /// and `entries` entries, `entries >= 1`; only atomic accesses and this module's writes may
    /// be made to it by the kernel.
    pub(crate) unsafe fn from_raw(
        ring: *mut bindings::kvm_coalesced_mmio_ring,
        entries: u32,
    ) -> Self {
        // INVARIANT: guaranteed by the caller.
        RingView {
            ring,
            entries,
            _memory: PhantomData,
        }
    }

    /// How many entries the ring has; one of them always stays free.
    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    /// The index userspace consumes from (`READ_ONCE(ring->first)`): any value at all.
    pub(crate) fn first(&self) -> u32 {
        // SAFETY: `ring` is valid by the type invariant and `first` is an aligned `u32`. The
        // kernel only ever accesses it atomically; the VMM's stores cannot make a `u32` invalid.
        unsafe { Atomic::from_ptr(&raw mut (*self.ring).first) }.load(Relaxed)
    }

    /// The index KVM produces at (`READ_ONCE(ring->last)`): userspace may have changed it too,
    /// so it must be bounds-checked before use.
    pub(crate) fn last(&self) -> u32 {
        // SAFETY: as in `first`.
        unsafe { Atomic::from_ptr(&raw mut (*self.ring).last) }.load(Relaxed)
    }
}

/// A coalesced ring with its writers' lock held; the lock is released when it is dropped.
///
/// Userspace owns `first` and may write any field at any time; with the lock, this guard is the
/// only kernel writer of the entries and of `last`. `T` is what else the lock guards (nothing for
/// the VM's ring).
///
/// # Invariants
///
/// `_guard` holds the lock that serialises the kernel's writers of `ring`.
pub(crate) struct RingGuard<'a, T = ()> {
    /// Held for as long as the ring is written; [`Self::locked`] reaches what else it guards.
    _guard: SpinLockGuard<'a, T>,
    ring: RingView<'a>,
}

impl<'a, T> core::ops::Deref for RingGuard<'a, T> {
    type Target = RingView<'a>;

    fn deref(&self) -> &RingView<'a> {
        &self.ring
    }
}

impl<'a, T> RingGuard<'a, T> {
    /// # Safety
    ///
    /// `guard` must hold the lock that every kernel writer of `ring` takes.
    pub(crate) unsafe fn new(guard: SpinLockGuard<'a, T>, ring: RingView<'a>) -> Self {
        // INVARIANT: guaranteed by the caller.
        RingGuard {
            _guard: guard,
            ring,
        }
    }

    /// What else the lock guards.
    #[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
    pub(crate) fn locked(&mut self) -> &mut T
    where
        T: Unpin,
    {
        &mut self._guard
    }

    /// Fills entry `slot` with a write of `data` at `addr`; `pio` is the zone's `pio` flag.
    ///
    /// Refuses with `EINVAL`, writing nothing, if `slot` is outside the ring or `data` is longer
    /// than an entry holds. Neither happens for a slot chosen with the ring's indices and an
    /// access from KVM (at most 8 bytes); the checks keep this function from ever writing
    /// outside the ring.
    pub(crate) fn fill(&mut self, slot: u32, addr: u64, data: &[u8], pio: u32) -> Result {
        if slot >= self.ring.entries || data.len() > ENTRY_DATA {
            return Err(EINVAL);
        }
        // SAFETY: `ring` is valid by `RingView`'s invariant and `slot < entries`, so the entry
        // lies inside the ring. The lock makes this the only kernel writer of the entry. The VMM
        // may write the same bytes at any moment (it reads an entry only once `last` covers it,
        // but nothing stops it from breaking that protocol), so every store is volatile: a race
        // with userspace then tears the entry userspace raced with, and nothing else. The entry's
        // `data` is 8-byte aligned (the asserts before `write_data_volatile()`) and 8 bytes long,
        // and `data.len() <= 8` was checked above.
        unsafe {
            let entry = (&raw mut (*self.ring.ring).__bindgen_anon_1.coalesced_mmio)
                .cast::<bindings::kvm_coalesced_mmio>()
                .add(slot as usize);
            (&raw mut (*entry).phys_addr).write_volatile(addr);
            (&raw mut (*entry).len).write_volatile(data.len() as u32);
            (&raw mut (*entry).__bindgen_anon_1.pio).write_volatile(pio);
            write_data_volatile((&raw mut (*entry).data).cast::<u8>(), data);
        }
        Ok(())
    }

    /// Publishes filled entries by moving `last` (`smp_wmb(); ring->last = last`).
    ///
    /// The write barrier comes first so that a VMM which sees the new `last` also sees every
    /// entry before it; the VMM pairs it with a read barrier after reading `last`.
    pub(crate) fn publish_last(&mut self, last: u32) {
        smp_wmb();
        // SAFETY: as in `RingView::first`.
        unsafe { Atomic::from_ptr(&raw mut (*self.ring.ring).last) }.store(last, Relaxed);
    }
}

// `write_data_volatile()` stores up to 8 bytes at once into an entry's `data`: the ring's header
// and its entries keep every entry's `data` 8-byte aligned in a page-aligned ring.
const _: () = assert!(core::mem::size_of::<bindings::kvm_coalesced_mmio_ring>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<bindings::kvm_coalesced_mmio>().is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(bindings::kvm_coalesced_mmio, data).is_multiple_of(8));

/// Copies `data`, at most 8 bytes, to an entry's `data` with volatile stores, as many bytes as
/// C's `memcpy()` copies there: an access of 1, 2, 4 or 8 bytes is one store of that width.
///
/// # Safety
///
/// `dst` must be the `data` member of a ring entry, 8-byte aligned and valid for writes of 8
/// bytes, and `data.len() <= 8`.
#[inline(always)]
unsafe fn write_data_volatile(dst: *mut u8, data: &[u8]) {
    // SAFETY: the caller guarantees that `dst` is valid for writes of 8 bytes and 8-byte aligned,
    // so for each arm's store of `data.len()` bytes, at most 8, of any width up to 8.
    unsafe {
        match *data {
            [a] => dst.write_volatile(a),
            [a, b] => dst.cast::<u16>().write_volatile(u16::from_ne_bytes([a, b])),
            [a, b, c, d] => dst
                .cast::<u32>()
                .write_volatile(u32::from_ne_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => dst
                .cast::<u64>()
                .write_volatile(u64::from_ne_bytes([a, b, c, d, e, f, g, h])),
            _ => {
                for (i, byte) in data.iter().enumerate() {
                    dst.add(i).write_volatile(*byte);
                }
            }
        }
    }
}

impl SlotsGuard<'_> {
    /// Puts a coalesced zone's device on its bus and appends it to the VM's zone list.
    ///
    /// On failure the device is freed and an error returned: `EEXIST` when the zone shares an
    /// address with a zone of another ring on its bus (so that a write is never coalesced into a
    /// ring other than the one its zone names, whichever ring is full), or the bus's error:
    /// `ENOMEM`, or `ENOSPC` when the bus already holds its maximum number of devices. A device
    /// made for another VM is refused with `EINVAL`.
    pub(crate) fn register_coalesced_zone<T: IoDeviceOps>(
        &mut self,
        dev: NewIoDevice<'_, T>,
    ) -> Result {
        let kvm = self.vm().as_raw();
        if dev.dev.header.vm.as_ptr() != kvm {
            return Err(EINVAL);
        }
        let range = dev.dev.header.range;
        let owner = dev.dev.header.owner;
        if self.any_coalesced_zone(|zone, zone_owner| {
            zone_owner != owner
                && zone.bus == range.bus
                && zones_overlap(zone.addr, zone.size, range.addr, range.size)
        }) {
            return Err(EEXIST);
        }
        let (dev, raw) = dev.into_raw();
        // SAFETY: `slots_lock` is held as `kvm_io_bus_register_dev()` requires; `raw` is the C
        // device inside a leaked box, which stays valid until its destructor runs.
        let ret = unsafe {
            bindings::kvm_io_bus_register_dev(
                kvm,
                range.bus.as_raw(),
                range.addr,
                // The C passes the `u32` size to the bus's `int` length unchanged.
                range.size as i32,
                raw,
            )
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: the bus refused the device, so the box leaked above is still ours alone.
            drop(unsafe { KBox::from_raw(dev) });
            return Err(e);
        }
        // SAFETY: `slots_lock` protects the zone list; the entry is in the now-registered device
        // and stays valid until its destructor removes it.
        unsafe {
            bindings::list_add_tail(
                Opaque::cast_into(&raw const (*dev).header.link),
                &raw mut (*kvm).coalesced_zones,
            )
        };
        Ok(())
    }

    /// Whether `matches(range, owner)` holds for any zone on the VM's list.
    fn any_coalesced_zone(&self, mut matches: impl FnMut(&IoRange, usize) -> bool) -> bool {
        let mut found = false;
        let visit = |range, owner, _dev| {
            found = matches(&range, owner);
            if found {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        // SAFETY: `visit` destroys nothing.
        unsafe { self.walk_coalesced_zones(visit) };
        found
    }

    /// Unregisters, from its bus, every zone on the VM's list for which `matches(range, owner)`
    /// holds; `owner` is the zone's ring: [`VM_RING`] or the address of its buffer.
    ///
    /// Unregistering destroys the zone's device, which removes it from the list. If KVM cannot
    /// shrink the bus, it destroys every device on that bus and the walk stops at once: the saved
    /// next entry may be gone too (CVE-2021-47060). Callers match zones of one bus per walk, so
    /// nothing is left to do.
    pub(crate) fn unregister_coalesced_zones(
        &mut self,
        mut matches: impl FnMut(&IoRange, usize) -> bool,
    ) {
        let kvm = self.vm().as_raw();
        let visit = |range: IoRange, owner, dev| {
            if !matches(&range, owner) {
                return ControlFlow::Continue(());
            }
            // SAFETY: `slots_lock` is held as `kvm_io_bus_unregister_dev()` requires, and `dev`
            // is a device registered on `range.bus`.
            if unsafe { bindings::kvm_io_bus_unregister_dev(kvm, range.bus.as_raw(), dev) } != 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        // SAFETY: `visit` destroys only the zone it is given, and stops the walk when the bus
        // may have destroyed others.
        unsafe { self.walk_coalesced_zones(visit) }
    }

    /// Walks the VM's zone list, giving `visit` each zone's range, owner and C device, until it
    /// returns [`ControlFlow::Break`]. Each entry's `next` is read before `visit` runs, as
    /// `list_for_each_entry_safe()` does, so `visit` may destroy the zone it is given; nothing of
    /// the entry is borrowed while it runs. `kernel::interop::list` only iterates over a list
    /// that stays as it is, hence this walk written out.
    ///
    /// # Safety
    ///
    /// `visit` may destroy the zone it is given and no other, unless it then breaks.
    unsafe fn walk_coalesced_zones(
        &self,
        mut visit: impl FnMut(IoRange, usize, *mut bindings::kvm_io_device) -> ControlFlow<()>,
    ) {
        let kvm = self.vm().as_raw();
        // SAFETY: `slots_lock` is held, so the list and its entries change only through `visit`,
        // which by the caller's guarantee destroys at most the entry it is given before the walk
        // goes on. Every entry is the `link` of a registered `IoDevice`, whose `Header` is
        // readable without knowing its data type; `next`, the range and the owner are read
        // before `visit` can destroy the entry.
        unsafe {
            let head = &raw mut (*kvm).coalesced_zones;
            let mut pos = (*head).next;
            while pos != head {
                let next = (*pos).next;
                let header =
                    kernel::container_of!(pos.cast::<Opaque<bindings::list_head>>(), Header, link);
                let dev = Opaque::cast_into(&raw const (*header).dev);
                if visit((*header).range, (*header).owner, dev).is_break() {
                    break;
                }
                pos = next;
            }
        }
    }
}
