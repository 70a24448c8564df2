// SPDX-License-Identifier: GPL-2.0

//! In-kernel devices on KVM's I/O buses, `struct kvm_io_device`.
//!
//! C header: [`include/kvm/iodev.h`](srctree/include/kvm/iodev.h)
//!
//! A device is a Rust object in a [`KBox`]. Once registered on a bus, the bus owns it: KVM calls
//! its operations from vCPU threads, and calls its destructor exactly once, when the device is
//! unregistered or the VM is destroyed; the destructor drops the box.

use super::{bindings, Bus, Vm};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    alloc::{flags::GFP_KERNEL_ACCOUNT, KBox},
    build_error,
    error::VTABLE_DEFAULT_ERROR,
    ffi::{c_int, c_void},
    prelude::*,
    types::Opaque,
};

/// The range a device claims on its bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoRange {
    /// The bus the device sits on.
    pub(crate) bus: Bus,
    /// First guest-physical address (MMIO) or port (PIO) of the range.
    pub(crate) addr: u64,
    /// Length of the range in bytes, as userspace gave it. KVM's bus takes a C `int`.
    pub(crate) size: u32,
}

/// What a device answers for a guest access it does not take: KVM hands the access on to the
/// next device on the bus, or to userspace as an exit. A C device returns `-EOPNOTSUPP`, and so
/// does the callback for this; KVM's bus only tells zero from non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotTaken;

/// `-EOPNOTSUPP`, what [`NotTaken`] is in C: a constant, so that no error path of the callbacks
/// calls into the kernel crate to make an `Error`.
const NOT_TAKEN_ERRNO: c_int = -(bindings::EOPNOTSUPP as c_int);

/// What a device does with the guest accesses that reach it.
///
/// KVM calls these from vCPU threads, several at once, inside an SRCU read-side section of the
/// VM: they must not sleep.
#[vtable]
pub(crate) trait IoDeviceOps: Sized + Send + Sync {
    /// The longest access, in bytes, the device handles. A longer one is [`NotTaken`] without
    /// calling the device.
    const MAX_ACCESS: usize = usize::MAX;

    /// Handles a guest write of `data` at `addr`.
    ///
    /// [`NotTaken`] hands the write on to the next device on the bus and, if no device takes it,
    /// to userspace as an ordinary MMIO or PIO exit.
    fn write(_dev: &IoDevice<Self>, _addr: u64, _data: &[u8]) -> Result<(), NotTaken> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Handles a guest read of `data.len()` bytes at `addr`, like [`IoDeviceOps::write`].
    fn read(_dev: &IoDevice<Self>, _addr: u64, _data: &mut [u8]) -> Result<(), NotTaken> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The part of every [`IoDevice`] that does not depend on its data type.
///
/// `IoDevice<T>` is `repr(C)` with this header first, so code that only needs the header (the
/// walk over the VM's zone list) can read it without knowing `T`.
#[repr(C)]
pub(super) struct Header {
    /// What KVM's bus points to. First, so that a pointer to it is a pointer to the device.
    pub(super) dev: Opaque<bindings::kvm_io_device>,
    /// Entry on the VM's list of its coalesced zones. Initialised when, and only while, the device
    /// is registered; protected by `slots_lock`.
    pub(super) link: Opaque<bindings::list_head>,
    pub(super) vm: NonNull<bindings::kvm>,
    pub(super) range: IoRange,
    /// What the device's creator tells its devices apart by: for coalesced zones, the ring they
    /// write to.
    pub(super) owner: usize,
}

/// A device on one of a VM's I/O buses, whose accesses `T` handles.
///
/// `T` is the device's own data, next to its range and its VM.
///
/// # Invariants
///
/// `header.vm` is the VM the device was created for, and `header.dev.ops` is the operations
/// table of `T`. A shared reference to an `IoDevice` exists only while its VM is alive: before
/// registration through [`NewIoDevice`], whose lifetime is bound to the VM's; afterwards in
/// callbacks, which KVM runs only for devices of a live VM.
#[repr(C)]
pub(crate) struct IoDevice<T> {
    pub(super) header: Header,
    data: T,
}

// SAFETY: the raw fields are the C device and list entry, which KVM accesses under its own rules
// (the bus under SRCU, the list under `slots_lock`); `T` is `Send`.
unsafe impl<T: Send> Send for IoDevice<T> {}

// SAFETY: as for `Send`; shared access from several vCPUs only reads the header and `&T`, and `T`
// is `Sync`.
unsafe impl<T: Sync> Sync for IoDevice<T> {}

impl<T: IoDeviceOps> IoDevice<T> {
    /// Allocates a device for `vm` claiming `range`, with `owner` (see [`Header`]) and `data`,
    /// charged to the VM's memory cgroup.
    ///
    /// It does nothing until it is registered on its bus (see [`super::SlotsGuard`]).
    pub(crate) fn alloc(
        vm: &Vm,
        range: IoRange,
        owner: usize,
        data: T,
    ) -> Result<NewIoDevice<'_, T>> {
        // INVARIANT: `vm` is the device's VM, and the ops table is the one built for `T`.
        let dev = KBox::new(
            IoDevice {
                header: Header {
                    dev: Opaque::new(bindings::kvm_io_device {
                        ops: OpsTable::<T>::build(),
                    }),
                    link: Opaque::uninit(),
                    // `Vm` is a transparent wrapper of `struct kvm`.
                    vm: NonNull::from(vm).cast(),
                    range,
                    owner,
                },
                data,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        Ok(NewIoDevice {
            dev,
            _vm: PhantomData,
        })
    }
}

impl<T> IoDevice<T> {
    /// The VM the device belongs to.
    pub(crate) fn vm(&self) -> &Vm {
        // SAFETY: by the type invariant the VM is alive while `self` may be referenced.
        unsafe { Vm::from_raw(self.header.vm.as_ptr()) }
    }

    /// The range the device claims on its bus.
    pub(crate) fn range(&self) -> &IoRange {
        &self.header.range
    }

    /// The device's own data (a zone of the VM's ring has none).
    #[cfg(CONFIG_KVM_COALESCED_MMIO_BUFFERS)]
    pub(crate) fn data(&self) -> &T {
        &self.data
    }
}

/// A device that is not on a bus yet; registering it hands it to the bus.
///
/// Its lifetime is that of the VM it was created for, so the device cannot be used once that
/// VM is gone.
pub(crate) struct NewIoDevice<'a, T> {
    pub(super) dev: KBox<IoDevice<T>>,
    _vm: PhantomData<&'a Vm>,
}

/// The C operations table of devices with data `T`.
struct OpsTable<T: IoDeviceOps>(PhantomData<T>);

impl<T: IoDeviceOps> OpsTable<T> {
    const VTABLE: bindings::kvm_io_device_ops = bindings::kvm_io_device_ops {
        read: if T::HAS_READ {
            Some(Self::read_callback)
        } else {
            None
        },
        write: if T::HAS_WRITE {
            Some(Self::write_callback)
        } else {
            None
        },
        destructor: Some(Self::destructor_callback),
    };

    const fn build() -> &'static bindings::kvm_io_device_ops {
        &Self::VTABLE
    }

    /// # Safety
    ///
    /// `this` must be the `dev` field of a live `IoDevice<T>` whose VM is alive, and `val` must
    /// be valid for reading `len` bytes. KVM guarantees both when it calls `ops->write` for a
    /// device on one of its buses.
    unsafe extern "C" fn write_callback(
        _vcpu: *mut bindings::kvm_vcpu,
        this: *mut bindings::kvm_io_device,
        addr: bindings::gpa_t,
        len: c_int,
        val: *const c_void,
    ) -> c_int {
        let Some(len) = access_len::<T>(len) else {
            return NOT_TAKEN_ERRNO;
        };
        // SAFETY: `dev` is the first field of `Header`, which is the first field of the `repr(C)`
        // `IoDevice<T>`, so `this` points to the device; the caller guarantees it is alive.
        let dev = unsafe { &*this.cast::<IoDevice<T>>() };
        // SAFETY: the caller guarantees `len` readable bytes at `val`, which KVM does not change
        // during the call.
        let data = unsafe { core::slice::from_raw_parts(val.cast::<u8>(), len) };
        errno_of(T::write(dev, addr, data))
    }

    /// # Safety
    ///
    /// `this` must be the `dev` field of a live `IoDevice<T>` whose VM is alive, and `val` must
    /// be valid for writing `len` bytes, as KVM guarantees when it calls `ops->read`.
    unsafe extern "C" fn read_callback(
        _vcpu: *mut bindings::kvm_vcpu,
        this: *mut bindings::kvm_io_device,
        addr: bindings::gpa_t,
        len: c_int,
        val: *mut c_void,
    ) -> c_int {
        let Some(len) = access_len::<T>(len) else {
            return NOT_TAKEN_ERRNO;
        };
        // SAFETY: as in `write_callback`.
        let dev = unsafe { &*this.cast::<IoDevice<T>>() };
        // SAFETY: the caller guarantees `len` writable bytes at `val`, used by no one else
        // during the call.
        let data = unsafe { core::slice::from_raw_parts_mut(val.cast::<u8>(), len) };
        errno_of(T::read(dev, addr, data))
    }

    /// # Safety
    ///
    /// `this` must be the `dev` field of an `IoDevice<T>` that was registered on a bus of its VM
    /// (so it is a leaked [`KBox`] linked on the VM's zone list), and the bus must be done with
    /// it: KVM calls `ops->destructor` once, after SRCU readers of the bus can no longer see the
    /// device, with `slots_lock` held or while the VM is being destroyed.
    unsafe extern "C" fn destructor_callback(this: *mut bindings::kvm_io_device) {
        let dev = this.cast::<IoDevice<T>>();
        // SAFETY: the caller guarantees a registered device, so its `link` is on the zone list,
        // and that no one else walks the list now.
        unsafe { bindings::list_del(Opaque::cast_into(&raw const (*dev).header.link)) };
        // SAFETY: registration leaked this box, and the bus hands back its only reference.
        drop(unsafe { KBox::from_raw(dev) });
    }
}

impl<T: IoDeviceOps> NewIoDevice<'_, T> {
    /// The raw pointers that registration passes to KVM, keeping the box alive by leaking it.
    ///
    /// Returns the device and the C `struct kvm_io_device` inside it.
    pub(super) fn into_raw(self) -> (*mut IoDevice<T>, *mut bindings::kvm_io_device) {
        let dev = KBox::into_raw(self.dev);
        // SAFETY: `dev` comes from `KBox::into_raw`, so it is valid.
        let raw = unsafe { Opaque::cast_into(&raw const (*dev).header.dev) };
        (dev, raw)
    }
}

/// The length of an access KVM passes to a device of type `T`, as a slice length.
///
/// `None` for a negative length, which is outside every range (the C devices say the same), and
/// for one past `T::MAX_ACCESS`, which the device refuses; one unsigned compare tests both.
#[inline(always)]
fn access_len<T: IoDeviceOps>(len: c_int) -> Option<usize> {
    usize::try_from(len)
        .ok()
        .filter(|&len| len <= T::MAX_ACCESS)
}

/// The C return value of a device operation: 0 or a negative errno.
///
/// Every guest access to a device goes through this, so it is a plain `match` the compiler
/// inlines into the callback (a `from_result` closure was left as a separate call).
#[inline(always)]
fn errno_of(result: Result<(), NotTaken>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(NotTaken) => NOT_TAKEN_ERRNO,
    }
}
