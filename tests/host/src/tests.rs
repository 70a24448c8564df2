//! Properties of the coalesced MMIO arithmetic against the C transcription. The edge cases are in
//! `virt/kvm/coalesced_mmio_logic.rs` itself, where KUnit runs them in the kernel too.

use crate::{
    c_model,
    logic::{next_insert, zone_contains},
};
use proptest::prelude::*;

/// `KVM_COALESCED_MMIO_MAX` with 4 KiB pages: (4096 - 8) / 24.
const MAX: u32 = 170;

#[test]
fn the_6_11_full_test_in_the_c_model() {
    // The transcription of the C agrees: the old test refused first = 0, last = 85; 6.12's does not.
    assert!(c_model::refused_before_6_12(0, 85, MAX));
    assert!(!c_model::refused(0, 85, MAX));
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
