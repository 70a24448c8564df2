// SPDX-License-Identifier: GPL-2.0

//! The C declarations our Rust uses: the kernel crate's bindings, and KVM's.
//!
//! The kernel crate's bindings have no KVM declarations (`rust/bindings/bindings_helper.h` does
//! not include KVM's headers, and a distribution's kernel crate, which a `kvm.ko` built out of
//! tree uses, has none). `Makefile.bindings` generates them for `kvm.ko` from `bindings_helper.h`
//! with the kernel's own bindgen command; everything else comes from the kernel crate's bindings.
//! The generated items are defined here, so they take precedence over the kernel crate's glob
//! import. The types our Rust hands to the kernel crate (`mutex`, `spinlock_t`, `list_head`,
//! `file`, ...) are not generated, so they are the kernel crate's own and `Lock::from_raw` and
//! friends accept pointers to them.

// What the kernel crate's bindings allow, on their generated code and on the crate.
#![allow(
    clippy::all,
    clippy::as_underscore,
    clippy::cast_lossless,
    clippy::ptr_as_ptr,
    clippy::ref_as_ptr,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    improper_ctypes,
    unnecessary_transmutes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn
)]

pub(crate) use kernel::bindings::*;
use kernel::ffi;
use pin_init::{MaybeZeroable, Zeroable};

// What the kernel crate's bindings define by hand for the types the kernel's bindgen parameters
// blocklist.
type __kernel_size_t = usize;
type __kernel_ssize_t = isize;
type __kernel_ptrdiff_t = isize;

// SAFETY: `__BindgenBitfieldUnit<Storage>` is a newtype around `Storage`, as in the kernel crate's
// bindings.
unsafe impl<Storage> Zeroable for __BindgenBitfieldUnit<Storage> where Storage: Zeroable {}

// Generated into the object tree: in tree, `virt/kvm/rust/` of the kernel's; out of tree, the
// module's own directory, which is where this file is.
#[cfg(not(kvm_out_of_tree))]
include!(concat!(
    env!("OBJTREE"),
    "/virt/kvm/rust/bindings_generated.rs"
));
#[cfg(kvm_out_of_tree)]
include!("bindings_generated.rs");
