//! HTTP dates (RFC 9110 §5.6.7): the IMF-fixdate form, `Sun, 06 Nov 1994 08:49:37 GMT`.
//!
//! Only IMF-fixdate is read: the obsolete RFC 850 and asctime forms read as no date, which makes a
//! conditional request that uses them unconditional (a full 200, never a wrong 304).

/// The length of an IMF-fixdate.
pub const LEN: usize = 29;

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The IMF-fixdate of `unix_seconds` (seconds since 1970-01-01T00:00:00Z).
pub fn format(unix_seconds: u64) -> [u8; LEN] {
    let days = unix_seconds / 86_400;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; LEN];
    let weekday = DAYS[(days % 7) as usize].as_bytes();
    out[..3].copy_from_slice(weekday);
    out[3..5].copy_from_slice(b", ");
    two_digits(&mut out[5..7], day);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize].as_bytes());
    out[11] = b' ';
    let year = year.min(9999);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    out[16] = b' ';
    two_digits(&mut out[17..19], second_of_day / 3600);
    out[19] = b':';
    two_digits(&mut out[20..22], second_of_day / 60 % 60);
    out[22] = b':';
    two_digits(&mut out[23..25], second_of_day % 60);
    out[25..29].copy_from_slice(b" GMT");
    out
}

/// Reads an IMF-fixdate; `None` for anything else (other forms, impossible dates, years before 1970).
pub fn parse(text: &str) -> Option<u64> {
    let b = text.trim_ascii().as_bytes();
    if b.len() != LEN || b.get(3..5)? != b", " || b.get(25..)? != b" GMT" {
        return None;
    }
    if !DAYS.iter().any(|d| d.as_bytes() == b.get(..3).unwrap_or_default()) {
        return None;
    }
    let number = |range: core::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
    };
    let day = number(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == b.get(8..11).unwrap_or_default())? as u64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if [b[7], b[11], b[16], b[19], b[22]] != [b' ', b' ', b' ', b':', b':'] {
        return None;
    }
    if year < 1970 || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(59))
}

fn two_digits(out: &mut [u8], value: u64) {
    out[0] = b'0' + (value / 10 % 10) as u8;
    out[1] = b'0' + (value % 10) as u8;
}

/// Year, month (1-12), day (1-31) of the day `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to a date in 1970 or later (the inverse of [`civil_from_days`]).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_rfc_example() {
        assert_eq!(&format(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn parses_what_it_formats_and_nothing_else() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), None);
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse("Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse("Xyz, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse(""), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trips(seconds in 0u64..253_402_300_800) {
            let text = format(seconds);
            let text = core::str::from_utf8(&text).expect("ASCII");
            proptest::prop_assert_eq!(parse(text), Some(seconds));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }
    }
}
