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
/// `len` is a C `int`, as in the C: unregistering passes the requested zone's `u32` size
/// converted to `int`, so a size of 2^31 or more is negative and matches nothing. Both sums wrap
/// around `u64` as in C: an access that wraps is refused, while a zone whose end wraps has an end
/// below its start and contains nothing.
pub(crate) fn zone_contains(zone_addr: u64, zone_size: u32, addr: u64, len: i32) -> bool {
    let Ok(len) = u64::try_from(len) else {
        return false;
    };
    span_inside(zone_addr, zone_size, addr, len)
}

/// [`zone_contains`] for a guest access, whose length (1 to 8 bytes) is never negative: the
/// same answer for every `len` that fits an `int`, without converting it to one and back.
pub(crate) fn access_inside(zone_addr: u64, zone_size: u32, addr: u64, len: usize) -> bool {
    // `usize` fits `u64` on every architecture Linux supports; were it wider, refusing is safe.
    let Ok(len) = u64::try_from(len) else {
        return false;
    };
    span_inside(zone_addr, zone_size, addr, len)
}

fn span_inside(zone_addr: u64, zone_size: u32, addr: u64, len: u64) -> bool {
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

/// The bytes a coalesced MMIO buffer's ring of `entries` entries takes, rounded up to whole pages
/// of `page_size` bytes: the `mmap_size` that userspace maps. `None` when `entries` is refused:
/// it must be 2 to `max_entries` (a ring with a single entry could never hold anything, since
/// one entry always stays free). A ring is a `header`-byte header and `entry`-byte entries.
///
/// `entries` comes from userspace, so this cannot overflow or divide by zero whatever the
/// arguments.
#[cfg(any(
    test,
    CONFIG_KVM_COALESCED_MMIO_BUFFERS,
    CONFIG_KVM_COALESCED_MMIO_RUST_KUNIT_TEST
))]
pub(crate) fn buffer_ring_bytes(
    entries: u32,
    max_entries: u32,
    header: usize,
    entry: usize,
    page_size: usize,
) -> Option<usize> {
    if !(2..=max_entries).contains(&entries) || page_size == 0 {
        return None;
    }
    let bytes = usize::try_from(entries)
        .ok()?
        .checked_mul(entry)?
        .checked_add(header)?;
    bytes.checked_next_multiple_of(page_size)
}

/// Whether two zones share an address: `[a_addr, a_addr + a_size)` and `[b_addr, b_addr +
/// b_size)`. A zone whose end wraps around `u64` contains no access ([`zone_contains`]), nor
/// does a zone of size 0, so neither shares an address with anything.
pub(crate) fn zones_overlap(a_addr: u64, a_size: u32, b_addr: u64, b_size: u32) -> bool {
    let (Some(a_end), Some(b_end)) = (
        a_addr.checked_add(u64::from(a_size)),
        b_addr.checked_add(u64::from(b_size)),
    ) else {
        return false;
    };
    a_addr < b_end && b_addr < a_end
}

/// The edges of the range check and of the ring's slot and full test: run by `cargo test` on the
/// host (`tests/host`, which adds properties against a transcription of the C) and, with
/// `CONFIG_KVM_COALESCED_MMIO_RUST_KUNIT_TEST`, by KUnit in the kernel when `kvm.ko` is loaded.
/// KUnit's `assert!` takes no message, hence none here.
#[cfg(any(test, CONFIG_KVM_COALESCED_MMIO_RUST_KUNIT_TEST))]
#[cfg_attr(
    CONFIG_KVM_COALESCED_MMIO_RUST_KUNIT_TEST,
    kernel::prelude::kunit_tests(kvm_coalesced_mmio_logic)
)]
mod tests {
    use super::*;

    /// `KVM_COALESCED_MMIO_MAX` with 4 KiB pages: (4096 - 8) / 24.
    const MAX: u32 = 170;

    #[test]
    fn access_inside_zone() {
        assert!(zone_contains(0x1000, 0x10, 0x1000, 8));
        assert!(zone_contains(0x1000, 0x10, 0x1008, 8));
        assert!(zone_contains(0x70, 1, 0x70, 1));
    }

    #[test]
    fn access_crossing_either_end() {
        assert!(!zone_contains(0x1000, 0x10, 0xfff, 2));
        assert!(!zone_contains(0x1000, 0x10, 0x100c, 8));
        assert!(!zone_contains(0x70, 1, 0x70, 2));
    }

    #[test]
    fn negative_len_matches_nothing() {
        assert!(!zone_contains(0, u32::MAX, 0, -1));
        assert!(!zone_contains(0, u32::MAX, 0, i32::MIN));
        // An unregister request of 2 GiB or more reaches the range check as a negative int.
        assert!(!zone_contains(0, u32::MAX, 0, 0x8000_0000u32 as i32));
        assert!(!zone_contains(0, u32::MAX, 0, u32::MAX as i32));
    }

    #[test]
    fn access_wrapping_u64_is_refused() {
        assert!(!zone_contains(0, u32::MAX, u64::MAX, 1));
        assert!(!zone_contains(u64::MAX - 3, 4, u64::MAX - 3, 8));
        // The very last bytes of the address space, ending exactly at 2^64, wrap to 0: refused.
        assert!(!zone_contains(u64::MAX - 7, 8, u64::MAX - 7, 8));
    }

    #[test]
    fn zone_wrapping_u64_contains_nothing() {
        // zone.addr + zone.size wraps to a small value: C compares against that wrapped end.
        for addr in [u64::MAX - 15, u64::MAX - 8, u64::MAX - 1, 0, 1, 2] {
            for len in 0..=8 {
                assert!(!zone_contains(u64::MAX - 15, 32, addr, len));
            }
        }
    }

    #[test]
    fn guest_access_check_agrees_with_the_int_one() {
        for (zone_addr, zone_size) in [
            (0x1000, 0x10),
            (0x70, 1),
            (u64::MAX - 15, 32),
            (0, u32::MAX),
        ] {
            for addr in [
                0,
                0x6f,
                0x70,
                0xfff,
                0x1000,
                0x1008,
                0x100f,
                u64::MAX - 8,
                u64::MAX,
            ] {
                for len in 0..=8usize {
                    let as_int = zone_contains(zone_addr, zone_size, addr, len as i32);
                    assert_eq!(access_inside(zone_addr, zone_size, addr, len), as_int);
                }
            }
        }
    }

    #[test]
    fn size_zero_zone_holds_only_empty_access_at_its_address() {
        assert!(zone_contains(0x1000, 0, 0x1000, 0));
        assert!(!zone_contains(0x1000, 0, 0x1000, 1));
        assert!(!zone_contains(0x1000, 0, 0xfff, 1));
    }

    #[test]
    fn zone_up_to_top_of_address_space() {
        // Largest size whose end does not wrap: [2^64 - 2^32 + 1, 2^64 - 1].
        let addr = u64::MAX - u64::from(u32::MAX);
        assert!(zone_contains(addr, u32::MAX, u64::MAX - 8, 8));
        assert!(!zone_contains(addr, u32::MAX, u64::MAX - 7, 8));
    }

    #[test]
    fn empty_ring_takes_entry_zero() {
        let insert = Insert {
            slot: 0,
            next_last: 1,
        };
        assert_eq!(next_insert(0, 0, MAX), Some(insert));
    }

    #[test]
    fn last_entry_wraps_to_zero() {
        let insert = Insert {
            slot: MAX - 1,
            next_last: 0,
        };
        assert_eq!(next_insert(5, MAX - 1, MAX), Some(insert));
    }

    #[test]
    fn one_slot_always_stays_empty() {
        // 169 entries written from first = 0: last = 169, and the 170th write is refused.
        assert_eq!(next_insert(0, MAX - 1, MAX), None);
        assert_eq!(next_insert(10, 9, MAX), None);
        assert!(next_insert(10, 8, MAX).is_some());
    }

    #[test]
    fn corrupt_last_is_never_an_index() {
        for last in [MAX, MAX + 1, 1 << 31, u32::MAX - 1, u32::MAX] {
            for first in [0, 1, MAX - 1, MAX, u32::MAX] {
                assert_eq!(next_insert(first, last, MAX), None);
            }
        }
    }

    #[test]
    fn corrupt_first_is_only_compared() {
        for first in [MAX, MAX + 1, 1 << 31, u32::MAX] {
            for last in [0, 1, MAX - 2, MAX - 1] {
                let insert = next_insert(first, last, MAX);
                assert!(insert.is_some());
                assert!(insert.is_some_and(|i| i.slot == last && i.next_last < MAX));
            }
        }
    }

    #[test]
    fn every_start_index_fills_169_entries() {
        // The upstream selftest's loop: for each ring start, 169 writes fit and the 170th exits.
        for start in 0..MAX {
            let (first, mut last) = (start, start);
            for _ in 0..MAX - 1 {
                let insert = next_insert(first, last, MAX);
                assert!(insert.is_some_and(|i| i.slot == last));
                last = insert.map_or(last, |i| i.next_last);
            }
            assert_eq!(next_insert(first, last, MAX), None);
        }
    }

    #[test]
    fn buffer_sizes() {
        let bytes = |entries| buffer_ring_bytes(entries, 8192, 8, 24, 4096);
        // 170 entries fill one page as the VM's ring does; the next one needs a second page.
        assert_eq!(bytes(2), Some(4096));
        assert_eq!(bytes(MAX), Some(4096));
        assert_eq!(bytes(MAX + 1), Some(2 * 4096));
        // 8 + 8192 * 24 = 196616 bytes, in 49 pages; 64 KiB pages give 4 of them.
        assert_eq!(bytes(8192), Some(49 * 4096));
        assert_eq!(buffer_ring_bytes(8192, 8192, 8, 24, 65536), Some(4 * 65536));
        for refused in [0, 1, 8193, u32::MAX] {
            assert_eq!(bytes(refused), None);
        }
        // Degenerate parameters are refused, never a panic.
        assert_eq!(buffer_ring_bytes(2, 8192, 8, 24, 0), None);
        assert_eq!(
            buffer_ring_bytes(u32::MAX, u32::MAX, usize::MAX, usize::MAX, 4096),
            None
        );
        assert_eq!(buffer_ring_bytes(2, 2, usize::MAX - 8, 4, 4096), None);
    }

    #[test]
    fn overlapping_zones() {
        assert!(zones_overlap(0x70, 2, 0x71, 1));
        assert!(zones_overlap(0x71, 1, 0x70, 2));
        assert!(zones_overlap(0x1000, 8, 0x1000, 8));
        assert!(zones_overlap(0, 1, 0, u32::MAX));
        assert!(zones_overlap(u64::MAX - 8, 8, u64::MAX - 1, 1));
        // Adjacent zones, zones of size 0 and zones that wrap share nothing.
        assert!(!zones_overlap(0x70, 1, 0x71, 1));
        assert!(!zones_overlap(0x71, 1, 0x70, 1));
        assert!(!zones_overlap(0x70, 0, 0x70, 8));
        assert!(!zones_overlap(u64::MAX - 1, 8, u64::MAX - 1, 1));
    }

    #[test]
    fn the_6_11_full_test_was_wrong_and_ours_is_not() {
        // 2^32 mod 170 = 86, so the pre-6.12 test `(first - last - 1) % MAX == 0` in u32 called
        // a ring with first = 0 and last = 85 (85 used, 84 free) full.
        let (first, last) = (0u32, 85u32);
        assert_eq!(first.wrapping_sub(last).wrapping_sub(1) % MAX, 0);
        let insert = Insert {
            slot: 85,
            next_last: 86,
        };
        assert_eq!(next_insert(first, last, MAX), Some(insert));
    }
}
