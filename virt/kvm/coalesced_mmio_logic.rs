// SPDX-License-Identifier: GPL-2.0

//! The arithmetic of coalesced MMIO/PIO, computed exactly as `coalesced_mmio.c` computes it.
//!
//! Every input here can come from userspace: zones come from `KVM_(UN)REGISTER_COALESCED_MMIO`, and
//! the ring indices live in a page that userspace may rewrite at any moment. Rust's overflow checks
//! are on in the kernel, so nothing here may panic; where C relies on unsigned wrap-around, this
//! module wraps on purpose and gives the same answer.
//!
//! This module uses nothing but `core`, so that the host test crate (`tests/host` in our
//! repository) compiles the very same file and checks it against a transcription of the C.

/// Whether a `len`-byte access at `addr` lies wholly inside the zone `[zone_addr, zone_addr +
/// zone_size)`: C's `coalesced_mmio_in_range()`.
///
/// `len` is a C `int`, as in the C: a write passes its access size (1 to 8), and unregistering
/// passes the requested zone's `u32` size converted to `int`, so a size of 2^31 or more is negative
/// and matches nothing. Both sums wrap around `u64` as in C: an access that wraps is refused, while
/// a zone whose end wraps has an end below its start and contains nothing.
pub(crate) fn zone_contains(zone_addr: u64, zone_size: u32, addr: u64, len: i32) -> bool {
    let Ok(len) = u64::try_from(len) else {
        return false;
    };
    let end = addr.wrapping_add(len);
    end >= addr && addr >= zone_addr && end <= zone_addr.wrapping_add(u64::from(zone_size))
}

/// Where the next ring entry goes, and the value `last` takes once it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insert {
    /// Index of the entry to fill: always below the ring size.
    pub(crate) slot: u32,
    /// The new `last`, published after the entry is filled.
    pub(crate) next_last: u32,
}

/// Finds the slot for one more entry in a ring of `max` entries whose userspace-visible indices
/// read `first` and `last`; `None` when the write must not be coalesced.
///
/// `last` is only ever used as an index after the bound check (CVE-2019-14821: userspace wrote an
/// out-of-range `last` and KVM wrote outside the ring). One entry always stays empty, so that
/// `first == last` means empty: the ring is full when advancing `last` would reach `first`. The
/// test is `(last + 1) % max == first` and not the older `(first - last - 1) % max == 0`, which
/// wrapped in `u32` and called a ring with 84 free entries full (fixed in 6.12). `first` is
/// compared, never used as an index, so any value of it is harmless.
pub(crate) fn next_insert(first: u32, last: u32, max: u32) -> Option<Insert> {
    if last >= max {
        return None;
    }
    // `last < max <= u32::MAX`, so `last + 1` cannot overflow, and `max > 0` here.
    let next_last = (last + 1) % max;
    if next_last == first {
        return None;
    }
    Some(Insert {
        slot: last,
        next_last,
    })
}
