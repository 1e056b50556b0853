//! A strict JSON reader (RFC 8259, plus the `NaN`/`Infinity`/`-Infinity` tokens Python writes) made
//! for landing records: the `vector` array of a record is parsed straight into an `f32` buffer,
//! everything else into a small borrowed value tree.
//!
//! Numbers follow Python's reading, which is the contract: an integer token is an exact integer
//! (converted to float with one correct rounding), a token with a fraction or exponent is a float
//! parsed to `f64` with one correct rounding; both become `f32` by a second rounding, as NumPy does.

use std::borrow::Cow;

/// A parsed JSON value borrowing from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer token that fits in an `i64`.
    Int(i64),
    /// Any other number: its `f64` value and the token as written (kept for payload output).
    Num(f64, &'a str),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl Value<'_> {
    /// Python's name for the type this value becomes, for error details.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Num(_, raw) if is_integer_token(raw) => "int",
            Value::Num(..) => "float",
            Value::Str(_) => "str",
            Value::Array(_) => "list",
            Value::Object(_) => "dict",
        }
    }

    /// Compact JSON with object keys sorted (at every level), as the payload column holds it.
    pub fn write_sorted(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::Num(v, raw) => {
                if !v.is_finite() && !is_integer_token(raw) {
                    out.push_str("null"); // as Python's serializer writes NaN and infinities
                } else {
                    out.push_str(raw);
                }
            }
            Value::Str(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_sorted(out);
                }
                out.push(']');
            }
            Value::Object(fields) => write_object(dedup_last(fields).into_iter(), out),
        }
    }
}

/// Fields of an object with repeated keys resolved as Python does (the last one wins), sorted by key.
pub fn dedup_last<'v, 'a>(
    fields: &'v [(Cow<'a, str>, Value<'a>)],
) -> Vec<(&'v str, &'v Value<'a>)> {
    let mut sorted: Vec<(&str, &Value)> = fields.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    // Stable sort keeps the input order among equal keys; the last of each run wins.
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&str, &Value)> = Vec::with_capacity(sorted.len());
    for (k, v) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == k => *last = (k, v),
            _ => out.push((k, v)),
        }
    }
    out
}

/// Writes `{"k":v,...}` for fields already sorted and without repeats.
pub fn write_object<'v, 'a: 'v>(
    fields: impl Iterator<Item = (&'v str, &'v Value<'a>)>,
    out: &mut String,
) {
    out.push('{');
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        v.write_sorted(out);
    }
    out.push('}');
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_integer_token(raw: &str) -> bool {
    !raw.bytes()
        .any(|b| matches!(b, b'.' | b'e' | b'E' | b'N' | b'I'))
}

/// What the `vector` field of a record turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorField {
    /// No such field, or `null`.
    Missing,
    /// Not an array: the Python type name.
    NotArray(&'static str),
    /// An array; its numbers were appended to the output buffer. `first_bad` names the first element
    /// that is not a number (its position and a short rendering).
    Array {
        len: usize,
        first_bad: Option<(usize, String)>,
    },
}

/// A top-level record: the `vector` field parsed into the caller's buffer, the other fields as values.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub fields: Vec<(Cow<'a, str>, Value<'a>)>,
    pub vector: Option<VectorField>,
    /// Byte range of the (last) `vector` value in the text.
    pub vector_span: Option<(usize, usize)>,
}

/// Why a text is not JSON, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub offset: usize,
    pub message: &'static str,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

type Result<T> = std::result::Result<T, SyntaxError>;

/// Parses one JSON text (a landing line). A top-level object becomes a [`Record`] whose `vector`
/// numbers are appended to `floats` (on error the buffer is left as it was); any other top-level
/// value is returned as `Err(Ok(type name))` so the caller can reject it as "not an object".
pub fn parse_record<'a>(
    text: &'a str,
    floats: &mut Vec<f32>,
) -> std::result::Result<Record<'a>, std::result::Result<&'static str, SyntaxError>> {
    let mut p = Parser::new(text);
    let mark = floats.len();
    let outcome = p.record(floats).and_then(|r| {
        p.skip_ws();
        if r.is_some() && p.pos < p.bytes.len() {
            Err(p.error("trailing characters after the JSON value"))
        } else {
            Ok(r)
        }
    });
    match outcome {
        Ok(Some(record)) => Ok(record),
        Ok(None) => {
            // Not an object: parse it as a value only to tell malformed text from a wrong type.
            floats.truncate(mark);
            let mut p = Parser::new(text);
            match p.value().and_then(|v| {
                p.skip_ws();
                if p.pos < p.bytes.len() {
                    Err(p.error("trailing characters after the JSON value"))
                } else {
                    Ok(v)
                }
            }) {
                Ok(v) => Err(Ok(v.type_name())),
                Err(e) => Err(Err(e)),
            }
        }
        Err(e) => {
            floats.truncate(mark);
            Err(Err(e))
        }
    }
}

/// Parses a whole text as one JSON value.
pub fn parse_value(text: &str) -> Result<Value<'_>> {
    let mut p = Parser::new(text);
    let v = p.value()?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.error("trailing characters after the JSON value"));
    }
    Ok(v)
}

/// Parses a JSON array of numbers (a CSV `vector` cell) into `floats`.
pub fn parse_vector_text(text: &str, floats: &mut Vec<f32>) -> Result<VectorField> {
    let mut p = Parser::new(text);
    p.skip_ws();
    let mark = floats.len();
    let field = if p.peek() == Some(b'[') {
        p.vector(floats)
    } else {
        p.value().map(|v| match v {
            Value::Null => VectorField::Missing,
            other => VectorField::NotArray(other.type_name()),
        })
    };
    let field = field.and_then(|f| {
        p.skip_ws();
        if p.pos < p.bytes.len() {
            Err(p.error("trailing characters after the JSON value"))
        } else {
            Ok(f)
        }
    });
    if field.is_err() {
        floats.truncate(mark);
    }
    field
}

/// The `vector` of a JSON object whose vector is a flat array of numbers: its values, and the byte
/// range of the array in `text`. `None` for any other text (not JSON, not an object, no such array,
/// an element that is not a number), which the caller reads its own way.
pub fn object_vector(text: &str) -> Option<(Vec<f32>, (usize, usize))> {
    let mut floats = Vec::new();
    match parse_record(text, &mut floats) {
        Ok(Record {
            vector: Some(VectorField::Array {
                first_bad: None, ..
            }),
            vector_span: Some(span),
            ..
        }) => Some((floats, span)),
        _ => None,
    }
}

/// A number as Python reads it, converted to `f32` the way NumPy does (through `f64`).
pub fn number_to_f32(value: &Value) -> Option<f32> {
    match value {
        Value::Int(i) => Some(*i as f64 as f32),
        Value::Num(v, _) => Some(*v as f32),
        _ => None,
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 256;

/// The value of eight ASCII digits in a little-endian word (SWAR, as in fast_float).
#[inline(always)]
fn eight_digits(mut v: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064;
    const MUL2: u64 = 0x0000_2710_0000_0001;
    v = v.wrapping_sub(0x3030_3030_3030_3030);
    v = v.wrapping_mul(10).wrapping_add(v >> 8);
    ((v & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2)))
        >> 32
}

/// Consumes a run of digits at `b[*i..]` into `mantissa` (wrapping: callers give up past 19
/// digits); returns how many there were. Eight bytes at a time and without a branch on the run's
/// length inside a word, so the varying lengths of real numbers cost no mispredictions.
#[inline(always)]
fn digit_run(b: &[u8], i: &mut usize, mantissa: &mut u64) -> usize {
    let from = *i;
    while let Some(word) = b.get(*i..*i + 8) {
        let v = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // High bit set in every byte from the first non-digit on (carries only move upwards,
        // and no digit byte below it produces one).
        let not_digit = (v.wrapping_add(0x4646_4646_4646_4646)
            | v.wrapping_sub(0x3030_3030_3030_3030))
            & 0x8080_8080_8080_8080;
        let n = (not_digit.trailing_zeros() / 8) as usize; // 8 when the word is all digits
        if n == 0 {
            return *i - from;
        }
        // The first n digits moved to the top of the word, '0's below them.
        let shifted = (v << ((8 - n) * 8))
            | 0x3030_3030_3030_3030u64
                .checked_shr((n * 8) as u32)
                .unwrap_or(0);
        *mantissa = mantissa
            .wrapping_mul(POW10_U64[n])
            .wrapping_add(eight_digits(shifted));
        *i += n;
        if n < 8 {
            return *i - from;
        }
    }
    while let Some(&d @ b'0'..=b'9') = b.get(*i) {
        *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        *i += 1;
    }
    *i - from
}

const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Bit `k` set where `b[at + k]` is a comma (bits past the end of `b` clear).
#[inline(always)]
fn comma_mask(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 64) {
        Some(block) => {
            let block: &[u8; 64] = block.try_into().expect("64 bytes");
            comma_mask_64(block)
        }
        None => {
            let mut block = [0u8; 64];
            let tail = &b[at.min(b.len())..];
            block[..tail.len()].copy_from_slice(tail);
            comma_mask_64(&block)
        }
    }
}

#[inline(always)]
fn comma_mask_64(block: &[u8; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; the loads are unaligned and within `block`.
        unsafe {
            let comma = _mm_set1_epi8(b',' as i8);
            let p = block.as_ptr().cast::<__m128i>();
            let m = |k| _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(p.add(k)), comma)) as u16;
            u64::from(m(0)) | u64::from(m(1)) << 16 | u64::from(m(2)) << 32 | u64::from(m(3)) << 48
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    comma_mask_portable(block)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn comma_mask_portable(block: &[u8; 64]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0u64, |m, (k, &c)| m | (u64::from(c == b',') << k))
}

/// What the 16 bytes before a comma hold: the mask of their digits, the mask of their dots, and
/// the value of the digits among the last `tail` bytes read as one 16-digit integer (any other byte
/// counting as a 0 digit).
#[inline(always)]
fn window_digits(window: &[u8; 16], tail: usize) -> (u32, u32, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; the loads are unaligned and within `window` and
        // `TAIL_MASK` (tail <= 16).
        unsafe {
            let v = _mm_loadu_si128(window.as_ptr().cast());
            let is_digit = _mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8(b'0' as i8 - 1)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(b'9' as i8 + 1)),
            );
            let dots = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8));
            let keep = _mm_loadu_si128(TAIL_MASK.as_ptr().add(tail).cast());
            let d = _mm_and_si128(
                _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8)),
                _mm_and_si128(is_digit, keep),
            );
            // Pairs, quads, then eights of digits (the first byte is the most significant).
            let pairs = _mm_add_epi16(
                _mm_mullo_epi16(_mm_and_si128(d, _mm_set1_epi16(0xFF)), _mm_set1_epi16(10)),
                _mm_srli_epi16(d, 8),
            );
            let quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x0001_0064)); // 100, 1
            let quads = _mm_packs_epi32(quads, quads);
            let eights = _mm_madd_epi16(quads, _mm_set1_epi32(0x0001_2710)); // 10000, 1
            let eights = _mm_cvtsi128_si64(eights) as u64;
            (
                _mm_movemask_epi8(is_digit) as u32,
                _mm_movemask_epi8(dots) as u32,
                (eights & 0xFFFF_FFFF) * 100_000_000 + (eights >> 32),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    window_digits_portable(window, tail)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn window_digits_portable(window: &[u8; 16], tail: usize) -> (u32, u32, u64) {
    window
        .iter()
        .enumerate()
        .fold((0, 0, 0), |(digits, dots, value), (k, &c)| {
            let d = if c.is_ascii_digit() && k >= 16 - tail {
                u64::from(c - b'0')
            } else {
                0
            };
            (
                digits | (u32::from(c.is_ascii_digit()) << k),
                dots | (u32::from(c == b'.') << k),
                value * 10 + d,
            )
        })
}

/// 0x00 then 0xFF bytes: the 16 read at offset `n` keep the last `n` bytes of a window.
static TAIL_MASK: [u8; 32] = {
    let mut m = [0u8; 32];
    let mut k = 16;
    while k < 32 {
        m[k] = 0xFF;
        k += 1;
    }
    m
};

/// 9 * 10^k: what the digit before the dot adds once the dot is read as a 0 digit after it.
const NINE_POW10: [u64; 15] = {
    let mut t = [9u64; 15];
    let mut k = 1;
    while k < 15 {
        t[k] = t[k - 1] * 10;
        k += 1;
    }
    t
};

/// The element `b[start..end]` (`end` at a comma) if it has the usual shape of a vector number:
/// `-?d.ddd` in at most 16 bytes, one integer digit (after at most one space), as the
/// integer of its digits (below 10^15 < 2^53) and the power of ten to divide it by, the sign on the
/// divisor. Dividing is then one correctly rounded operation: the result [`Parser::vector_number`]
/// gives. `None` for anything else, and for an element that ends in the first 16 bytes.
#[inline(always)]
fn plain_number(b: &[u8], start: usize, end: usize) -> Option<(u64, f64)> {
    let s = start + usize::from(*b.get(start)? == b' ');
    let negative = b.get(s) == Some(&b'-');
    let len = end.checked_sub(s)?;
    let window: &[u8; 16] = b.get(end.checked_sub(16)?..end)?.try_into().ok()?;
    let (digits, dots, value) = window_digits(window, len.min(16));
    let fraction = (!digits << 16).leading_zeros() as usize; // the digits just before the comma
    if fraction == 0 || len != usize::from(negative) + 2 + fraction || len > 16 {
        return None;
    }
    let dot = 15 - fraction;
    if (dots >> dot) & (digits >> (dot - 1)) & 1 == 0 {
        return None;
    }
    let integer = u64::from(window[dot - 1] - b'0');
    let mantissa = value - integer * NINE_POW10[fraction];
    Some((
        mantissa,
        f64::from_bits(POW10[fraction].to_bits() | (u64::from(negative) << 63)),
    ))
}

/// Powers of ten that are exact in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    fn error(&self, message: &'static str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            message,
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, message: &'static str) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    /// A top-level object (`Ok(None)` if the text does not start with `{`).
    fn record(&mut self, floats: &mut Vec<f32>) -> Result<Option<Record<'a>>> {
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return Ok(None);
        }
        self.pos += 1;
        let mut record = Record::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Some(record));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':', "expected ':' after an object key")?;
            self.skip_ws();
            if key == "vector" {
                // A repeated key: the last one wins, so drop what an earlier one appended.
                if let Some(VectorField::Array { len, .. }) = record.vector {
                    floats.truncate(floats.len() - len);
                }
                let start = self.pos;
                record.vector = Some(if self.peek() == Some(b'[') {
                    self.vector(floats)?
                } else {
                    match self.value()? {
                        Value::Null => VectorField::Missing,
                        other => VectorField::NotArray(other.type_name()),
                    }
                });
                record.vector_span = Some((start, self.pos));
            } else {
                let value = self.value()?;
                record.fields.push((key, value));
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Some(record));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    /// An array parsed straight into `floats`; elements that are not numbers are parsed (so syntax
    /// errors still surface) and the first of them is remembered.
    fn vector(&mut self, floats: &mut Vec<f32>) -> Result<VectorField> {
        self.pos += 1; // '['
        floats.reserve(1024);
        let mut len = 0usize;
        let mut first_bad = None;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(VectorField::Array { len, first_bad });
        }
        // Texts whose numbers the fast path never takes (long floats, exponents) would pay for
        // its attempt on every element: after two misses in a row it is not tried again. (It never
        // reads the first 16 bytes, so misses there say nothing.)
        let mut misses = 0;
        loop {
            if misses < 2 {
                let taken = self.plain_numbers(floats);
                len += taken;
                misses = match taken {
                    0 if self.pos >= 16 => misses + 1,
                    0 => misses,
                    _ => 0,
                };
            }
            self.skip_ws();
            match self.peek() {
                Some(b'-' | b'0'..=b'9') => floats.push(self.vector_number()?),
                Some(b'N' | b'I') => {
                    let value = self.number()?;
                    floats.push(number_to_f32(&value).unwrap_or(f32::NAN));
                }
                _ => {
                    let start = self.pos;
                    self.depth += 1;
                    let value = self.value()?;
                    self.depth -= 1;
                    if first_bad.is_none() {
                        let shown: String = self.text[start..self.pos].chars().take(40).collect();
                        first_bad = Some((len, shown));
                    }
                    drop(value);
                    floats.push(f32::NAN);
                }
            }
            len += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(VectorField::Array { len, first_bad });
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn value(&mut self) -> Result<Value<'a>> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9' | b'N' | b'I') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value<'a>) -> Result<Value<'a>> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value<'a>> {
        self.enter()?;
        self.pos += 1;
        let mut fields = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Object(fields));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':', "expected ':' after an object key")?;
            let value = self.value()?;
            fields.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Object(fields));
                }
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self) -> Result<Value<'a>> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    /// Consumes the run of elements from here that are plain decimals each followed by a `,`, and
    /// returns how many; stops at the start of the first element it does not take, which the
    /// caller parses as before. Element bounds come from a bitmask of the commas ahead, so no
    /// element waits for the one before it to be parsed: the CPU overlaps several.
    fn plain_numbers(&mut self, floats: &mut Vec<f32>) -> usize {
        let b = self.bytes;
        let mut start = self.pos;
        let mut count = 0;
        // Two steps per block: the integer work for every element, then the float work in a loop
        // of its own, so neither waits on the other's long chains. A block holds at most 16
        // elements (the shortest, `0.5,`, takes 4 bytes).
        let mut parts = [(0u64, 1f64); 16];
        loop {
            let base = start;
            let mut commas = comma_mask(b, base);
            let mut n = 0;
            let mut stop = false;
            while commas != 0 {
                let end = base + commas.trailing_zeros() as usize;
                commas &= commas - 1;
                let Some(part) = plain_number(b, start, end) else {
                    stop = true;
                    break;
                };
                parts[n] = part;
                n += 1;
                start = end + 1;
            }
            floats.extend(parts[..n].iter().map(|&(m, d)| (m as f64 / d) as f32));
            count += n;
            if stop || start == base {
                break; // `start == base`: no comma in a whole block, not a short number
            }
        }
        self.pos = start;
        count
    }

    /// A vector element in one pass: the common short decimals take Clinger's fast path (exact:
    /// an integer mantissa below 2^53 scaled by an exact power of ten is one correctly rounded
    /// operation); anything else goes through [`Parser::number`].
    #[inline]
    fn vector_number(&mut self) -> Result<f32> {
        let b = self.bytes;
        let start = self.pos;
        let mut i = start;
        let negative = b[i] == b'-'; // the caller saw '-' or a digit here
        i += usize::from(negative);
        let mut mantissa: u64 = 0;
        let mut digits;
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                digits = 0;
            }
            Some(b'1'..=b'9') => digits = digit_run(b, &mut i, &mut mantissa),
            _ => return self.slow_vector_number(start),
        }
        let mut integer = true;
        let mut exponent: i64 = 0;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let fraction = digit_run(b, &mut i, &mut mantissa);
            if fraction == 0 {
                return self.slow_vector_number(start);
            }
            digits += fraction;
            exponent -= fraction as i64;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integer = false;
            i += 1;
            let negative_exp = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let from = i;
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = b.get(i) {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 20);
                i += 1;
            }
            if i == from {
                return self.slow_vector_number(start);
            }
            exponent += if negative_exp { -e } else { e };
        }
        if digits > 19 || mantissa > (1u64 << 53) || !(-22..=22).contains(&exponent) {
            return self.slow_vector_number(start);
        }
        self.pos = i;
        if integer {
            // A Python int: `-0` is 0, never -0.0.
            let v = mantissa as i64;
            return Ok((if negative { -v } else { v }) as f64 as f32);
        }
        let m = mantissa as f64;
        let v = if exponent < 0 {
            m / POW10[(-exponent) as usize]
        } else {
            m * POW10[exponent as usize]
        };
        // v >= 0: the sign is one bit (and "-0.0" stays -0.0, as Python reads it).
        Ok(f64::from_bits(v.to_bits() | (u64::from(negative) << 63)) as f32)
    }

    #[cold]
    fn slow_vector_number(&mut self, start: usize) -> Result<f32> {
        self.pos = start;
        let value = self.number()?;
        Ok(number_to_f32(&value).unwrap_or(f32::NAN))
    }

    fn number(&mut self) -> Result<Value<'a>> {
        let start = self.pos;
        let rest = &self.bytes[start..];
        for (token, value) in [
            ("NaN", f64::NAN),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
        ] {
            if rest.starts_with(token.as_bytes()) {
                self.pos += token.len();
                return Ok(Value::Num(value, &self.text[start..self.pos]));
            }
        }
        let b = self.bytes;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = b.get(i) {
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return Err(self.error("invalid number"));
            }
        }
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let digits = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == digits {
                self.pos = i;
                return Err(self.error("invalid number: no digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            integer = false;
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let digits = i;
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            if i == digits {
                self.pos = i;
                return Err(self.error("invalid number: no digits in the exponent"));
            }
        }
        self.pos = i;
        let token = &self.text[start..i];
        if integer {
            if let Ok(v) = token.parse::<i64>() {
                return Ok(Value::Int(v));
            }
        }
        // Exact decimal to the nearest f64 (overflow gives an infinity, as Python's int -> float
        // conversion overflows to inf under NumPy).
        let v: f64 = fast_float2::parse(token).map_err(|_| self.error("invalid number"))?;
        Ok(Value::Num(v, token))
    }

    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes.
        loop {
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => return Err(self.error("control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.bytes.get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{08}',
                        Some(b'f') => '\u{0c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.bytes.get(self.pos) != Some(&b'\\')
                                    || self.bytes.get(self.pos + 1) != Some(&b'u')
                                {
                                    return Err(self.error("lone surrogate in a string"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.error("lone surrogate in a string"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.error("lone surrogate in a string"));
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(code).ok_or_else(|| self.error("invalid escape"))?,
                            );
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    out.push(c);
                    self.pos += 1;
                }
                Some(&c) if c < 0x20 => return Err(self.error("control character in a string")),
                Some(_) => {
                    // Copy a run of plain characters (UTF-8 boundaries are respected: the run ends
                    // only at ASCII bytes).
                    let run = self.pos;
                    while let Some(&c) = self.bytes.get(self.pos) {
                        if c == b'"' || c == b'\\' || c < 0x20 {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push_str(&self.text[run..self.pos]);
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16
                + (d as char)
                    .to_digit(16)
                    .ok_or_else(|| self.error("invalid \\u escape"))?;
        }
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> (Record<'_>, Vec<f32>) {
        let mut floats = Vec::new();
        let r = parse_record(text, &mut floats).expect("a record");
        (r, floats)
    }

    #[test]
    fn an_object_vector_comes_with_its_place_in_the_text() {
        let text = r#"{"vector": [1, 2.5], "k": 3, "vector" :[0.5, -1e1 ] }"#;
        let (floats, (start, end)) = object_vector(text).expect("a vector");
        assert_eq!(floats, vec![0.5, -10.0], "the last of a repeated key wins");
        assert_eq!(&text[start..end], "[0.5, -1e1 ]");
        assert_eq!(
            object_vector(r#"{"k": 3, "vector": []}"#).map(|(f, _)| f),
            Some(vec![])
        );
        for other in [
            r#"{"k": 3}"#,
            r#"{"vector": null}"#,
            r#"{"vector": "1,2"}"#,
            r#"{"vector": [1, true]}"#,
            r#"{"vector": [1, [2]]}"#,
            r#"{"vector": [1, 2]"#,
            r#"[1, 2]"#,
            r#"{"vector": [1, 2]} x"#,
        ] {
            assert_eq!(object_vector(other), None, "{other}");
        }
    }

    #[test]
    fn vector_numbers_go_to_the_buffer() {
        let (r, floats) = record(r#"{"id":"a","vector":[1, -0, 0.5e1, -2.25],"ts":1}"#);
        assert_eq!(
            r.vector,
            Some(VectorField::Array {
                len: 4,
                first_bad: None
            })
        );
        assert_eq!(floats, vec![1.0, 0.0, 5.0, -2.25]);
        assert!(floats[1].is_sign_positive(), "integer -0 is +0.0 in Python");
        assert_eq!(r.fields.len(), 2);
    }

    #[test]
    fn fast_path_matches_the_exact_parser() {
        let tokens = [
            "0.1",
            "-0.1",
            "0.30000000000000004",
            "1e22",
            "1e23",
            "123456789012345678",
            "9007199254740993",
            "9007199254740993.0",
            "-0",
            "-0.0",
            "0.000001234567",
            "1.5e-7",
            "3.4028235e38",
            "3.4028236e38",
            "2.5e-45",
            "0.1234567890123456789",
            "17",
            "-17e-3",
            "1E+2",
            "0.12345678",
            "12345678.87654321",
            "-0.085279725",
            "1234567890123456789",
            "0.0000000000000000000001",
        ];
        for token in tokens {
            let mut fast = Vec::new();
            let text = format!("[{token}]");
            Parser::new(&text).vector(&mut fast).unwrap();
            let exact: f64 = token.parse().unwrap();
            let integer = !token.contains(['.', 'e', 'E']);
            let expected = if integer {
                token.parse::<i64>().unwrap() as f64 as f32
            } else {
                exact as f32
            };
            assert_eq!(fast[0].to_bits(), expected.to_bits(), "{token}");
        }
    }

    #[test]
    fn fast_path_matches_the_exact_parser_on_many_numbers() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut text = String::from("[");
        let mut tokens = Vec::new();
        for k in 0..50_000 {
            let bits = next();
            let x = f64::from_bits(bits >> 2) * if bits & 1 == 0 { 1.0 } else { -1.0 };
            let small = (bits % 2_000_000) as f64 / 1e7 - 0.1;
            let token = match k % 5 {
                0 => format!("{:?}", small as f32),
                1 => format!(
                    "{:.*}",
                    (bits % 12) as usize,
                    small * 10f64.powi((bits % 7) as i32)
                ),
                2 => format!("{:e}", small),
                3 if x.is_finite() => format!("{x:?}"),
                _ => format!("{}", (bits % 100_000_000_000) as i64 - 50_000_000_000),
            };
            text.push_str(&token);
            text.push(',');
            tokens.push(token);
        }
        text.pop();
        text.push(']');
        let mut fast = Vec::new();
        Parser::new(&text).vector(&mut fast).unwrap();
        for (token, got) in tokens.iter().zip(fast) {
            let integer = !token.contains(['.', 'e', 'E']);
            let expected = if integer {
                token.parse::<i64>().unwrap() as f64 as f32
            } else {
                token.parse::<f64>().unwrap() as f32
            };
            assert_eq!(got.to_bits(), expected.to_bits(), "{token}");
        }
    }

    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn window_digits_match_the_portable_version() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let alphabet = b"0123456789.-,] e/:";
        for _ in 0..20_000 {
            let window: [u8; 16] =
                std::array::from_fn(|_| alphabet[(next() % alphabet.len() as u64) as usize]);
            for tail in 0..=16 {
                assert_eq!(
                    window_digits(&window, tail),
                    window_digits_portable(&window, tail),
                    "{:?} {tail}",
                    String::from_utf8_lossy(&window)
                );
            }
        }
        let block: [u8; 64] = std::array::from_fn(|k| if k % 5 == 0 { b',' } else { b'1' });
        assert_eq!(comma_mask_64(&block), comma_mask_portable(&block));
    }

    /// An element parses as the element-by-element path reads it: the same value, or the same
    /// error at the same place.
    #[test]
    fn fast_path_reads_elements_as_the_element_parser_does() {
        let fragments = [
            "0",
            "1",
            "9",
            "5",
            ".",
            "-",
            "+",
            " ",
            "  ",
            "e",
            "E",
            "]",
            "[",
            "\"",
            "00",
            "0.",
            "-0.",
            "0.123456789",
            "-0.0000001",
            "12",
            "x",
            "\t",
            "1e-7",
            "NaN",
            "null",
            ".5",
            "123456789012345",
            "0.12345678901234",
            "-0.123456789012345",
            "3.4028236e38",
            "{}",
        ];
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200_000 {
            let mut token = String::new();
            for _ in 0..1 + next() % 4 {
                token.push_str(fragments[(next() % fragments.len() as u64) as usize]);
            }
            // Two elements the fast path does not take stop it for the rest of the array.
            let head = "[0.5,0.5,0.5,0.5,";
            let mut slow = Vec::new();
            let expected = parse_vector_text(&format!("{head}1e0,1e0,{token},0.75]"), &mut slow);
            let mut floats = Vec::new();
            let got = parse_vector_text(&format!("{head}0.5,0.5,{token},0.75]"), &mut floats);
            assert_eq!(got, expected, "{token:?}");
            if got.is_ok() {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&floats[6..]), bits(&slow[6..]), "{token:?}");
            }
        }
    }

    #[test]
    fn fast_path_takes_the_usual_shapes() {
        let mut next = xorshift(0x1234_5678_9ABC_DEF1);
        for _ in 0..20_000 {
            let r = next();
            let mut token = String::new();
            if r & 1 != 0 {
                token.push('-');
            }
            token.push(char::from(b'0' + (r >> 8) as u8 % 10));
            token.push('.');
            // At most 16 bytes: 14 digits after the dot, 13 with a sign.
            for k in 0..1 + (r >> 16) % (14 - (r & 1)) {
                token.push(char::from(b'0' + (r >> (24 + 2 * k)) as u8 % 10));
            }
            let head = "[0.5,0.25,0.125,0.0625,";
            let text = format!("{head}{token},{token}, {token},1]");
            let mut p = Parser::new(&text);
            p.pos = head.len();
            let mut floats = Vec::new();
            assert_eq!(p.plain_numbers(&mut floats), 3, "{text}");
            let expected = token.parse::<f64>().unwrap() as f32;
            assert_eq!(floats, [expected; 3], "{token}");
            assert_eq!(floats[0].to_bits(), expected.to_bits(), "{token}");
        }
    }

    #[test]
    fn non_numbers_in_the_vector_are_flagged() {
        let (r, _) = record(r#"{"vector":[1,"x",true]}"#);
        assert_eq!(
            r.vector,
            Some(VectorField::Array {
                len: 3,
                first_bad: Some((1, "\"x\"".into()))
            })
        );
    }

    #[test]
    fn repeated_vector_key_keeps_the_last() {
        let (r, floats) = record(r#"{"vector":[1,2,3],"vector":[4]}"#);
        assert_eq!(floats, vec![4.0]);
        assert!(matches!(r.vector, Some(VectorField::Array { len: 1, .. })));
    }

    #[test]
    fn python_constants_and_overflow() {
        let (_, floats) = record(
            r#"{"vector":[NaN,Infinity,-Infinity,1e400,10000000000000000000000000000000000000000]}"#,
        );
        assert!(floats[0].is_nan());
        assert_eq!(floats[1], f32::INFINITY);
        assert_eq!(floats[2], f32::NEG_INFINITY);
        assert_eq!(floats[3], f32::INFINITY);
        assert!(floats[4].is_infinite(), "beyond f32 range");
    }

    #[test]
    fn malformed_texts_are_errors() {
        for text in [
            "{",
            "{\"a\":}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":+1}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"x\u{01}\"}",
            "{\"a\":1} x",
            "{'a':1}",
            "",
        ] {
            let mut floats = vec![];
            assert!(
                matches!(parse_record(text, &mut floats), Err(Err(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn non_objects_report_their_type() {
        let mut floats = vec![];
        assert_eq!(parse_record("[1,2]", &mut floats).unwrap_err(), Ok("list"));
        assert_eq!(parse_record("3", &mut floats).unwrap_err(), Ok("int"));
    }

    #[test]
    fn payload_is_sorted_compact_and_last_wins() {
        let v =
            parse_value(r#"{"b": [1, 2.50, NaN], "a": {"z": "\u00e9\n", "y": null}, "b": true}"#)
                .unwrap();
        let mut out = String::new();
        v.write_sorted(&mut out);
        assert_eq!(out, "{\"a\":{\"y\":null,\"z\":\"é\\n\"},\"b\":true}");
    }

    #[test]
    fn escapes_decode() {
        let v = parse_value(r#""a\"b\\c\/\u0041\ud83d\ude00""#).unwrap();
        assert_eq!(v, Value::Str(Cow::Owned("a\"b\\c/A😀".into())));
    }
}
