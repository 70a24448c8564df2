// SPDX-License-Identifier: GPL-2.0
//! A coalesced MMIO buffer (`KVM_CAP_COALESCED_MMIO2`): a ring of its own, with a file
//! descriptor that a thread can poll() for entries while the vCPU runs.
//!
//! kvm-ioctls has no support for it (the API is ours, not upstream's), so this is the raw
//! ioctl, mmap and poll, as Documentation/virt/kvm/api.rst (4.146, 4.147) describes them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring};

/// `KVM_CAP_COALESCED_MMIO2`.
pub const KVM_CAP_COALESCED_MMIO2: u32 = 252;

const KVMIO: libc::c_ulong = 0xae;
/// `_IOWR(KVMIO, 0xd6, struct kvm_coalesced_mmio_buffer)`.
const KVM_CREATE_COALESCED_MMIO_BUFFER: libc::c_ulong =
    3 << 30 | (std::mem::size_of::<BufferRequest>() as libc::c_ulong) << 16 | KVMIO << 8 | 0xd6;
/// `_IOW(KVMIO, 0xd7, struct kvm_coalesced_mmio_zone2)`.
const KVM_REGISTER_COALESCED_MMIO2: libc::c_ulong =
    1 << 30 | (std::mem::size_of::<Zone2>() as libc::c_ulong) << 16 | KVMIO << 8 | 0xd7;

/// `struct kvm_coalesced_mmio_buffer`.
#[repr(C)]
#[derive(Default)]
struct BufferRequest {
    flags: u32,
    entries: u32,
    mmap_size: u64,
    reserved: [u64; 2],
}

/// `struct kvm_coalesced_mmio_zone2`.
#[repr(C)]
struct Zone2 {
    addr: u64,
    size: u32,
    pio: u32,
    buffer_fd: u32,
    flags: u32,
}

// No padding: the layout is the same for 32-bit and 64-bit processes.
const _: () = assert!(std::mem::size_of::<BufferRequest>() == 32);
const _: () = assert!(std::mem::size_of::<Zone2>() == 24);

/// A mapped buffer. One consumer at a time may take entries ([`Buffer::pop`]): callers hold a
/// lock around it.
pub struct Buffer {
    fd: OwnedFd,
    ring: *mut kvm_coalesced_mmio_ring,
    len: usize,
    entries: u32,
}

// SAFETY: the ring is shared memory that KVM and this process access through atomics and
// volatile reads only; the pointer is valid as long as the Buffer.
unsafe impl Send for Buffer {}
// SAFETY: as for Send; `pop` takes `&self` but callers serialise it.
unsafe impl Sync for Buffer {}

fn last_os_error<T>(what: &str) -> io::Result<T> {
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl Buffer {
    /// Creates a buffer of `entries` entries for the VM `vm_fd` and maps its ring.
    pub fn new(vm_fd: RawFd, entries: u32) -> io::Result<Self> {
        let mut request = BufferRequest {
            entries,
            ..Default::default()
        };
        // SAFETY: the ioctl reads and writes a `struct kvm_coalesced_mmio_buffer`, which
        // `request` is, on a file descriptor we were given.
        let fd = unsafe { libc::ioctl(vm_fd, KVM_CREATE_COALESCED_MMIO_BUFFER as _, &mut request) };
        if fd < 0 {
            return last_os_error("KVM_CREATE_COALESCED_MMIO_BUFFER");
        }
        // SAFETY: the ioctl returned a new file descriptor, which nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = usize::try_from(request.mmap_size)
            .map_err(|_| io::Error::other("mmap_size does not fit this process"))?;
        // SAFETY: a new shared mapping of the buffer at an address the kernel chooses.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return last_os_error("mmap of the coalesced MMIO buffer");
        }
        Ok(Buffer {
            fd,
            ring: ring.cast(),
            len,
            entries,
        })
    }

    /// `KVM_REGISTER_COALESCED_MMIO2`: writes to `size` ports from `port` go to this ring.
    pub fn register_pio(&self, vm_fd: RawFd, port: u64, size: u32) -> io::Result<()> {
        let zone = Zone2 {
            addr: port,
            size,
            pio: 1,
            buffer_fd: self.fd.as_raw_fd() as u32,
            flags: 0,
        };
        // SAFETY: the ioctl reads a `struct kvm_coalesced_mmio_zone2`, which `zone` is.
        if unsafe { libc::ioctl(vm_fd, KVM_REGISTER_COALESCED_MMIO2 as _, &zone) } < 0 {
            return last_os_error("KVM_REGISTER_COALESCED_MMIO2");
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for the ring to hold entries; true if it does.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, timeout_ms) } {
            n if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {
                Ok(false)
            }
            n if n < 0 => last_os_error("poll of the coalesced MMIO buffer"),
            n => Ok(n > 0 && pfd.revents & libc::POLLIN != 0),
        }
    }

    fn index(&self, field: *mut u32) -> &AtomicU32 {
        // SAFETY: `field` is `first` or `last` of the mapped ring: aligned, valid as long as
        // `self`, and only ever accessed atomically by this process.
        unsafe { AtomicU32::from_ptr(field) }
    }

    /// Takes the oldest entry, if any. Callers serialise calls (one consumer at a time).
    pub fn pop(&self) -> Option<kvm_coalesced_mmio> {
        // SAFETY: `ring` is the mapped ring; only raw field addresses are taken.
        let (first, last) = unsafe { (&raw mut (*self.ring).first, &raw mut (*self.ring).last) };
        let first_now = self.index(first).load(Ordering::Relaxed);
        let last_now = self.index(last).load(Ordering::Relaxed);
        if first_now == last_now || first_now >= self.entries {
            return None;
        }
        // Pairs with KVM's smp_wmb() before it moved `last`: the entry is complete.
        fence(Ordering::Acquire);
        // SAFETY: `first_now < entries`, so the entry lies inside the mapping; KVM does not
        // write it again until `first` moves past it.
        let entry = unsafe {
            (*self.ring)
                .coalesced_mmio
                .as_ptr()
                .add(first_now as usize)
                .read_volatile()
        };
        // The entry is read before KVM may reuse its slot.
        fence(Ordering::Release);
        self.index(first)
            .store((first_now + 1) % self.entries, Ordering::Relaxed);
        Some(entry)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used.
        unsafe { libc::munmap(self.ring.cast(), self.len) };
    }
}

/// `KVM_GET_DEVICE_ATTR` of the vCPU's `KVM_VCPU_TSC_OFFSET`: guest TSC = host TSC + offset.
pub fn tsc_offset(vcpu_fd: RawFd) -> io::Result<u64> {
    let mut offset = 0u64;
    let attr = kvm_bindings::kvm_device_attr {
        flags: 0,
        group: 0, // KVM_VCPU_TSC_CTRL
        attr: 0,  // KVM_VCPU_TSC_OFFSET
        addr: &raw mut offset as u64,
    };
    const KVM_GET_DEVICE_ATTR: libc::c_ulong = 1 << 30
        | (std::mem::size_of::<kvm_bindings::kvm_device_attr>() as libc::c_ulong) << 16
        | KVMIO << 8
        | 0xe2;
    // SAFETY: the ioctl reads `attr` and writes a u64 to `offset`, which outlives the call.
    if unsafe { libc::ioctl(vcpu_fd, KVM_GET_DEVICE_ATTR as _, &attr) } < 0 {
        return last_os_error("KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET)");
    }
    Ok(offset)
}
