// SPDX-License-Identifier: GPL-2.0
//! rtc-vmm: a tiny VMM, on rust-vmm's kvm-ioctls, whose guest reads the CMOS real-time clock the
//! way a PC operating system does, to show what coalesced I/O saves.
//!
//!   rtc-vmm [--coalesce none|pio|mmio|buffer] [--mmio] [--iterations N] [--json] [--drop-replay N]
//!           [--latency [--think N]]
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
//!
//! `--coalesce buffer` puts port 0x70 in a coalesced MMIO buffer (`KVM_CAP_COALESCED_MMIO2`, see
//! `buffer.rs`) instead of the VM's ring, and a drainer thread, woken by poll(), replays the index
//! writes as they come; an exit still drains what the thread has not, before it is emulated.
//! `--latency` runs a guest that stamps each index write with its TSC and then works for `--think`
//! loop turns before the data access: the VMM reports how long after each index write it saw
//! it (at its own exit, at the next exit, or in the drainer).

mod buffer;
mod cmos;
mod guest;

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use buffer::Buffer;

use kvm_bindings::{kvm_coalesced_mmio, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuExit, VcpuFd};

use cmos::{Cmos, DateTime};

/// The PC RTC's index and data ports.
const RTC_INDEX_PORT: u16 = 0x70;
const RTC_DATA_PORT: u16 = 0x71;
/// The coalesced MMIO buffer's ring: as many entries as the VM's ring has with 4 KiB pages.
const BUFFER_ENTRIES: u32 = 170;
/// Guest RAM: 64 KiB at guest-physical 0, enough for the code at 0x1000.
const RAM_SIZE: usize = 0x10000;
/// RTC accesses (index write + data access) per guest iteration.
const ACCESSES_PER_ITERATION: u64 = 9;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Coalesce {
    None,
    Pio,
    Mmio,
    Buffer,
}

struct Options {
    coalesce: Coalesce,
    mmio: bool,
    iterations: u32,
    json: bool,
    /// The 1-based number of a replayed index write to lose (fault injection).
    drop_replay: Option<u64>,
    latency: bool,
    think: u32,
}

fn usage() -> String {
    "usage: rtc-vmm [--coalesce none|pio|mmio|buffer] [--mmio] [--iterations N] [--json] \
     [--drop-replay N] [--latency [--think N]]"
        .into()
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        coalesce: Coalesce::None,
        mmio: false,
        iterations: 10_000,
        json: false,
        drop_replay: None,
        latency: false,
        think: 500_000,
    };
    let mut args = args.skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--coalesce" => {
                opts.coalesce = match args.next().as_deref() {
                    Some("none") => Coalesce::None,
                    Some("pio") => Coalesce::Pio,
                    Some("mmio") => Coalesce::Mmio,
                    Some("buffer") => Coalesce::Buffer,
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
            "--latency" => opts.latency = true,
            "--think" => opts.think = args.next().and_then(|n| n.parse().ok()).ok_or_else(usage)?,
            _ => return Err(usage()),
        }
    }
    if opts.coalesce == Coalesce::Mmio {
        opts.mmio = true;
    }
    if matches!(opts.coalesce, Coalesce::Pio | Coalesce::Buffer) && opts.mmio {
        return Err(
            "--coalesce pio|buffer coalesce the port RTC; they cannot go with --mmio".into(),
        );
    }
    if opts.latency && opts.mmio {
        return Err("--latency runs the port RTC guest; it cannot go with --mmio".into());
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
    /// Index writes that came through the coalesced ring (or buffer) instead.
    replayed: u64,
    /// Of those, the ones the drainer thread replayed (`--coalesce buffer`).
    replayed_by_drainer: u64,
    nanos: u128,
    /// `--latency`: for each time the VMM saw new index writes, how long after the newest one
    /// was made (TSC ticks), and whether the drainer saw it.
    seen: Vec<(u32, bool)>,
    tsc_khz: u32,
    tsc_offset_drift: u64,
}

/// What both the vCPU thread and the drainer thread change: the RTC and the statistics.
struct Replayer {
    cmos: Cmos,
    drop_replay: Option<u64>,
    stats: Stats,
    /// `--latency`: the guest's stamp, and the vCPU's TSC offset to compare it with ours.
    stamp: Option<(*const u32, u64)>,
    /// The drainer thread's error, if it met one.
    error: Option<String>,
}

// SAFETY: `stamp` points into the guest RAM, which is leaked and lives as long as the process;
// it is only read with volatile reads.
unsafe impl Send for Replayer {}

struct Machine {
    vcpu: VcpuFd,
    mmio: bool,
    replayer: Arc<Mutex<Replayer>>,
    buffer: Option<Arc<Buffer>>,
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
        let think = guest::THINK_ADDR as usize;
        ram[think..think + 4].copy_from_slice(&opts.think.to_le_bytes());
        let stamp = ram[guest::STAMP_ADDR as usize..].as_ptr().cast::<u32>();
        let code = guest::code(opts.mmio, opts.latency);
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

        let mut buffer = None;
        if opts.coalesce == Coalesce::Buffer {
            if kvm.check_extension_raw(buffer::KVM_CAP_COALESCED_MMIO2.into()) <= 0 {
                return fail("KVM lacks KVM_CAP_COALESCED_MMIO2 (coalesced MMIO buffers)");
            }
            let b = Buffer::new(vm.as_raw_fd(), BUFFER_ENTRIES).map_err(|e| e.to_string())?;
            b.register_pio(vm.as_raw_fd(), RTC_INDEX_PORT.into(), 1)
                .map_err(|e| e.to_string())?;
            buffer = Some(Arc::new(b));
        } else if opts.coalesce != Coalesce::None {
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
        let mut stats = Stats::default();
        let stamp = if opts.latency {
            stats.tsc_khz = vcpu
                .get_tsc_khz()
                .map_err(|e| format!("KVM_GET_TSC_KHZ: {e}"))?;
            let offset = buffer::tsc_offset(vcpu.as_raw_fd()).map_err(|e| e.to_string())?;
            Some((stamp, offset))
        } else {
            None
        };
        // The VM lives as long as its vCPU and buffer file descriptors keep it alive in the
        // kernel.
        std::mem::forget(vm);
        Ok(Machine {
            vcpu,
            mmio: opts.mmio,
            replayer: Arc::new(Mutex::new(Replayer {
                cmos: Cmos::new(DateTime::now),
                drop_replay: opts.drop_replay,
                stats,
                stamp,
                error: None,
            })),
            buffer,
        })
    }

    /// The state the drainer thread shares with us, locked.
    fn replayer(&self) -> Result<std::sync::MutexGuard<'_, Replayer>, String> {
        self.replayer
            .lock()
            .map_err(|_| "a thread panicked".to_string())
    }

    /// The drainer: replays the buffer's entries as poll() reports them, until `stop`.
    fn drainer(
        buffer: Arc<Buffer>,
        replayer: Arc<Mutex<Replayer>>,
        stop: Arc<AtomicBool>,
    ) -> impl FnOnce() {
        move || {
            while !stop.load(Ordering::Relaxed) {
                let ready = match buffer.wait(100) {
                    Ok(ready) => ready,
                    Err(e) => {
                        if let Ok(mut r) = replayer.lock() {
                            r.error = Some(e.to_string());
                        }
                        return;
                    }
                };
                if !ready {
                    continue;
                }
                let Ok(mut r) = replayer.lock() else { return };
                // A buffer holds the port RTC's index writes (--coalesce buffer is port only).
                if let Err(e) = r.replay_all(std::iter::from_fn(|| buffer.pop()), false, true) {
                    r.error = Some(e);
                    return;
                }
            }
        }
    }

    /// Runs the guest to its final HLT, with the drainer thread beside it for a buffer.
    fn run(&mut self) -> Result<Stats, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let drainer = self.buffer.clone().map(|buffer| {
            std::thread::spawn(Self::drainer(buffer, self.replayer.clone(), stop.clone()))
        });
        let start = Instant::now();
        let result = self.run_vcpu();
        let nanos = start.elapsed().as_nanos();
        stop.store(true, Ordering::Relaxed);
        if let Some(thread) = drainer {
            thread
                .join()
                .map_err(|_| "the drainer thread panicked".to_string())?;
        }
        let mut r = self.replayer()?;
        if let Some(e) = r.error.take() {
            return fail(format!("drainer thread: {e}"));
        }
        result?;
        if let Some((_, offset)) = r.stamp {
            let now = buffer::tsc_offset(self.vcpu.as_raw_fd()).map_err(|e| e.to_string())?;
            r.stats.tsc_offset_drift = now.wrapping_sub(offset);
        }
        r.stats.nanos = nanos;
        Ok(std::mem::take(&mut r.stats))
    }

    fn run_vcpu(&mut self) -> Result<(), String> {
        loop {
            let exit = self.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
            // What exited, copied out so that the ring can be replayed before it is emulated.
            let access = match exit {
                VcpuExit::IoOut(port, data) => Access::Write(port.into(), data[0], true),
                VcpuExit::IoIn(port, data) => Access::Read(port.into(), true, data.as_mut_ptr()),
                VcpuExit::MmioWrite(addr, data) => Access::Write(addr, data[0], false),
                VcpuExit::MmioRead(addr, data) => Access::Read(addr, false, data.as_mut_ptr()),
                VcpuExit::Hlt => Access::Halt,
                other => return fail(format!("unexpected exit {other:?}")),
            };
            // The index writes coalesced since the last exit, oldest first, replayed before the
            // access is emulated: from the VM's ring (read through the vCPU, before the lock),
            // or from the buffer, what the drainer thread has not taken yet.
            let mut from_vm_ring = Vec::new();
            if self.buffer.is_none() {
                // Empty, or no ring mapped because nothing is coalesced: Ok(None) or an error.
                while let Ok(Some(entry)) = self.vcpu.coalesced_mmio_read() {
                    from_vm_ring.push(entry);
                }
            }
            let from_buffer = self
                .buffer
                .iter()
                .flat_map(|buffer| std::iter::from_fn(|| buffer.pop()));
            let mut r = self.replayer()?;
            r.stats.exits += 1;
            r.replay_all(
                from_vm_ring.into_iter().chain(from_buffer),
                self.mmio,
                false,
            )?;
            match access {
                Access::Halt => return Ok(()),
                Access::Write(port, code, true) if port == guest::FAIL_PORT.into() => {
                    let regs = self.vcpu.get_regs().map_err(|e| e.to_string())?;
                    return fail(format!(
                        "the guest's check failed at iteration {}: {} (code {code})",
                        regs.rbx,
                        guest::failure_name(code)
                    ));
                }
                Access::Write(addr, value, pio) => {
                    r.emulate_write(self.rtc_register(addr, pio)?, value)
                }
                Access::Read(addr, pio, data) => {
                    let value = r.emulate_read(self.rtc_register(addr, pio)?);
                    // SAFETY: `data` points at the first byte of the read's data in the vCPU's
                    // kvm_run mapping, which lives as long as `self.vcpu`; KVM reads it on the
                    // next KVM_RUN to complete the guest's IN or MOV, and nothing else holds a
                    // reference to it now that the exit has been dropped. Every read our guest
                    // makes is one byte wide.
                    unsafe { data.write(value) };
                }
            }
        }
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
}

impl Replayer {
    /// Emulates a write that exited, to the index register (`index`) or the data register.
    fn emulate_write(&mut self, index: bool, value: u8) {
        if index {
            self.stats.index_exits += 1;
            self.cmos.write_index(value);
            self.saw_index_write(false);
        } else {
            self.stats.data_exits += 1;
            self.cmos.write_data(value);
        }
    }

    /// Emulates a read that exited, from the index register (`index`) or the data register.
    fn emulate_read(&mut self, index: bool) -> u8 {
        if index {
            self.stats.index_exits += 1;
            // The index register is write-only; real hardware floats the bus.
            return 0xff;
        }
        self.stats.data_exits += 1;
        self.cmos.read_data()
    }

    /// Replays coalesced index writes, oldest first; `by_drainer`: the drainer thread's.
    fn replay_all(
        &mut self,
        entries: impl IntoIterator<Item = kvm_coalesced_mmio>,
        mmio: bool,
        by_drainer: bool,
    ) -> Result<(), String> {
        let mut any = false;
        for e in entries {
            self.replay(&e, mmio, by_drainer)?;
            any = true;
        }
        if any {
            self.saw_index_write(by_drainer);
        }
        Ok(())
    }

    fn replay(
        &mut self,
        e: &kvm_coalesced_mmio,
        mmio: bool,
        by_drainer: bool,
    ) -> Result<(), String> {
        let want = if mmio {
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
        if by_drainer {
            self.stats.replayed_by_drainer += 1;
        }
        if self.drop_replay != Some(self.stats.replayed) {
            self.cmos.write_index(e.data[0]);
        }
        Ok(())
    }

    /// `--latency`: the VMM has just seen index writes; how long ago was the newest one made?
    /// The guest's TSC is ours plus the vCPU's offset; the guest stored its low 32 bits.
    fn saw_index_write(&mut self, by_drainer: bool) {
        let Some((stamp, offset)) = self.stamp else {
            return;
        };
        // SAFETY: `_rdtsc` has no preconditions on x86-64.
        let now = unsafe { core::arch::x86_64::_rdtsc() }.wrapping_add(offset) as u32;
        // SAFETY: `stamp` is an aligned u32 in the leaked guest RAM, which the guest writes with
        // one 32-bit store; a volatile read sees either the old or the new value.
        let made = unsafe { stamp.read_volatile() };
        self.stats.seen.push((now.wrapping_sub(made), by_drainer));
    }
}

/// `--latency`: how long after an index write the VMM saw it, over the run.
struct Latency {
    median_us: f64,
    p90_us: f64,
    max_us: f64,
    samples: usize,
    by_drainer: usize,
    drift_ticks: u64,
}

impl Latency {
    fn of(s: &Stats) -> Option<Self> {
        if s.seen.is_empty() || s.tsc_khz == 0 {
            return None;
        }
        let mut us: Vec<f64> = s
            .seen
            .iter()
            .map(|&(ticks, _)| f64::from(ticks) * 1000.0 / f64::from(s.tsc_khz))
            .collect();
        us.sort_by(f64::total_cmp);
        let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
        Some(Latency {
            median_us: at(0.5),
            p90_us: at(0.9),
            max_us: at(1.0),
            samples: us.len(),
            by_drainer: s.seen.iter().filter(|&&(_, d)| d).count(),
            drift_ticks: s.tsc_offset_drift,
        })
    }

    fn json(&self, think: u32) -> String {
        format!(
            "\"think_loops\":{think},\"index_seen_after_us\":{{\"median\":{:.1},\"p90\":{:.1},\
             \"max\":{:.1},\"samples\":{},\"by_drainer\":{},\"tsc_offset_drift_ticks\":{}}},",
            self.median_us,
            self.p90_us,
            self.max_us,
            self.samples,
            self.by_drainer,
            self.drift_ticks
        )
    }

    fn text(&self, think: u32) -> String {
        format!(
            "; with {think} loop turns after each index write, the VMM saw it {:.1} us later \
             (median; p90 {:.1}, max {:.1}; {} of {} seen by the drainer)",
            self.median_us, self.p90_us, self.max_us, self.by_drainer, self.samples
        )
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
    let result = Machine::new(&opts).and_then(|mut m| m.run());
    let coalesce = match opts.coalesce {
        Coalesce::None => "none",
        Coalesce::Pio => "pio",
        Coalesce::Mmio => "mmio",
        Coalesce::Buffer => "buffer",
    };
    let bus = if opts.mmio { "mmio" } else { "pio" };
    match result {
        Ok(s) => {
            let accesses = u64::from(opts.iterations) * ACCESSES_PER_ITERATION;
            let ns_per_access = s.nanos as f64 / accesses as f64;
            let latency = Latency::of(&s);
            if opts.json {
                println!(
                    "{{\"coalesce\":\"{coalesce}\",\"rtc\":\"{bus}\",\"iterations\":{},\
                     \"accesses\":{accesses},\"userspace_exits\":{},\"index_exits\":{},\
                     \"data_exits\":{},\"replayed\":{},\"replayed_by_drainer\":{},\
                     \"ns_per_access\":{ns_per_access:.1},{}\"clock_reads_ok\":true}}",
                    opts.iterations,
                    s.exits,
                    s.index_exits,
                    s.data_exits,
                    s.replayed,
                    s.replayed_by_drainer,
                    latency.map_or(String::new(), |l| l.json(opts.think)),
                );
            } else {
                println!(
                    "rtc-vmm: {} iterations, RTC on {bus}, coalescing {coalesce}: {} userspace \
                     exits ({} index-register, {} data-register), {} index writes replayed from \
                     the ring ({} by the drainer thread), {ns_per_access:.0} ns per RTC access; \
                     every clock read checked{}",
                    opts.iterations,
                    s.exits,
                    s.index_exits,
                    s.data_exits,
                    s.replayed,
                    s.replayed_by_drainer,
                    latency.map_or(String::new(), |l| l.text(opts.think)),
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
