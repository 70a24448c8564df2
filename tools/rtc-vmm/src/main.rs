// SPDX-License-Identifier: GPL-2.0
//! rtc-vmm: a tiny VMM, on rust-vmm's kvm-ioctls, whose guest reads the CMOS real-time clock the
//! way a PC operating system does, to show what coalesced I/O saves.
//!
//!   rtc-vmm [--coalesce none|pio|mmio] [--mmio] [--iterations N] [--json] [--drop-replay N]
//!
//! The guest (see `guest.rs`) writes a register index to the RTC's index register and then
//! accesses its data register, nine times per iteration, checking every value it reads. Without
//! coalescing each index write exits to this VMM. With `--coalesce pio` the VMM registers a
//! coalesced PIO zone for port 0x70, so KVM appends the index writes to the ring shared with us
//! instead of exiting; with `--coalesce mmio` the guest uses an MMIO RTC and the zone is a
//! coalesced MMIO one (`--mmio` alone: the MMIO RTC without coalescing). On every exit the VMM
//! first replays the ring in order, as QEMU does, then emulates the access that exited, so a lost
//! or misordered replay makes the guest fail its checks. The run fails unless the guest halts
//! after all iterations. `--drop-replay N` loses the Nth replayed write on purpose, so that the
//! harness can check that such a run fails.

mod cmos;
mod guest;

use std::process::ExitCode;
use std::time::Instant;

use kvm_bindings::{kvm_coalesced_mmio, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit, VcpuFd};

use cmos::{Cmos, DateTime};

/// The PC RTC's index and data ports.
const RTC_INDEX_PORT: u16 = 0x70;
const RTC_DATA_PORT: u16 = 0x71;
/// Guest RAM: 64 KiB at guest-physical 0, enough for the code at 0x1000.
const RAM_SIZE: usize = 0x10000;
/// RTC accesses (index write + data access) per guest iteration.
const ACCESSES_PER_ITERATION: u64 = 9;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Coalesce {
    None,
    Pio,
    Mmio,
}

struct Options {
    coalesce: Coalesce,
    mmio: bool,
    iterations: u32,
    json: bool,
    /// The 1-based number of a replayed index write to lose (fault injection).
    drop_replay: Option<u64>,
}

fn usage() -> String {
    "usage: rtc-vmm [--coalesce none|pio|mmio] [--mmio] [--iterations N] [--json] \
     [--drop-replay N]"
        .into()
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        coalesce: Coalesce::None,
        mmio: false,
        iterations: 10_000,
        json: false,
        drop_replay: None,
    };
    let mut args = args.skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--coalesce" => {
                opts.coalesce = match args.next().as_deref() {
                    Some("none") => Coalesce::None,
                    Some("pio") => Coalesce::Pio,
                    Some("mmio") => Coalesce::Mmio,
                    _ => return Err(usage()),
                }
            }
            "--mmio" => opts.mmio = true,
            "--iterations" => {
                opts.iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(usage)?
            }
            "--json" => opts.json = true,
            "--drop-replay" => {
                opts.drop_replay = Some(args.next().and_then(|n| n.parse().ok()).ok_or_else(usage)?)
            }
            _ => return Err(usage()),
        }
    }
    if opts.coalesce == Coalesce::Mmio {
        opts.mmio = true;
    }
    if opts.coalesce == Coalesce::Pio && opts.mmio {
        return Err("--coalesce pio coalesces the port RTC; it cannot go with --mmio".into());
    }
    Ok(opts)
}

/// What one run did, as the VMM saw it.
#[derive(Default)]
struct Stats {
    /// Every return of KVM_RUN to this VMM.
    exits: u64,
    /// Exits for writes to the index register (port 0x70 or the MMIO index byte).
    index_exits: u64,
    /// Exits for the data register.
    data_exits: u64,
    /// Index writes that came through the coalesced ring instead.
    replayed: u64,
    nanos: u128,
}

struct Machine {
    vcpu: VcpuFd,
    cmos: Cmos,
    mmio: bool,
    drop_replay: Option<u64>,
    stats: Stats,
}

/// Fails with a message: the run is not to be trusted.
fn fail<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

impl Machine {
    fn new(opts: &Options) -> Result<Self, String> {
        let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

        // Guest RAM: page-aligned and zeroed, leaked so that it outlives the VM.
        let ram: &'static mut [u8] = Box::leak(vec![0u8; RAM_SIZE + 4096].into_boxed_slice());
        let offset = ram.as_ptr().align_offset(4096);
        let ram = &mut ram[offset..offset + RAM_SIZE];
        let code = guest::code(opts.mmio);
        let load = guest::LOAD_ADDR as usize;
        ram[load..load + code.len()].copy_from_slice(code);
        let region = kvm_userspace_memory_region {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: RAM_SIZE as u64,
            userspace_addr: ram.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is RAM_SIZE bytes of this process's memory that is never freed
        // (leaked above) and that no Rust reference touches while the guest runs.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        for seg in [&mut sregs.cs, &mut sregs.ds, &mut sregs.es, &mut sregs.ss] {
            seg.base = 0;
            seg.selector = 0;
        }
        if opts.mmio {
            sregs.es.base = guest::MMIO_BASE;
            sregs.es.selector = (guest::MMIO_BASE >> 4) as u16;
        }
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = guest::LOAD_ADDR;
        regs.rflags = 2;
        regs.rcx = u64::from(opts.iterations);
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

        if opts.coalesce != Coalesce::None {
            if !kvm.check_extension(Cap::CoalescedMmio) {
                return fail("KVM lacks KVM_CAP_COALESCED_MMIO");
            }
            let zone = match opts.coalesce {
                Coalesce::Pio => IoEventAddress::Pio(RTC_INDEX_PORT.into()),
                _ => IoEventAddress::Mmio(guest::MMIO_BASE),
            };
            vm.register_coalesced_mmio(zone, 1)
                .map_err(|e| format!("KVM_REGISTER_COALESCED_MMIO: {e}"))?;
            vcpu.map_coalesced_mmio_ring()
                .map_err(|e| format!("mapping the coalesced ring: {e}"))?;
        }
        // The VM lives as long as its vCPU file descriptor keeps it alive in the kernel.
        std::mem::forget(vm);
        Ok(Machine {
            vcpu,
            cmos: Cmos::new(DateTime::now),
            mmio: opts.mmio,
            drop_replay: opts.drop_replay,
            stats: Stats::default(),
        })
    }

    /// Applies the index writes KVM coalesced since the last exit, oldest first.
    fn replay_ring(&mut self) -> Result<(), String> {
        loop {
            let entry = match self.vcpu.coalesced_mmio_read() {
                Ok(Some(entry)) => entry,
                // Empty, or no ring mapped because nothing is coalesced.
                Ok(None) | Err(_) => return Ok(()),
            };
            self.replay(&entry)?;
        }
    }

    fn replay(&mut self, e: &kvm_coalesced_mmio) -> Result<(), String> {
        let want = if self.mmio {
            (0, guest::MMIO_BASE)
        } else {
            (1, RTC_INDEX_PORT.into())
        };
        // SAFETY: `pio` and `pad` are two views of the same u32; either is valid to read.
        let pio = unsafe { e.__bindgen_anon_1.pio };
        if (pio, e.phys_addr) != want || e.len != 1 {
            return fail(format!(
                "unexpected ring entry: pio {pio} addr {:#x} len {}",
                e.phys_addr, e.len
            ));
        }
        self.stats.replayed += 1;
        if self.drop_replay != Some(self.stats.replayed) {
            self.cmos.write_index(e.data[0]);
        }
        Ok(())
    }

    /// Runs the guest to its final HLT.
    fn run(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let exit = self.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
            self.stats.exits += 1;
            // What exited, copied out so that the ring can be replayed before it is emulated.
            let access = match exit {
                VcpuExit::IoOut(port, data) => Access::Write(port.into(), data[0], true),
                VcpuExit::IoIn(port, data) => Access::Read(port.into(), true, data.as_mut_ptr()),
                VcpuExit::MmioWrite(addr, data) => Access::Write(addr, data[0], false),
                VcpuExit::MmioRead(addr, data) => Access::Read(addr, false, data.as_mut_ptr()),
                VcpuExit::Hlt => Access::Halt,
                other => return fail(format!("unexpected exit {other:?}")),
            };
            self.replay_ring()?;
            match access {
                Access::Halt => break,
                Access::Write(port, code, true) if port == guest::FAIL_PORT.into() => {
                    let regs = self.vcpu.get_regs().map_err(|e| e.to_string())?;
                    return fail(format!(
                        "the guest's check failed at iteration {}: {} (code {code})",
                        regs.rbx,
                        guest::failure_name(code)
                    ));
                }
                Access::Write(addr, value, pio) => self.emulate_write(addr, value, pio)?,
                Access::Read(addr, pio, data) => {
                    let value = self.emulate_read(addr, pio)?;
                    // SAFETY: `data` points at the first byte of the read's data in the vCPU's
                    // kvm_run mapping, which lives as long as `self.vcpu`; KVM reads it on the
                    // next KVM_RUN to complete the guest's IN or MOV, and nothing else holds a
                    // reference to it now that the exit has been dropped. Every read our guest
                    // makes is one byte wide.
                    unsafe { data.write(value) };
                }
            }
        }
        self.stats.nanos = start.elapsed().as_nanos();
        Ok(())
    }

    /// Which RTC register an access is for: true for the index register, false for data.
    fn rtc_register(&self, addr: u64, pio: bool) -> Result<bool, String> {
        let (index, data) = match (pio, self.mmio) {
            (true, false) => (RTC_INDEX_PORT.into(), RTC_DATA_PORT.into()),
            (false, true) => (guest::MMIO_BASE, guest::MMIO_BASE + 1),
            _ => (u64::MAX, u64::MAX),
        };
        match addr {
            a if a == index => Ok(true),
            a if a == data => Ok(false),
            _ => fail(format!(
                "guest accessed {} {addr:#x}, which is not the RTC",
                if pio { "port" } else { "MMIO" }
            )),
        }
    }

    fn emulate_write(&mut self, addr: u64, value: u8, pio: bool) -> Result<(), String> {
        if self.rtc_register(addr, pio)? {
            self.stats.index_exits += 1;
            self.cmos.write_index(value);
        } else {
            self.stats.data_exits += 1;
            self.cmos.write_data(value);
        }
        Ok(())
    }

    fn emulate_read(&mut self, addr: u64, pio: bool) -> Result<u8, String> {
        if self.rtc_register(addr, pio)? {
            self.stats.index_exits += 1;
            // The index register is write-only; real hardware floats the bus.
            return Ok(0xff);
        }
        self.stats.data_exits += 1;
        Ok(self.cmos.read_data())
    }
}

/// An exit's access, copied out of the borrow of the vCPU: address, value or where the read's
/// value goes, and whether it is a port (true) or MMIO (false).
enum Access {
    Write(u64, u8, bool),
    Read(u64, bool, *mut u8),
    Halt,
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = Machine::new(&opts).and_then(|mut m| m.run().map(|()| m.stats));
    let coalesce = match opts.coalesce {
        Coalesce::None => "none",
        Coalesce::Pio => "pio",
        Coalesce::Mmio => "mmio",
    };
    let bus = if opts.mmio { "mmio" } else { "pio" };
    match result {
        Ok(s) => {
            let accesses = u64::from(opts.iterations) * ACCESSES_PER_ITERATION;
            let ns_per_access = s.nanos as f64 / accesses as f64;
            if opts.json {
                println!(
                    "{{\"coalesce\":\"{coalesce}\",\"rtc\":\"{bus}\",\"iterations\":{},\
                     \"accesses\":{accesses},\"userspace_exits\":{},\"index_exits\":{},\
                     \"data_exits\":{},\"replayed\":{},\"ns_per_access\":{ns_per_access:.1},\
                     \"clock_reads_ok\":true}}",
                    opts.iterations, s.exits, s.index_exits, s.data_exits, s.replayed
                );
            } else {
                println!(
                    "rtc-vmm: {} iterations, RTC on {bus}, coalescing {coalesce}: {} userspace \
                     exits ({} index-register, {} data-register), {} index writes replayed from \
                     the ring, {ns_per_access:.0} ns per RTC access; every clock read checked",
                    opts.iterations, s.exits, s.index_exits, s.data_exits, s.replayed
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rtc-vmm: {e}");
            ExitCode::FAILURE
        }
    }
}
