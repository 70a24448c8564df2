// SPDX-License-Identifier: GPL-2.0
//! The guest: 16-bit real-mode code that reads the RTC the way a PC operating system does, and
//! checks what it reads.
//!
//! Each iteration selects a register through the index register and accesses the data register
//! nine times: seconds, minutes and hours (valid BCD, in range), each followed by status D (valid:
//! 0x80), then status B (BCD, 24-hour: 0x02), then it writes an iteration-dependent byte that is
//! not valid BCD to a CMOS RAM byte and reads it back. The order makes every lost index write
//! visible: the data access then hits the register selected before, whose value fails the check
//! (a clock value is never 0x80, status D is not BCD below 0x60, the RAM byte is not BCD, status
//! B reads 0x02 only from B). So if the VMM replayed a coalesced index write late, out of order
//! or not at all, the guest fails. On a failed check it writes its code (1-6) to port
//! [`FAIL_PORT`] and halts; after the last iteration it halts. The VMM sets ECX to the number of
//! iterations, and for MMIO, ES to the segment of [`MMIO_BASE`], where the index register is at
//! offset 0 and data at offset 1.

use std::arch::global_asm;

/// Port the guest writes a failure code to.
pub const FAIL_PORT: u16 = 0xf4;
/// Guest-physical address of the MMIO RTC (no memory there: accesses exit as MMIO).
pub const MMIO_BASE: u64 = 0xe0000;
/// Guest-physical address the guest code is loaded and started at.
pub const LOAD_ADDR: u64 = 0x1000;
/// The latency program (see [`code`]): where the guest stores the low 32 bits of its TSC just
/// before each index write, and where it reads how many loop turns (a u32) to wait after one.
pub const STAMP_ADDR: u64 = 0x800;
pub const THINK_ADDR: u64 = 0x804;

/// The guest's failure codes, as the guest writes them to [`FAIL_PORT`].
pub fn failure_name(code: u8) -> &'static str {
    match code {
        1 => "seconds not BCD 00-59",
        2 => "minutes not BCD 00-59",
        3 => "hours not BCD 00-23",
        4 => "status B is not 0x02 (BCD, 24-hour)",
        5 => "status D is not 0x80 (valid)",
        6 => "CMOS RAM did not read back what was written",
        _ => "unknown failure code",
    }
}

global_asm!(
    r#"
    .pushsection .rodata.rtc_guest, "a"

    .macro rtc_select reg, mmio, latency=0
        mov al, \reg
    .if \latency
        # When the index write is made, for the VMM to tell how late it sees it.
        push ax
        push dx
        rdtsc
        mov dword ptr ds:[{stamp}], eax
        pop dx
        pop ax
    .endif
    .if \mmio
        mov byte ptr es:[0], al
    .else
        out 0x70, al
    .endif
    .if \latency
        # Work that does not exit, before the data access that does.
        mov ebp, ecx
        mov ecx, dword ptr ds:[{think}]
        test ecx, ecx
        jz 8f
    7:
        dec ecx
        jnz 7b
    8:
        mov ecx, ebp
    .endif
    .endm

    .macro rtc_read mmio
    .if \mmio
        mov al, byte ptr es:[1]
    .else
        in al, 0x71
    .endif
    .endm

    .macro rtc_write mmio
    .if \mmio
        mov byte ptr es:[1], al
    .else
        out 0x71, al
    .endif
    .endm

    # al must be BCD and at most \max, else fail with \code.
    .macro check_bcd max, code
        mov ah, al
        and ah, 0x0f
        cmp ah, 9
        mov dl, \code
        ja 9f
        cmp al, \max
        ja 9f
    .endm

    .macro check_eq value, code
        mov dl, \code
        cmp al, \value
        jne 9f
    .endm

    # One clock-register read checked for BCD <= \max, then status D, which must read 0x80.
    .macro read_clock reg, max, code, mmio, latency
        rtc_select \reg, \mmio, \latency
        rtc_read \mmio
        check_bcd \max, \code
        rtc_select 0x0d, \mmio, \latency
        rtc_read \mmio
        check_eq 0x80, 5
    .endm

    .macro guest_program mmio, latency=0
        .code16
        xor ebx, ebx
    1:
        read_clock 0x00, 0x59, 1, \mmio, \latency
        read_clock 0x02, 0x59, 2, \mmio, \latency
        read_clock 0x04, 0x23, 3, \mmio, \latency
        rtc_select 0x0b, \mmio, \latency
        rtc_read \mmio
        check_eq 0x02, 4
        # CMOS RAM byte 0x40 + (iteration & 0x3f) := ((iteration >> 6) & 0xf) << 4 | 0xa, then
        # read it back. The low nibble makes it invalid BCD, and the byte differs from what the
        # same register held 64 iterations before.
        mov si, bx
        and si, 0x3f
        add si, 0x40
        mov di, bx
        shr di, 2
        and di, 0xf0
        or di, 0x0a
        mov ax, si
        rtc_select al, \mmio, \latency
        mov ax, di
        rtc_write \mmio
        mov ax, si
        rtc_select al, \mmio, \latency
        rtc_read \mmio
        mov dx, di
        mov ah, dl
        mov dl, 6
        cmp al, ah
        jne 9f
        inc ebx
        dec ecx
        jnz 1b
        hlt
    9:
        mov al, dl
        out {fail_port}, al
        hlt
        jmp 9b
        .code64
    .endm

    .globl rtc_guest_pio_start, rtc_guest_pio_end, rtc_guest_mmio_start, rtc_guest_mmio_end
    .globl rtc_guest_latency_start, rtc_guest_latency_end
rtc_guest_pio_start:
    guest_program 0
rtc_guest_pio_end:
rtc_guest_mmio_start:
    guest_program 1
rtc_guest_mmio_end:
rtc_guest_latency_start:
    guest_program 0, 1
rtc_guest_latency_end:
    .popsection
"#,
    fail_port = const FAIL_PORT,
    stamp = const STAMP_ADDR,
    think = const THINK_ADDR,
);

extern "C" {
    static rtc_guest_pio_start: u8;
    static rtc_guest_pio_end: u8;
    static rtc_guest_mmio_start: u8;
    static rtc_guest_mmio_end: u8;
    static rtc_guest_latency_start: u8;
    static rtc_guest_latency_end: u8;
}

/// The guest program's machine code, for the port or the MMIO RTC; `latency`: the port RTC
/// program that also stamps each index write with its TSC at [`STAMP_ADDR`] and then waits
/// [`THINK_ADDR`] loop turns before the data access.
pub fn code(mmio: bool, latency: bool) -> &'static [u8] {
    let (start, end) = if latency {
        (
            &raw const rtc_guest_latency_start,
            &raw const rtc_guest_latency_end,
        )
    } else if mmio {
        (
            &raw const rtc_guest_mmio_start,
            &raw const rtc_guest_mmio_end,
        )
    } else {
        (&raw const rtc_guest_pio_start, &raw const rtc_guest_pio_end)
    };
    let len = end as usize - start as usize;
    // SAFETY: the two symbols delimit one block of bytes assembled above into a read-only
    // section of this executable, which lives as long as the process.
    unsafe { std::slice::from_raw_parts(start, len) }
}
