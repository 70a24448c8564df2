//! Edge cases of the coalesced MMIO arithmetic, and properties against the C transcription.

use crate::{
    c_model,
    logic::{next_insert, zone_contains, Insert},
};
use proptest::prelude::*;

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
    // An unregister request of 2 GiB or more reaches in_range as a negative int.
    assert!(!zone_contains(0, u32::MAX, 0, 0x8000_0000u32 as i32));
    assert!(!zone_contains(0, u32::MAX, 0, u32::MAX as i32));
}

#[test]
fn access_wrapping_u64_is_refused() {
    assert!(!zone_contains(0, u32::MAX, u64::MAX, 1));
    assert!(!zone_contains(u64::MAX - 3, 4, u64::MAX - 3, 8));
    // The very last bytes of the address space, ending exactly at 2^64, wrap to 0: refused too.
    assert!(!zone_contains(u64::MAX - 7, 8, u64::MAX - 7, 8));
}

#[test]
fn zone_wrapping_u64_contains_nothing() {
    // zone.addr + zone.size wraps to a small value: C compares against that wrapped end.
    for addr in [u64::MAX - 15, u64::MAX - 8, u64::MAX - 1, 0, 1, 2] {
        for len in 0..=8 {
            assert!(
                !zone_contains(u64::MAX - 15, 32, addr, len),
                "addr {addr:#x} len {len}"
            );
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
    assert_eq!(
        next_insert(0, 0, MAX),
        Some(Insert {
            slot: 0,
            next_last: 1
        })
    );
}

#[test]
fn last_entry_wraps_to_zero() {
    assert_eq!(
        next_insert(5, MAX - 1, MAX),
        Some(Insert {
            slot: MAX - 1,
            next_last: 0
        })
    );
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
            assert_eq!(
                next_insert(first, last, MAX),
                None,
                "first {first} last {last}"
            );
        }
    }
}

#[test]
fn corrupt_first_is_only_compared() {
    for first in [MAX, MAX + 1, 1 << 31, u32::MAX] {
        for last in [0, 1, MAX - 2, MAX - 1] {
            let insert = next_insert(first, last, MAX).expect("a bad first never matches");
            assert_eq!(insert.slot, last);
            assert!(insert.next_last < MAX);
        }
    }
}

#[test]
fn every_start_index_fills_169_entries() {
    // The upstream selftest's loop: for each ring start, 169 writes fit and the 170th exits.
    for start in 0..MAX {
        let (first, mut last) = (start, start);
        for n in 0..MAX - 1 {
            let insert =
                next_insert(first, last, MAX).unwrap_or_else(|| panic!("start {start} write {n}"));
            assert_eq!(insert.slot, last);
            last = insert.next_last;
        }
        assert_eq!(next_insert(first, last, MAX), None, "start {start}");
    }
}

#[test]
fn the_6_11_full_test_was_wrong_and_ours_is_not() {
    // 2^32 mod 170 = 86, so (0 - 85 - 1) % 170 == 0 in u32: the old test called a ring with
    // first = 0 and last = 85 (85 used, 84 free) full.
    assert!(c_model::refused_before_6_12(0, 85, MAX));
    assert!(!c_model::refused(0, 85, MAX));
    assert_eq!(
        next_insert(0, 85, MAX),
        Some(Insert {
            slot: 85,
            next_last: 86
        })
    );
}

proptest! {
    #[test]
    fn in_range_equals_c(zone_addr: u64, zone_size: u32, addr: u64, len: i32) {
        prop_assert_eq!(zone_contains(zone_addr, zone_size, addr, len),
                        c_model::in_range(zone_addr, zone_size, addr, len));
    }

    #[test]
    fn in_range_equals_c_near_edges(zone_addr in prop_oneof![Just(0u64), Just(u64::MAX), Just(u64::MAX - 7), 0u64..64, (u64::MAX - 64)..=u64::MAX],
                                    zone_size in prop_oneof![Just(0u32), Just(u32::MAX), Just(1u32 << 31), 0u32..64],
                                    delta in -64i64..64, len in prop_oneof![-2i32..=9, Just(i32::MIN), Just(i32::MAX)]) {
        let addr = zone_addr.wrapping_add(delta as u64);
        prop_assert_eq!(zone_contains(zone_addr, zone_size, addr, len),
                        c_model::in_range(zone_addr, zone_size, addr, len));
    }

    #[test]
    fn insert_equals_c(first: u32, last: u32) {
        let ours = next_insert(first, last, MAX);
        prop_assert_eq!(ours.is_none(), c_model::refused(first, last, MAX));
        if let Some(i) = ours {
            prop_assert!(i.slot < MAX && i.next_last < MAX);
            prop_assert_eq!(i.slot, last);
            prop_assert_eq!(i.next_last, (last + 1) % MAX);
        }
    }

    #[test]
    fn insert_equals_c_in_ring(first in 0u32..MAX + 2, last in 0u32..MAX + 2, max in 1u32..400) {
        let ours = next_insert(first, last, max);
        prop_assert_eq!(ours.is_none(), c_model::refused(first, last, max));
        if let Some(i) = ours {
            prop_assert!(i.slot < max && i.next_last < max);
        }
    }
}
