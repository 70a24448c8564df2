// SPDX-License-Identifier: GPL-2.0
//! The MC146818 CMOS/RTC as a PC's VMM emulates it: an index register (port 0x70) selecting one
//! of 128 bytes, and a data register (port 0x71) reading or writing the selected byte.
//!
//! Bytes 0x00-0x09 are the clock (seconds, alarm, minutes, ..., year), read from the host's
//! clock in the format status register B selects (BCD or binary, 24 or 12 hours); 0x0A-0x0D are
//! the status registers; the rest is battery-backed RAM that keeps what is written to it. Only
//! the index write may be coalesced: it has no side effect until the next data access, which is
//! why a VMM must replay the coalesced ring before it emulates that access.

use std::time::{SystemTime, UNIX_EPOCH};

pub const REG_SECONDS: u8 = 0x00;
pub const REG_MINUTES: u8 = 0x02;
pub const REG_HOURS: u8 = 0x04;
pub const REG_WEEKDAY: u8 = 0x06;
pub const REG_DAY: u8 = 0x07;
pub const REG_MONTH: u8 = 0x08;
pub const REG_YEAR: u8 = 0x09;
pub const REG_STATUS_A: u8 = 0x0a;
pub const REG_STATUS_B: u8 = 0x0b;
pub const REG_STATUS_C: u8 = 0x0c;
pub const REG_STATUS_D: u8 = 0x0d;
pub const REG_CENTURY: u8 = 0x32;

/// Status B: hours in 24-hour format.
pub const STATUS_B_24H: u8 = 1 << 1;
/// Status B: binary instead of BCD.
pub const STATUS_B_BINARY: u8 = 1 << 2;
/// Status D: the battery is good and RAM and time are valid.
pub const STATUS_D_VALID: u8 = 1 << 7;
/// Index register bit 7 masks NMIs on a PC; it does not select a register.
const INDEX_NMI_MASK: u8 = 1 << 7;

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: u32,
    pub month: u8,
    pub day: u8,
    pub weekday: u8, // 1 = Sunday, as the RTC counts
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    /// The UTC date and time `secs` seconds after 1970-01-01 (days to civil date as in
    /// Howard Hinnant's algorithm, which is exact over the proleptic Gregorian calendar).
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86400;
        let rem = secs % 86400;
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        DateTime {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (weekday 5 when Sunday is 1).
            weekday: ((days + 4) % 7 + 1) as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
        }
    }

    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::from_unix(secs)
    }
}

pub fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// The CMOS register file and its index register.
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    clock: fn() -> DateTime,
}

impl Cmos {
    /// A CMOS in BCD, 24-hour mode (what PC firmware sets up) reading time from `clock`.
    pub fn new(clock: fn() -> DateTime) -> Self {
        let mut ram = [0; 128];
        ram[usize::from(REG_STATUS_A)] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        ram[usize::from(REG_STATUS_B)] = STATUS_B_24H;
        ram[usize::from(REG_STATUS_D)] = STATUS_D_VALID;
        Cmos {
            index: 0,
            ram,
            clock,
        }
    }

    /// A write to the index register (port 0x70).
    pub fn write_index(&mut self, value: u8) {
        self.index = value & !INDEX_NMI_MASK;
    }

    /// A read of the data register (port 0x71): the selected byte.
    pub fn read_data(&mut self) -> u8 {
        let reg = self.index;
        let status_b = self.ram[usize::from(REG_STATUS_B)];
        let encode = |v: u8| {
            if status_b & STATUS_B_BINARY != 0 {
                v
            } else {
                to_bcd(v)
            }
        };
        match reg {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                let t = (self.clock)();
                match reg {
                    REG_SECONDS => encode(t.second),
                    REG_MINUTES => encode(t.minute),
                    REG_HOURS if status_b & STATUS_B_24H != 0 => encode(t.hour),
                    REG_HOURS => {
                        // 12-hour format: 1-12, bit 7 set after noon.
                        let h12 = (t.hour + 11) % 12 + 1;
                        encode(h12) | if t.hour >= 12 { 0x80 } else { 0 }
                    }
                    REG_WEEKDAY => encode(t.weekday),
                    REG_DAY => encode(t.day),
                    REG_MONTH => encode(t.month),
                    REG_YEAR => encode((t.year % 100) as u8),
                    _ => encode((t.year / 100) as u8),
                }
            }
            // Reading status C acknowledges interrupts; we raise none.
            REG_STATUS_C => 0,
            _ => self.ram[usize::from(reg)],
        }
    }

    /// A write to the data register (port 0x71). The clock follows the host and ignores writes;
    /// status C and D are read-only.
    pub fn write_data(&mut self, value: u8) {
        match self.index {
            REG_SECONDS..=REG_YEAR | REG_CENTURY | REG_STATUS_C | REG_STATUS_D => {}
            reg => self.ram[usize::from(reg)] = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> DateTime {
        // 2026-11-25 13:07:09 UTC, a Wednesday.
        DateTime::from_unix(1_795_612_029)
    }

    #[test]
    fn civil_dates() {
        let t = fixed();
        assert_eq!((t.year, t.month, t.day, t.weekday), (2026, 11, 25, 4));
        assert_eq!((t.hour, t.minute, t.second), (13, 7, 9));
        assert_eq!(DateTime::from_unix(0).weekday, 5);
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
    }

    #[test]
    fn reads_the_clock_in_bcd_24h() {
        let mut c = Cmos::new(fixed);
        let mut read = |reg| {
            c.write_index(reg);
            c.read_data()
        };
        assert_eq!(read(REG_SECONDS), 0x09);
        assert_eq!(read(REG_MINUTES), 0x07);
        assert_eq!(read(REG_HOURS), 0x13);
        assert_eq!(read(REG_DAY), 0x25);
        assert_eq!(read(REG_MONTH), 0x11);
        assert_eq!(read(REG_YEAR), 0x26);
        assert_eq!(read(REG_CENTURY), 0x20);
        assert_eq!(read(REG_STATUS_B), STATUS_B_24H);
        assert_eq!(read(REG_STATUS_D), STATUS_D_VALID);
        // The NMI mask bit does not change the register selected.
        assert_eq!(read(0x80 | REG_MINUTES), 0x07);
    }

    #[test]
    fn binary_and_12h_modes() {
        let mut c = Cmos::new(fixed);
        c.write_index(REG_STATUS_B);
        c.write_data(STATUS_B_BINARY);
        c.write_index(REG_HOURS);
        assert_eq!(c.read_data(), 0x80 | 1); // 13:00 is 1 pm
        c.write_index(REG_YEAR);
        assert_eq!(c.read_data(), 26);
    }

    #[test]
    fn ram_keeps_writes_and_clock_ignores_them() {
        let mut c = Cmos::new(fixed);
        for reg in 0x0e..0x80u8 {
            c.write_index(reg);
            c.write_data(reg ^ 0x5a);
        }
        for reg in 0x0e..0x80u8 {
            c.write_index(reg);
            let want = if reg == REG_CENTURY { 0x20 } else { reg ^ 0x5a };
            assert_eq!(c.read_data(), want, "register {reg:#x}");
        }
        c.write_index(REG_SECONDS);
        c.write_data(0x42);
        assert_eq!(c.read_data(), 0x09);
    }
}
