//! Compiles the kernel's `virt/kvm/coalesced_mmio_logic.rs` unchanged, so that its tests run on the
//! host; `c_model` transcribes the C expressions it must agree with. Everything is test-only.

#[cfg(test)]
#[path = "../../../virt/kvm/coalesced_mmio_logic.rs"]
mod logic;

#[cfg(test)]
mod c_model;

#[cfg(test)]
mod tests;
