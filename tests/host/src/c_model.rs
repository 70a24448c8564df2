//! The expressions of `virt/kvm/coalesced_mmio.c` (Linux 6.12), transcribed with C's integer
//! conversions written out: `int` to `u64` sign-extends, unsigned arithmetic wraps.

/// `coalesced_mmio_in_range(dev, addr, len)`.
pub(crate) fn in_range(zone_addr: u64, zone_size: u32, addr: u64, len: i32) -> bool {
    if len < 0 {
        return false;
    }
    // `addr + len`: len is converted to u64 (it is >= 0 here), the sum wraps.
    let end = addr.wrapping_add(len as i64 as u64);
    if end < addr {
        return false;
    }
    if addr < zone_addr {
        return false;
    }
    // `dev->zone.addr + dev->zone.size`: u64 + u32, wrapping.
    if end > zone_addr.wrapping_add(zone_size as u64) {
        return false;
    }
    true
}

/// The ring-full test of `coalesced_mmio_write()`, `true` when the write is refused.
pub(crate) fn refused(first: u32, last: u32, max: u32) -> bool {
    last >= max || last.wrapping_add(1) % max == first
}

/// The 6.11 ring-full test that the 6.12 one replaced: `(first - last - 1) % MAX == 0` in u32.
#[expect(
    clippy::manual_is_multiple_of,
    reason = "a transcription of the C expression"
)]
pub(crate) fn refused_before_6_12(first: u32, last: u32, max: u32) -> bool {
    last >= max || first.wrapping_sub(last).wrapping_sub(1) % max == 0
}
