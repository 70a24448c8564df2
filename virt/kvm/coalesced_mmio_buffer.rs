// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO buffers: rings of their own, with a file descriptor, that zones write to
//! instead of the VM's ring (`KVM_CAP_COALESCED_MMIO2`).
//!
//! `KVM_CREATE_COALESCED_MMIO_BUFFER` returns the file descriptor. Its first `mmap()` sets the
//! ring's size (1 to 64 pages) and every later one maps the same pages; `poll()` says whether the
//! ring holds entries, so that a VMM thread can drain it while the vCPUs run.
//! `KVM_(UN)REGISTER_COALESCED_MMIO2` add and remove zones that write to a buffer.
//!
//! Lifetimes, and why nothing here can be used after it is freed:
//! - every mapping holds a reference to the file (as any mapping of a file does), and a
//!   reference on each page it maps (`vm_insert_page()`); mappings are not copied into a child
//!   on `fork()` (`VM_DONTCOPY`);
//! - so the file is released only when its last descriptor is closed and its last mapping is
//!   gone, and only then are its zones unregistered (under `slots_lock`, like any zone) and the
//!   ring freed;
//! - a zone holds a reference to its buffer, and the buffer one to its VM (`kvm_get_kvm()`), so
//!   the VM outlives its buffers and a buffer outlives its zones. The VM's destruction never
//!   meets a buffer's zone: they are all gone by the time the last buffer lets the VM go.
//!
//! Locking: `slots_lock` guards the zone list and the buses, as for the VM's ring; each buffer
//! has its own spinlock for the vCPUs that append to its ring, so that vCPUs writing to
//! different buffers never contend.

use crate::{
    add_zone, append,
    coalesced_mmio_logic::{access_inside, buffer_ring_entries},
    kvm::{
        anon_file::{AnonFileOps, AnonFileType},
        bindings,
        coalesced::{
            BufferZone, RingGuard, RingView, ENTRY_DATA, RING_ENTRY_BYTES, RING_HEADER_BYTES,
        },
        enobufs, eopnotsupp,
        iodev::{IoDevice, IoDeviceOps},
        shared_pages::SharedPages,
        Bus, Vm, THIS_MODULE,
    },
    pio_flag, unregister_ring_zones, zone_bus,
};
use kernel::{
    error::from_result,
    ffi::c_int,
    fs::{File, LocalFile},
    mm::virt::{flags, VmaNew},
    new_mutex, new_poll_condvar, new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, Mutex, SetOnce, SpinLock,
    },
};

/// The longest ring, in pages (`KVM_COALESCED_MMIO_BUFFER_MAX_PAGES`).
const MAX_PAGES: usize = bindings::KVM_COALESCED_MMIO_BUFFER_MAX_PAGES as usize;

/// The file operations of every buffer's file descriptor. Their owner becomes the vendor module
/// at `kvm_init()`: see [`kvm_coalesced_mmio_buffer_init`].
static BUFFER_FILE: AnonFileType<CoalescedBuffer> = AnonFileType::new(&THIS_MODULE);

/// A buffer's ring, once its first mapping has set the size.
struct Ring {
    pages: SharedPages,
    entries: u32,
}

impl Ring {
    fn view(&self) -> RingView<'_> {
        // SAFETY: `pages` is `len()` bytes of zeroed, page-aligned memory, alive as long as
        // `self`; `buffer_ring_entries()` chose `entries >= 2` to fit after the header.
        unsafe { RingView::from_raw(self.pages.as_ptr().cast(), self.entries) }
    }
}

/// A coalesced MMIO buffer, the data of its file.
#[pin_data]
pub(crate) struct CoalescedBuffer {
    /// The VM the buffer was made for, kept alive by the buffer.
    vm: ARef<Vm>,
    /// The ring, from the first mapping on; never replaced.
    ring: SetOnce<Ring>,
    /// Serialises the setting of `ring` by concurrent first mappings.
    #[pin]
    map_lock: Mutex<()>,
    /// Serialises the vCPUs that append to the ring.
    #[pin]
    ring_lock: SpinLock<()>,
    /// Where `poll()` waits for entries.
    #[pin]
    readers: PollCondVar,
}

impl CoalescedBuffer {
    fn new(vm: &Vm) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(CoalescedBuffer {
                vm: vm.into(),
                ring: SetOnce::new(),
                map_lock <- new_mutex!(()),
                ring_lock <- new_spinlock!((), "CoalescedBuffer::ring_lock"),
                readers <- new_poll_condvar!("CoalescedBuffer::readers"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// What the buffer's zones carry to tell them apart from other rings' zones.
    fn owner(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    /// The ring for a new mapping of `len` bytes: the existing one if it has that length, or
    /// a new one of that length if this is the first mapping.
    fn ring_for_mapping(&self, len: usize) -> Result<&Ring> {
        let _guard = self.map_lock.lock();
        if let Some(ring) = self.ring.as_ref() {
            return if ring.pages.len() == len {
                Ok(ring)
            } else {
                Err(EINVAL)
            };
        }
        let entries = buffer_ring_entries(
            len,
            PAGE_SIZE,
            MAX_PAGES,
            RING_HEADER_BYTES,
            RING_ENTRY_BYTES,
        )
        .ok_or(EINVAL)?;
        let pages = SharedPages::alloc(len / PAGE_SIZE)?;
        // Cannot fail: `map_lock` is held and the ring was not set.
        self.ring.populate(Ring { pages, entries });
        self.ring.as_ref().ok_or(EINVAL)
    }

    /// Appends a guest write to the ring and wakes its pollers; `EOPNOTSUPP` makes it an exit.
    fn append(&self, addr: u64, data: &[u8], pio: u32) -> Result {
        // A zone is only registered onto a mapped buffer, whose ring is never unset.
        let ring = self.ring.as_ref().ok_or_else(eopnotsupp)?;
        {
            // SAFETY: `ring_lock` is what every writer of this buffer's ring takes.
            let mut ring = unsafe { RingGuard::new(self.ring_lock.lock(), ring.view()) };
            append(&mut ring, addr, data, pio)?;
        }
        self.readers.notify_all();
        Ok(())
    }
}

#[vtable]
impl AnonFileOps for CoalescedBuffer {
    type Ptr = Arc<CoalescedBuffer>;

    /// The last descriptor is closed and the last mapping gone: the buffer's zones stop
    /// coalescing, and the ring is freed once the zones have let go of the buffer.
    fn release(buffer: Arc<Self>, _file: &File) {
        let owner = buffer.owner();
        let mut slots = buffer.vm.lock_slots();
        // One bus at a time: a failed unregister ends a walk, having destroyed every device
        // on that bus, ours included, but none on the other bus.
        for bus in [Bus::Mmio, Bus::Pio] {
            slots.unregister_coalesced_zones(|zone, zone_owner| {
                zone_owner == owner && zone.bus == bus
            });
        }
    }

    /// Maps the ring: shared, from offset 0, 1 to 64 pages, the same length every time.
    fn mmap(buffer: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: the vma is being set up, so its offset is stable and readable.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        if pgoff != 0 || vma.flags() & flags::SHARED == 0 {
            return Err(EINVAL);
        }
        let ring = buffer.ring_for_mapping(vma.end() - vma.start())?;
        // A child of fork() gets no mapping (it may map the descriptor it inherits); mremap()
        // cannot grow the mapping past the ring.
        vma.set_dontcopy();
        vma.set_dontexpand();
        ring.pages.map_into(vma.set_mixedmap())
    }

    /// Readable while the ring holds entries (`first != last`).
    fn poll(buffer: ArcBorrow<'_, Self>, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &buffer.readers);
        match buffer.ring.as_ref().map(Ring::view) {
            // EPOLLIN | EPOLLRDNORM, which have the values of their POLL* twins.
            Some(ring) if ring.first() != ring.last() => bindings::POLLIN | bindings::POLLRDNORM,
            _ => 0,
        }
    }
}

/// The device behind a zone registered onto a buffer.
struct BufferedZone {
    buffer: Arc<CoalescedBuffer>,
}

#[vtable]
impl IoDeviceOps for BufferedZone {
    const MAX_ACCESS: usize = ENTRY_DATA;

    /// As for a zone of the VM's ring, but into the buffer's ring, under the buffer's lock.
    #[inline]
    fn write(dev: &IoDevice<Self>, addr: u64, data: &[u8]) -> Result {
        let zone = dev.range();
        if !access_inside(zone.addr, zone.size, addr, data.len()) {
            return Err(eopnotsupp());
        }
        dev.data().buffer.append(addr, data, pio_flag(zone.bus))
    }
}

/// The buffer whose file is `file`, which must be a buffer of `vm`: `EINVAL` for a file of
/// another kind or a buffer of another VM.
fn buffer_of<'a>(vm: &Vm, file: &'a LocalFile) -> Result<ArcBorrow<'a, CoalescedBuffer>> {
    let buffer = BUFFER_FILE.data(file).ok_or(EINVAL)?;
    if buffer.vm.as_raw() != vm.as_raw() {
        return Err(EINVAL);
    }
    Ok(buffer)
}

/// Called by `kvm_init()` with the vendor module (`kvm-amd`, `kvm-intel`) that is loading KVM,
/// before `/dev/kvm` exists: every buffer's file then keeps that module loaded, as VM, vCPU and
/// device files do. A buffer holds its VM, and dropping the last reference to a VM calls into the
/// vendor module (`kvm_arch_destroy_vm()`), so closing a buffer after `rmmod kvm_amd` would run
/// code that is gone. The vendor module depends on `kvm.ko`, so `kvm.ko` stays loaded too.
///
/// # Safety
///
/// `module` must be the module passed to `kvm_init()`, and no buffer may exist, as is the case
/// while `kvm_init()` runs.
#[no_mangle]
pub unsafe extern "C" fn kvm_coalesced_mmio_buffer_init(module: *mut bindings::module) {
    // SAFETY: `module` is the vendor module, loading. No buffer exists: `kvm_init()` runs before
    // `/dev/kvm` does, so before any VM of this vendor module, and a previous vendor module could
    // only unload once its last buffer, which kept it loaded, was released. Only one vendor
    // module can load KVM at a time, so no other call runs meanwhile.
    unsafe { BUFFER_FILE.set_owner(module) };
}

/// `KVM_CREATE_COALESCED_MMIO_BUFFER`: returns the file descriptor of a new, unmapped buffer.
///
/// # Safety
///
/// `kvm` must point to a live VM, as `kvm_vm_ioctl()` passes it.
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_create_coalesced_mmio_buffer(
    kvm: *mut bindings::kvm,
) -> c_int {
    // SAFETY: the caller guarantees a live VM.
    let vm = unsafe { Vm::from_raw(kvm) };
    from_result(|| {
        let buffer = CoalescedBuffer::new(vm)?;
        let fd = BUFFER_FILE.create_fd(
            c"kvm-coalesced-mmio-buffer",
            buffer,
            bindings::O_RDWR | bindings::O_CLOEXEC,
        )?;
        // A descriptor number fits an int.
        Ok(fd as c_int)
    })
}

/// `KVM_REGISTER_COALESCED_MMIO2`: starts coalescing writes to a zone into a buffer's ring.
///
/// # Safety
///
/// `kvm` must point to a live VM and `zone` to a zone readable for the whole call, as
/// `kvm_vm_ioctl()` passes them.
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_register_coalesced_mmio2(
    kvm: *mut bindings::kvm,
    zone: *mut bindings::kvm_coalesced_mmio_zone2,
) -> c_int {
    // SAFETY: the caller guarantees a live VM and a readable zone.
    let (vm, zone) = unsafe { (Vm::from_raw(kvm), BufferZone::read_raw(zone)) };
    from_result(|| register_buffer_zone(vm, zone).map(|()| 0))
}

fn register_buffer_zone(vm: &Vm, request: BufferZone) -> Result {
    // The order of the checks, and so which error comes first, as for the VM's ring: pio.
    zone_bus(&request.zone)?;
    // The file reference is held until the zone is registered, so that the buffer's release,
    // which unregisters its zones, cannot run before the zone is on the list.
    let file = LocalFile::fget(request.buffer_fd)?;
    let buffer = buffer_of(vm, &file)?;
    if buffer.ring.as_ref().is_none() {
        return Err(enobufs());
    }
    let zone = BufferedZone {
        buffer: buffer.into(),
    };
    let ret = add_zone(vm, &request.zone, buffer.owner(), zone);
    drop(file);
    ret
}

/// `KVM_UNREGISTER_COALESCED_MMIO2`: stops coalescing every zone of the same buffer and the same
/// kind (MMIO or PIO) that contains the requested range.
///
/// # Safety
///
/// As for [`kvm_vm_ioctl_register_coalesced_mmio2`].
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_unregister_coalesced_mmio2(
    kvm: *mut bindings::kvm,
    zone: *mut bindings::kvm_coalesced_mmio_zone2,
) -> c_int {
    // SAFETY: the caller guarantees a live VM and a readable zone.
    let (vm, zone) = unsafe { (Vm::from_raw(kvm), BufferZone::read_raw(zone)) };
    from_result(|| unregister_buffer_zones(vm, zone).map(|()| 0))
}

fn unregister_buffer_zones(vm: &Vm, request: BufferZone) -> Result {
    zone_bus(&request.zone)?;
    let file = LocalFile::fget(request.buffer_fd)?;
    let owner = buffer_of(vm, &file)?.owner();
    unregister_ring_zones(vm, request.zone, owner)
}
