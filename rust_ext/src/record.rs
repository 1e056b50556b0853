//! The input contract, record by record: field checks in the oracle's order, timestamps, reason codes.

use std::borrow::Cow;

use crate::json::{dedup_last, write_object, Value, VectorField};

/// Stable quarantine reason codes (users filter and alert on them; they never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MalformedRecord,
    MissingField,
    BadType,
    WrongDimension,
    NonFinite,
    BadTimestamp,
    DuplicateKey,
    UnreadableFile,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedRecord => "malformed_record",
            Reason::MissingField => "missing_field",
            Reason::BadType => "bad_type",
            Reason::WrongDimension => "wrong_dimension",
            Reason::NonFinite => "non_finite",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::DuplicateKey => "duplicate_key",
            Reason::UnreadableFile => "unreadable_file",
        }
    }
}

/// A record that cannot become a row, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub index: u64,
    pub reason: Reason,
    pub detail: String,
    pub raw: String,
}

pub type Rejection = (Reason, String);

/// The fields of one record, whatever format it came from. The vector's values have already been
/// appended to the chunk's float buffer (`vector` says how many, and whether all were numbers).
pub struct Fields<'a> {
    pub id: Option<Value<'a>>,
    pub ts: Option<Value<'a>>,
    pub model: Option<Value<'a>>,
    pub source: Option<Value<'a>>,
    pub vector: VectorField,
    /// Every other field, in input order (repeats allowed: the last wins).
    pub extras: Vec<(Cow<'a, str>, Value<'a>)>,
}

/// A record that passed the per-record checks (finiteness and duplicates come after).
pub struct Valid {
    pub id: String,
    pub model: Option<String>,
    pub ts: i64,
    pub source: Option<String>,
    pub payload: Option<String>,
}

/// Timestamps are microseconds in an int64; keep the margin the Python side keeps (0001-01-02 ..
/// 9999-12-31, both at midnight UTC).
pub const MIN_MICROS: i64 = -62_135_510_400 * 1_000_000;
pub const MAX_MICROS: i64 = 253_402_214_400 * 1_000_000;

fn present<'v, 'a>(v: &'v Option<Value<'a>>) -> Option<&'v Value<'a>> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

fn shown(v: &Value) -> String {
    let mut out = String::new();
    v.write_sorted(&mut out);
    out.chars().take(80).collect()
}

fn optional_str(name: &str, v: &Option<Value>) -> Result<Option<String>, Rejection> {
    match present(v) {
        None => Ok(None),
        Some(Value::Str(s)) if !s.is_empty() => Ok(Some(s.to_string())),
        Some(other) => Err((
            Reason::BadType,
            format!("{name} must be a non-empty string, got {}", shown(other)),
        )),
    }
}

/// Checks a record's fields in the contract's order; `dims` is the required vector length.
pub fn validate(fields: &Fields, dims: usize) -> Result<Valid, Rejection> {
    if present(&fields.id).is_none() {
        return Err((Reason::MissingField, "id is missing".into()));
    }
    if matches!(fields.vector, VectorField::Missing) {
        return Err((Reason::MissingField, "vector is missing".into()));
    }
    let Some(ts) = present(&fields.ts) else {
        return Err((Reason::MissingField, "ts is missing".into()));
    };
    let id = match present(&fields.id) {
        Some(Value::Str(s)) if s.is_empty() => {
            return Err((Reason::MissingField, "id is empty".into()))
        }
        Some(Value::Str(s)) => s.to_string(),
        Some(other) => {
            return Err((
                Reason::BadType,
                format!("id must be a string, got {}", other.type_name()),
            ))
        }
        None => unreachable!(),
    };
    let model = optional_str("model", &fields.model)?;
    let source = optional_str("source", &fields.source)?;
    match &fields.vector {
        VectorField::NotArray(kind) => {
            return Err((
                Reason::BadType,
                format!("vector must be an array of numbers, got {kind}"),
            ))
        }
        VectorField::Array {
            first_bad: Some((position, value)),
            ..
        } => {
            return Err((
                Reason::BadType,
                format!("vector[{position}] is not a number: {value}"),
            ))
        }
        VectorField::Array { len, .. } if *len != dims => {
            return Err((
                Reason::WrongDimension,
                format!("vector has {len} values, expected {dims}"),
            ))
        }
        _ => {}
    }
    let ts = parse_ts(ts)?;
    let payload = if fields.extras.is_empty() {
        None
    } else {
        let mut out = String::new();
        write_object(dedup_last(&fields.extras).into_iter(), &mut out);
        Some(out)
    };
    Ok(Valid {
        id,
        model,
        ts,
        source,
        payload,
    })
}

fn bad_ts(detail: String) -> Rejection {
    (Reason::BadTimestamp, detail)
}

/// Event time as microseconds since the epoch: an ISO-8601 string with an offset, or epoch
/// milliseconds (an integer, or a float rounded half to even to the microsecond).
pub fn parse_ts(value: &Value) -> Result<i64, Rejection> {
    let micros = match value {
        Value::Int(ms) => ms.checked_mul(1000),
        Value::Num(v, raw) => {
            if !v.is_finite() && !raw.bytes().all(|b| b == b'-' || b.is_ascii_digit()) {
                return Err(bad_ts(format!("ts is not a finite number: {raw}")));
            }
            let scaled = (v * 1000.0).round_ties_even();
            if scaled.abs() < 9.2e18 {
                Some(scaled as i64)
            } else {
                None
            }
        }
        Value::Str(s) => Some(
            parse_iso(s)
                .ok_or_else(|| bad_ts(format!("ts is not ISO-8601 with an offset: {s:?}")))?,
        ),
        other => {
            return Err(bad_ts(format!(
                "ts must be ISO-8601 with an offset or epoch milliseconds, got {}",
                other.type_name()
            )))
        }
    };
    match micros {
        Some(m) if (MIN_MICROS..=MAX_MICROS).contains(&m) => Ok(m),
        _ => Err(bad_ts(format!("ts is out of range: {}", shown(value)))),
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = b.get(at..at + n)?;
    let mut v = 0i64;
    for &d in part {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(d - b'0');
    }
    Some(v)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Date of a day number since 1970-01-01, as `YYYY-MM-DD`.
pub fn civil_from_days(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DD(T|t| )HH:MM[:SS[(.|,)F{1,9}]](Z|z|±HH[[:]MM])`, fraction truncated to microseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    let mut i = 16;
    let mut second = 0;
    let mut micros = 0;
    if b.get(i) == Some(&b':') {
        second = digits(b, i + 1, 2)?;
        i += 3;
        if let Some(b'.' | b',') = b.get(i) {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = i - start;
            if n == 0 || n > 9 {
                return None;
            }
            let kept = n.min(6);
            micros = digits(b, start, kept)? * 10i64.pow((6 - kept) as u32);
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            let om = match b.len() - (i + 3) {
                0 => 0,
                2 => digits(b, i + 3, 2)?,
                3 if b[i + 3] == b':' => digits(b, i + 4, 2)?,
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let total = oh * 3600 + om * 60;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(seconds * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_forms() {
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso("1970-01-01 01:00+01:00"), Some(0));
        assert_eq!(
            parse_iso("1970-01-01T00:00:00.1234567-0030"),
            Some(1_800_123_456)
        );
        assert_eq!(
            parse_iso("2024-02-29T12:00:00,5+00"),
            Some(1_709_208_000_500_000)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T24:00:00Z",
            "2024-01-01",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0",
            "0000-01-01T00:00:00Z",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-719_162, -1, 0, 1, 19_723, 2_932_896] {
            let date = civil_from_days(days);
            let (y, m, d) = (&date[0..4], &date[5..7], &date[8..10]);
            assert_eq!(
                days_from_civil(y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap()),
                days
            );
        }
    }

    #[test]
    fn epoch_millis() {
        assert_eq!(
            parse_ts(&Value::Int(1_700_000_000_123)),
            Ok(1_700_000_000_123_000)
        );
        assert_eq!(parse_ts(&Value::Num(1.0005, "1.0005")).unwrap(), 1000);
        assert!(parse_ts(&Value::Int(i64::MAX)).is_err());
        assert!(parse_ts(&Value::Bool(true)).is_err());
    }
}
