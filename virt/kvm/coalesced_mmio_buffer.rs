// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO buffers: rings of their own, with a file descriptor, that zones write to
//! instead of the VM's ring (`KVM_CAP_COALESCED_MMIO2`).
//!
//! `KVM_CREATE_COALESCED_MMIO_BUFFER` makes a ring of the number of entries userspace asks for
//! and returns its file descriptor and the size to map. Every `mmap()` of it maps the same pages;
//! `poll()` says whether the ring holds entries, so that a VMM thread can drain it while the vCPUs
//! run. `KVM_(UN)REGISTER_COALESCED_MMIO2` add and remove zones that write to a buffer.
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
    coalesced_mmio_logic::{access_inside, buffer_ring_bytes},
    coalesced_mmio_zones::{add_zone, append, pio_flag, unregister_ring_zones, zone_bus},
    kvm::{
        anon_file::{AnonFileOps, AnonFileType},
        bindings,
        coalesced::{
            BufferZone, RingGuard, RingView, ENTRY_DATA, RING_ENTRY_BYTES, RING_HEADER_BYTES,
        },
        iodev::{IoDevice, IoDeviceOps, NotTaken},
        shared_pages::SharedPages,
        Bus, Vm, THIS_MODULE,
    },
};
use kernel::{
    error::from_result,
    ffi::{c_int, c_void},
    fs::{file::FileDescriptorReservation, File, LocalFile},
    mm::virt::{flags, VmaNew},
    new_poll_condvar, new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, SpinLock,
    },
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

/// The most entries a ring may have, which `KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO2)`
/// reports: 8 + 8192 * 24 bytes, 49 pages of 4 KiB, charged to the VMM's memory cgroup.
const MAX_ENTRIES: u32 = 8192;

/// The file operations of every buffer's file descriptor. Their owner becomes the vendor module
/// at `kvm_init()`: see [`kvm_coalesced_mmio_buffer_init`].
static BUFFER_FILE: AnonFileType<CoalescedBuffer> = AnonFileType::new(&THIS_MODULE);

/// A buffer's ring: `entries` entries in pages that every mapping maps.
struct Ring {
    pages: SharedPages,
    entries: u32,
}

impl Ring {
    fn new(entries: u32) -> Result<Self> {
        let bytes = buffer_ring_bytes(
            entries,
            MAX_ENTRIES,
            RING_HEADER_BYTES,
            RING_ENTRY_BYTES,
            PAGE_SIZE,
        )
        .ok_or(EINVAL)?;
        Ok(Ring {
            pages: SharedPages::alloc(bytes / PAGE_SIZE)?,
            entries,
        })
    }

    fn view(&self) -> RingView<'_> {
        // SAFETY: `pages` is `len()` bytes of zeroed, page-aligned memory, alive as long as
        // `self`, which `buffer_ring_bytes()` sized for a header and `entries >= 2` entries.
        unsafe { RingView::from_raw(self.pages.as_ptr().cast(), self.entries) }
    }
}

/// A coalesced MMIO buffer, the data of its file.
#[pin_data]
pub(crate) struct CoalescedBuffer {
    /// The VM the buffer was made for, kept alive by the buffer.
    vm: ARef<Vm>,
    ring: Ring,
    /// Serialises the vCPUs that append to the ring, and `poll()`'s look at it. It guards
    /// whether a `poll()` has looked since the last wake-up: see [`CoalescedBuffer::append`].
    #[pin]
    ring_lock: SpinLock<bool>,
    /// Where `poll()` waits for entries.
    #[pin]
    readers: PollCondVar,
}

impl CoalescedBuffer {
    fn new(vm: &Vm, entries: u32) -> Result<Arc<Self>> {
        let ring = Ring::new(entries)?;
        Arc::pin_init(
            pin_init!(CoalescedBuffer {
                vm: vm.into(),
                ring,
                ring_lock <- new_spinlock!(false, "CoalescedBuffer::ring_lock"),
                readers <- new_poll_condvar!("CoalescedBuffer::readers"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// What the buffer's zones carry to tell them apart from other rings' zones.
    fn owner(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    fn lock_ring(&self) -> RingGuard<'_, bool> {
        // SAFETY: `ring_lock` is what every writer of this buffer's ring takes.
        unsafe { RingGuard::new(self.ring_lock.lock(), self.ring.view()) }
    }

    /// Appends a guest write to the ring; [`NotTaken`] makes it an exit.
    ///
    /// Pollers are woken only if a `poll()` has looked at the ring since the last wake-up, so a
    /// write costs no wait-queue lock while nobody polls. No poller misses an entry: `poll()`
    /// registers its wait, then, under the ring's lock, sets the flag and reads the indices, so
    /// the first write after any `poll()` wakes the queue. A waiter that sleeps without calling
    /// `poll()` again (edge-triggered epoll, io_uring's multishot poll) has been woken, or has had
    /// an event delivered, after its last `poll()`, and the delivery of that event called `poll()`
    /// (with the NULL key that [`PollCondVar::notify_all`] passes, io_uring calls it too); it
    /// decides to sleep from what it reads itself, so the wake-up cannot depend on whether the
    /// ring looked empty to this write.
    fn append(&self, addr: u64, data: &[u8], pio: u32) -> Result<(), NotTaken> {
        let wake = {
            let mut ring = self.lock_ring();
            append(&mut ring, addr, data, pio)?;
            core::mem::replace(ring.locked(), false)
        };
        if wake {
            // Unkeyed (a NULL key), so that io_uring and aio call `poll()` to learn what is
            // ready, which sets the flag again: a keyed wake-up would let a multishot waiter
            // miss every later write.
            self.readers.notify_all();
        }
        Ok(())
    }
}

/// `struct kvm_coalesced_mmio_buffer`, as `KVM_CREATE_COALESCED_MMIO_BUFFER` reads and writes it.
#[repr(transparent)]
struct BufferRequest(bindings::kvm_coalesced_mmio_buffer);

// SAFETY: a struct of integers without padding (`coalesced.rs` checks its size): any bytes are
// a valid value, and every byte of a value is initialised.
unsafe impl FromBytes for BufferRequest {}
// SAFETY: as above.
unsafe impl AsBytes for BufferRequest {}

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

    /// Maps the whole ring: shared, from offset 0, `mmap_size` bytes long.
    fn mmap(buffer: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: the vma is being set up, so its offset is stable and readable.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let pages = &buffer.ring.pages;
        if pgoff != 0 || vma.flags() & flags::SHARED == 0 || vma.end() - vma.start() != pages.len()
        {
            return Err(EINVAL);
        }
        // A child of fork() gets no mapping (it may map the descriptor it inherits); mremap()
        // cannot grow the mapping past the ring.
        vma.set_dontcopy();
        vma.set_dontexpand();
        pages.map_into(vma.set_mixedmap())
    }

    /// Readable while the ring holds entries (`first != last`).
    fn poll(buffer: ArcBorrow<'_, Self>, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &buffer.readers);
        let mut ring = buffer.lock_ring();
        // The next write wakes us: see `CoalescedBuffer::append`.
        *ring.locked() = true;
        if ring.first() != ring.last() {
            // EPOLLIN | EPOLLRDNORM, which have the values of their POLL* twins.
            bindings::POLLIN | bindings::POLLRDNORM
        } else {
            0
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
    fn write(dev: &IoDevice<Self>, addr: u64, data: &[u8]) -> Result<(), NotTaken> {
        let zone = dev.range();
        if !access_inside(zone.addr, zone.size, addr, data.len()) {
            return Err(NotTaken);
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

/// `KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_MMIO2)`: the most entries a buffer's ring may have.
#[no_mangle]
pub extern "C" fn kvm_coalesced_mmio_buffer_max_entries() -> c_int {
    const _: () = assert!(MAX_ENTRIES <= c_int::MAX as u32);
    MAX_ENTRIES as c_int
}

/// `KVM_CREATE_COALESCED_MMIO_BUFFER`: makes a buffer with a ring of the requested number of
/// entries, writes back the size to map, and returns the buffer's new file descriptor.
///
/// # Safety
///
/// `kvm` must point to a live VM, as `kvm_vm_ioctl()` passes it; `argp` is the ioctl's argument,
/// any value userspace passed.
#[no_mangle]
pub unsafe extern "C" fn kvm_vm_ioctl_create_coalesced_mmio_buffer(
    kvm: *mut bindings::kvm,
    argp: *mut c_void,
) -> c_int {
    // SAFETY: the caller guarantees a live VM.
    let vm = unsafe { Vm::from_raw(kvm) };
    from_result(|| create_buffer(vm, UserPtr::from_ptr(argp)))
}

fn create_buffer(vm: &Vm, argp: UserPtr) -> Result<c_int> {
    let (mut reader, mut writer) =
        UserSlice::new(argp, core::mem::size_of::<BufferRequest>()).reader_writer();
    let mut request: BufferRequest = reader.read()?;
    if request.0.flags != 0 || request.0.reserved != [0; 2] {
        return Err(EINVAL);
    }
    let buffer = CoalescedBuffer::new(vm, request.0.entries)?;
    // Widening: `usize` is at most 64 bits on every architecture Linux supports.
    request.0.mmap_size = buffer.ring.pages.len() as u64;
    // The descriptor is installed only once the answer has reached userspace: nothing is left
    // behind if it cannot be written back.
    let fd = FileDescriptorReservation::get_unused_fd_flags(bindings::O_CLOEXEC)?;
    let file = BUFFER_FILE.create_file(c"kvm-coalesced-mmio-buffer", buffer, bindings::O_RDWR)?;
    writer.write(&request)?;
    let nr = fd.reserved_fd();
    fd.fd_install(file);
    // A descriptor number fits an int.
    Ok(nr as c_int)
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

/// Refuses with `EINVAL` a request with flags (none are defined) or a `pio` other than 0 or 1:
/// checked before its descriptor, as the VM's ring checks `pio` first.
fn check_request(request: &BufferZone) -> Result {
    if request.flags != 0 {
        return Err(EINVAL);
    }
    zone_bus(&request.zone).map(|_| ())
}

fn register_buffer_zone(vm: &Vm, request: BufferZone) -> Result {
    check_request(&request)?;
    // The file reference is held until the zone is registered, so that the buffer's release,
    // which unregisters its zones, cannot run before the zone is on the list.
    let file = LocalFile::fget(request.buffer_fd)?;
    let buffer = buffer_of(vm, &file)?;
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
    check_request(&request)?;
    let file = LocalFile::fget(request.buffer_fd)?;
    let owner = buffer_of(vm, &file)?.owner();
    unregister_ring_zones(vm, request.zone, owner)
}

// The signatures `coalesced_mmio.h` declares for the entry points above.
crate::kvm::c_entry_points!(
    kvm_coalesced_mmio_buffer_init,
    kvm_coalesced_mmio_buffer_max_entries,
    kvm_vm_ioctl_create_coalesced_mmio_buffer,
    kvm_vm_ioctl_register_coalesced_mmio2,
    kvm_vm_ioctl_unregister_coalesced_mmio2,
);
