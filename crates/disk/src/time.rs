//! Calendar dates of Unix times (UTC, proleptic Gregorian), for the
//! timestamps slotsmith writes: FAT entries here, and RFC 3339 strings in
//! the SBOM, the provenance and the updater's audit trail.
//!
//! One implementation for the workspace, here because both the builder
//! (`slotsmith`) and the device updater (`slotsmith-updater`) already
//! depend on this crate and the FAT encoder needed the same arithmetic;
//! no time crate for one conversion. Pure integer arithmetic: no clock,
//! no time zone database, no locale.

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year (1970 for the epoch; years before it are negative offsets
    /// from year 0 only for negative inputs, which `rfc3339` never gives).
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59 (Unix time has no leap seconds).
    pub second: u32,
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days`, shifted so a year starts on 1 March and the leap
/// day is the last day of the shifted year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small and positive by construction (1..=31, 1..=12).
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC calendar time of `secs` seconds since the Unix epoch. Total:
/// any `i64` fits (`i64::MIN / 86_400` days stay far from overflow).
pub fn civil(secs: i64) -> Civil {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` for `secs` seconds since the epoch. Years past
/// 9999 (beyond RFC 3339's four digits) print all their digits rather
/// than wrap: a wrong-looking date is better than a plausible false one.
/// Inputs past `i64::MAX` saturate there.
pub fn rfc3339(secs: u64) -> String {
    let c = civil(i64::try_from(secs).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_are_exact() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // A leap day, its last second and the day after.
        assert_eq!(rfc3339(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        // u32 overflow of time_t, and the last four-digit second.
        assert_eq!(rfc3339(4_294_967_295), "2106-02-07T06:28:15Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
    }

    #[test]
    fn far_and_negative_times_do_not_overflow() {
        // u64::MAX saturates at i64::MAX: 292277026596-12-04T15:30:07Z.
        assert_eq!(rfc3339(u64::MAX), "292277026596-12-04T15:30:07Z");
        assert_eq!(rfc3339(i64::MAX as u64), rfc3339(u64::MAX));
        assert_eq!(
            civil(-1),
            Civil {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        let c = civil(i64::MIN);
        assert!(c.year < 0 && (1..=12).contains(&c.month) && (1..=31).contains(&c.day));
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_previous_one() {
        // An independent check of the arithmetic: walk day by day with the
        // Gregorian rules and compare.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
