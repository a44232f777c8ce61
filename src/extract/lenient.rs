//! The body parser of last resort: json-smart 2.5.0's permissive grammar, which GWT's Jayway
//! JsonPath reads bodies with, so a body serde_json refuses but GWT accepts (trailing commas,
//! single quotes, bare words, trailing junk, …) still resolves.
//!
//! This follows json-smart's `JSONParserBase`, `JSONParserMemory` and `JSONParserString` (a
//! `String` input, `MODE_PERMISSIVE`) rule for rule, quirks included, because GWT users'
//! senders have come to rely on whatever json-smart happens to accept. json-smart reads UTF-16
//! code units; every character its grammar tests for is ASCII, so walking UTF-8 bytes takes the
//! same decisions, and the few places that look at a whole character (trimming, string
//! contents, escapes) decode it. Values serde_json cannot hold are mapped as [`parse`] lists.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// json-smart's end-of-input marker. It is compared with the current character, not the
/// position, so a real U+001A in the text ends the input wherever json-smart tests for it
/// (everywhere but inside a string without escapes).
const EOI: u8 = 0x1A;

/// Objects and arrays nested deeper are refused. json-smart allows 400 (`MAX_DEPTH`); this is
/// serde_json's limit instead, so the strict and the lenient parse refuse the same depths. A
/// deep-scan path (`$..a`) copies every level's subtree, so what one request costs grows with
/// depth × body size, and 400 levels of a 1 MiB body make that three times worse.
const MAX_DEPTH: usize = 127;

/// json-smart's stop tables only cover characters below this (`MAX_STOP`), so a number
/// followed by `~`, DEL or any non-ASCII character ends as a number, the rest being left to
/// the enclosing container.
const MAX_STOP: u8 = 126;

/// Float literals longer than this become `BigDecimal` in json-smart (it has
/// `BIG_DIGIT_UNRESTRICTED`), the others `Double.parseDouble`; the two accept different text.
const MAX_DOUBLE_LITERAL: usize = 18;

const NOT_CONTAINER: &str = "the document is not an object or an array";
const END: &str = "unexpected end of input";
const UNEXPECTED: &str = "unexpected character";
const NO_COLON: &str = "expected `:` after the key";
const NO_SEPARATOR: &str = "expected `,` or `}` after the value";
const TOO_DEEP: &str = "objects and arrays nested deeper than 127";
const BAD_ESCAPE: &str = "invalid hex digit in a `\\u` or `\\x` escape";
const BAD_NUMBER: &str = "invalid number";

/// A body even json-smart's permissive mode refuses, or one hookgate refuses on top (a
/// document that is not an object or array).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct LenientError {
    /// Where the parse stopped, in bytes from the start of the body.
    pub offset: usize,
    pub reason: &'static str,
}

/// Parses `text` as json-smart's `new JSONParser(MODE_PERMISSIVE).parse(text, DEFAULT_ORDERED)`
/// does, into the `Value` GWT's document would correspond to.
///
/// Where json-smart builds something `serde_json::Value` cannot hold:
/// - `NaN` (json-smart's `Float.NaN`) becomes the string `"NaN"`, and a number beyond the
///   double range (`1e400`: `Double.POSITIVE_INFINITY`) the string `"Infinity"` or
///   `"-Infinity"`, as Java prints them;
/// - integers beyond 64 bits (`BigInteger`) and float literals over 18 characters
///   (`BigDecimal`) become the nearest `f64` (or `"Infinity"`/`"-Infinity"` past its range);
/// - an unpaired UTF-16 surrogate (a `\u` escape, or the half an unknown escape leaves of an
///   astral character) becomes U+FFFD, so two keys that differ only there become one.
///
/// Unlike json-smart, a document that is not an object or array (json-smart would read bare
/// text as one string) is an error: such a body is a sender mistake GWT silently hides.
pub fn parse(text: &str) -> Result<Value, LenientError> {
    let mut parser = Parser {
        text,
        pos: 0,
        c: text.as_bytes().first().copied().unwrap_or(EOI),
        depth: 0,
    };
    while matches!(parser.c, b' ' | b'\r' | b'\n' | b'\t') {
        parser.read();
    }
    // Whatever follows the document is never looked at: json-smart's permissive mode has no
    // trailing-data check.
    match parser.c {
        b'{' => parser.read_object(),
        b'[' => parser.read_array(),
        _ => Err(parser.error(NOT_CONTAINER)),
    }
}

/// The characters that end a bare word (and a number) in each context, json-smart's
/// `stopKey`, `stopValue` and `stopArray`. Note that `]` does not end a member value and `}`
/// does not end an array element.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Key,
    Member,
    Element,
}

impl Stop {
    fn ends(self, c: u8) -> bool {
        c == EOI
            || match self {
                Stop::Key => c == b':',
                Stop::Member => matches!(c, b',' | b'}'),
                Stop::Element => matches!(c, b',' | b']'),
            }
    }
}

/// json-smart's parser state: `c` is the byte at `pos`, or [`EOI`] past the end (`pos` may
/// run past the end by a step or two, exactly as json-smart's does).
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    c: u8,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn read(&mut self) {
        self.pos += 1;
        self.c = self.text.as_bytes().get(self.pos).copied().unwrap_or(EOI);
    }

    /// json-smart's `readNoEnd`: only the true end of the text fails here, not U+001A.
    fn read_no_end(&mut self) -> Result<(), LenientError> {
        self.read();
        if self.pos >= self.text.len() {
            return Err(self.error(END));
        }
        Ok(())
    }

    fn error(&self, reason: &'static str) -> LenientError {
        LenientError {
            offset: self.pos.min(self.text.len()),
            reason,
        }
    }

    fn enter(&mut self) -> Result<(), LenientError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(TOO_DEEP));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
        self.read();
    }

    /// json-smart's `readArray`. A comma only separates: it neither adds an element nor is
    /// needed between two elements that end by themselves (`["a" "b"]` has two).
    fn read_array(&mut self) -> Result<Value, LenientError> {
        self.enter()?;
        let mut items = Vec::new();
        self.read();
        loop {
            match self.c {
                b' ' | b'\r' | b'\n' | b'\t' | b',' => self.read(),
                b']' => {
                    self.leave();
                    return Ok(Value::Array(items));
                }
                b':' | b'}' => return Err(self.error(UNEXPECTED)),
                EOI => return Err(self.error(END)),
                _ => items.push(self.read_value(Stop::Element)?),
            }
        }
    }

    /// json-smart's `readObject`. Before a key only the four JSON spaces are skipped, so a
    /// key after, say, a form feed is read as a bare word and keeps any quotes it has.
    fn read_object(&mut self) -> Result<Value, LenientError> {
        self.enter()?;
        let mut members = Map::new();
        loop {
            self.read();
            match self.c {
                b' ' | b'\r' | b'\n' | b'\t' | b',' => {}
                b'}' => {
                    self.leave();
                    return Ok(Value::Object(members));
                }
                b':' | b']' | b'[' | b'{' => return Err(self.error(UNEXPECTED)),
                c => {
                    let key = if c == b'"' || c == b'\'' {
                        self.read_string()?
                    } else {
                        self.read_word(Stop::Key).to_owned()
                    };
                    self.skip_space();
                    match self.c {
                        b':' => {}
                        EOI => return Err(self.error(END)),
                        _ => return Err(self.error(NO_COLON)),
                    }
                    self.read_no_end()?;
                    let value = self.read_value(Stop::Member)?;
                    // json-smart's LinkedHashMap: a repeated key keeps its first place and
                    // takes the last value, which is what IndexMap's insert does.
                    members.insert(key, value);
                    self.skip_space();
                    match self.c {
                        b'}' => {
                            self.leave();
                            return Ok(Value::Object(members));
                        }
                        b',' => {}
                        EOI => return Err(self.error(END)),
                        _ => return Err(self.error(NO_SEPARATOR)),
                    }
                }
            }
        }
    }

    /// json-smart's `readMain`. `true`, `false`, `null` and `NaN` are only recognised when the
    /// value starts with their first letter: `\f true` is the word "true".
    fn read_value(&mut self, stop: Stop) -> Result<Value, LenientError> {
        loop {
            match self.c {
                b' ' | b'\r' | b'\n' | b'\t' => self.read(),
                b':' | b'}' | b']' => return Err(self.error(UNEXPECTED)),
                b'{' => return self.read_object(),
                b'[' => return self.read_array(),
                b'"' | b'\'' => return self.read_string().map(Value::String),
                b'0'..=b'9' | b'-' => return self.read_number(stop),
                first => {
                    let word = self.read_word(stop);
                    return Ok(match (first, word) {
                        (b'n', "null") => Value::Null,
                        (b't', "true") => Value::Bool(true),
                        (b'f', "false") => Value::Bool(false),
                        // `NaN` (json-smart's Float.NaN) is held as the word it is spelt as.
                        _ => Value::String(word.to_owned()),
                    });
                }
            }
        }
    }

    /// json-smart's `readNQString`: up to the next stop character, trimmed.
    fn read_word(&mut self, stop: Stop) -> &'a str {
        let start = self.pos;
        self.skip_word(stop);
        self.trimmed(start, self.pos)
    }

    fn skip_word(&mut self, stop: Stop) {
        while !stop.ends(self.c) {
            self.read();
        }
    }

    /// json-smart's `skipSpace` skips every control character, unlike the space skipping
    /// inside containers, which only knows the four JSON spaces.
    fn skip_space(&mut self) {
        while self.c <= b' ' && self.c != EOI {
            self.read();
        }
    }

    fn skip_digits(&mut self) {
        while self.c.is_ascii_digit() {
            self.read();
        }
    }

    /// json-smart's `extractStringTrim` with Java's `Character.isWhitespace`. It never trims
    /// the last character away, so a word of only whitespace keeps its final character.
    fn trimmed(&self, mut start: usize, mut stop: usize) -> &'a str {
        let text = self.text;
        while let Some(c) = text.get(start..stop).and_then(|s| s.chars().next()) {
            let next = start + c.len_utf8();
            if !java_whitespace(c) || next >= stop {
                break;
            }
            start = next;
        }
        while let Some(c) = text.get(start..stop).and_then(|s| s.chars().next_back()) {
            let before = stop - c.len_utf8();
            if !java_whitespace(c) || before <= start {
                break;
            }
            stop = before;
        }
        text.get(start..stop).unwrap_or_default()
    }

    /// json-smart's `readNumber`: digits, an optional fraction and exponent, then spaces. If
    /// the next character could continue a word, the whole token is a word instead (`12abc`,
    /// `1.5.6`, `12 34`); an exponent mark without a sign or digit always makes one (`1e`).
    fn read_number(&mut self, stop: Stop) -> Result<Value, LenientError> {
        let start = self.pos;
        self.read();
        self.skip_digits();
        if !matches!(self.c, b'.' | b'e' | b'E') {
            self.skip_space();
            if self.continues_word(stop) {
                return Ok(self.rest_of_word(start, stop));
            }
            return integer(self.trimmed(start, self.pos)).ok_or(LenientError {
                offset: start,
                reason: BAD_NUMBER,
            });
        }
        if self.c == b'.' {
            self.read();
            self.skip_digits();
        }
        if matches!(self.c, b'e' | b'E') {
            self.read();
            if !matches!(self.c, b'+' | b'-' | b'0'..=b'9') {
                return Ok(self.rest_of_word(start, stop));
            }
            self.read();
            self.skip_digits();
        }
        self.skip_space();
        if self.continues_word(stop) {
            return Ok(self.rest_of_word(start, stop));
        }
        float(self.trimmed(start, self.pos)).ok_or(LenientError {
            offset: start,
            reason: BAD_NUMBER,
        })
    }

    fn continues_word(&self, stop: Stop) -> bool {
        self.c < MAX_STOP && !stop.ends(self.c)
    }

    fn rest_of_word(&mut self, start: usize, stop: Stop) -> Value {
        self.skip_word(stop);
        Value::String(self.trimmed(start, self.pos).to_owned())
    }

    /// json-smart's `readString`: text up to the first matching quote is taken as it is,
    /// control characters included, unless it holds a backslash; then the string is read
    /// again from its opening quote by the escaping reader. Each byte is scanned at most
    /// three times, so this stays linear.
    fn read_string(&mut self) -> Result<String, LenientError> {
        let quote = self.c;
        let open = self.pos;
        let bytes = self.text.as_bytes();
        let body = bytes.get(open + 1..).unwrap_or_default();
        let Some(length) = body.iter().position(|&b| b == quote) else {
            return Err(LenientError {
                offset: self.text.len(),
                reason: END,
            });
        };
        if !body[..length].contains(&b'\\') {
            let close = open + 1 + length;
            let content = self
                .text
                .get(open + 1..close)
                .unwrap_or_default()
                .to_owned();
            self.pos = close;
            self.read();
            return Ok(content);
        }
        self.read_escaped(quote)
    }

    /// json-smart's `readString2` with `IGNORE_CONTROL_CHAR`: raw control characters and DEL
    /// are dropped, an unknown escape drops the character after the backslash (one UTF-16
    /// unit of it), and `\u` escapes are UTF-16 units paired up as Java's string would.
    fn read_escaped(&mut self, quote: u8) -> Result<String, LenientError> {
        let mut out = Utf16Text::default();
        loop {
            self.read();
            match self.c {
                EOI => return Err(self.error(END)),
                c if c == quote => {
                    self.read();
                    return Ok(out.finish());
                }
                b'\\' => {
                    self.read();
                    match self.c {
                        b't' => out.push('\t'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b'f' => out.push('\u{c}'),
                        b'b' => out.push('\u{8}'),
                        c @ (b'\\' | b'/' | b'\'' | b'"') => out.push(char::from(c)),
                        b'u' => {
                            let unit = self.read_hex(4)?;
                            out.push_unit(unit);
                        }
                        b'x' => {
                            let unit = self.read_hex(2)?;
                            out.push_unit(unit);
                        }
                        c if c >= 0x80 => {
                            // The backslash swallows one UTF-16 unit: all of a BMP character,
                            // only the high half of any other, whose low half stays.
                            if let Some(c) = self.skip_char()
                                && let Some(low) = low_surrogate(c)
                            {
                                out.push_unit(low);
                            }
                        }
                        _ => {}
                    }
                }
                0x00..=0x1F | 0x7F => {}
                c if c < 0x80 => out.push(char::from(c)),
                _ => {
                    if let Some(c) = self.skip_char() {
                        out.push(c);
                    }
                }
            }
        }
    }

    /// The character starting at `pos`, moving `pos` to its last byte so that the next
    /// `read` lands after it.
    fn skip_char(&mut self) -> Option<char> {
        let c = self.text.get(self.pos..)?.chars().next()?;
        self.pos += c.len_utf8() - 1;
        Some(c)
    }

    /// json-smart's `readUnicode`: exactly `digits` hex digits.
    fn read_hex(&mut self, digits: usize) -> Result<u16, LenientError> {
        let mut value: u16 = 0;
        for _ in 0..digits {
            self.read();
            let digit = match self.c {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'A'..=b'F' => c - b'A' + 10,
                c @ b'a'..=b'f' => c - b'a' + 10,
                EOI => return Err(self.error(END)),
                _ => return Err(self.error(BAD_ESCAPE)),
            };
            value = value * 16 + u16::from(digit);
        }
        Ok(value)
    }
}

/// Java's `Character.isWhitespace` (Java 11 and later, whose Unicode no longer counts U+180E):
/// the space separators except the no-break ones, the line and paragraph separators, and
/// U+0009–U+000D and U+001C–U+001F.
fn java_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{1680}'
            | '\u{2000}'..='\u{2006}'
            | '\u{2008}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// The low surrogate of `c` when it lies beyond the BMP.
fn low_surrogate(c: char) -> Option<u16> {
    let scalar = u32::from(c);
    let low = 0xDC00 + (scalar.checked_sub(0x1_0000)? & 0x3FF);
    u16::try_from(low).ok()
}

/// A string built from characters and UTF-16 units; an unpaired surrogate becomes U+FFFD,
/// since a Rust string cannot hold what Java's would.
#[derive(Default)]
struct Utf16Text {
    text: String,
    high: Option<u16>,
}

impl Utf16Text {
    fn push(&mut self, c: char) {
        self.unpaired();
        self.text.push(c);
    }

    fn push_unit(&mut self, unit: u16) {
        match unit {
            0xD800..=0xDBFF => {
                self.unpaired();
                self.high = Some(unit);
            }
            0xDC00..=0xDFFF => {
                let pair = self.high.take().and_then(|high| {
                    let scalar =
                        0x1_0000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    char::from_u32(scalar)
                });
                self.text.push(pair.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            _ => self.push(char::from_u32(u32::from(unit)).unwrap_or_default()),
        }
    }

    fn unpaired(&mut self) {
        if self.high.take().is_some() {
            self.text.push(char::REPLACEMENT_CHARACTER);
        }
    }

    fn finish(mut self) -> String {
        self.unpaired();
        self.text
    }
}

/// json-smart's `parseNumber`, with its Java `long` arithmetic: it does not check that the
/// characters are digits, so the control characters `skipSpace` passed over and the trim left
/// in count as digits of odd value (`1\u{1}` is -37), exactly as in json-smart.
fn integer(token: &str) -> Option<Value> {
    let s = token.as_bytes();
    let negative = *s.first()? == b'-';
    let (mut p, mut max) = if negative { (1, 20) } else { (0, 19) };
    let must_check = match s.len().cmp(&max) {
        Ordering::Less => {
            max = s.len();
            false
        }
        Ordering::Greater => return big_integer(token),
        Ordering::Equal => {
            max = s.len() - 1;
            true
        }
    };
    let digit = |c: u8| i64::from(b'0') - i64::from(c);
    let mut r: i64 = 0;
    while p < max {
        r = r.wrapping_mul(10).wrapping_add(digit(s[p]));
        p += 1;
    }
    if must_check {
        const LIMIT: i64 = -922_337_203_685_477_580;
        let big = match r.cmp(&LIMIT) {
            Ordering::Greater => false,
            Ordering::Less => true,
            Ordering::Equal => s[p] > if negative { b'8' } else { b'7' },
        };
        if big {
            return big_integer(token);
        }
        r = r.wrapping_mul(10).wrapping_add(digit(s[p]));
    }
    // USE_INTEGER_STORAGE's `(int) r`, which only truncates when such odd digits pushed `r`
    // the wrong way.
    let r = if negative { r } else { r.wrapping_neg() };
    let fits_int = if negative {
        r >= i64::from(i32::MIN)
    } else {
        r <= i64::from(i32::MAX)
    };
    Some(Value::from(if fits_int { i64::from(r as i32) } else { r }))
}

/// `new BigInteger(token, 10)`, which unlike `parseNumber` wants digits only; hookgate keeps
/// what fits 64 bits exactly and the rest as the nearest double.
fn big_integer(token: &str) -> Option<Value> {
    let (negative, digits) = match token.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, token),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    let magnitude = if significant.is_empty() {
        Some(0)
    } else {
        significant.parse::<u64>().ok()
    };
    match magnitude {
        Some(m) if !negative => Some(Value::from(m)),
        Some(m) if m <= 1 << 63 => i64::try_from(-i128::from(m)).ok().map(Value::from),
        _ => token.parse::<f64>().ok().map(double),
    }
}

/// json-smart's `extractFloat`: `Double.parseDouble` (which trims control characters and
/// spaces) up to 18 characters, `new BigDecimal` (which trims nothing) beyond.
fn float(token: &str) -> Option<Value> {
    if token.len() <= MAX_DOUBLE_LITERAL {
        let literal = decimal_literal(token.trim_matches(|c: char| c <= ' '))?.literal;
        return literal.parse::<f64>().ok().map(double);
    }
    let decimal = big_decimal_literal(token)?;
    // A BigDecimal zero has no sign, so `-0.000…` is 0.0, not -0.0 (an underflow keeps it).
    if decimal.zero {
        return Some(Value::from(0.0));
    }
    decimal.literal.parse::<f64>().ok().map(double)
}

/// The parts of a `-?digits[.digits][(e|E)[+-]digits]` literal with at least one mantissa
/// digit, the shape both Java parsers accept from the characters `read_number` collects.
struct Decimal<'t> {
    literal: &'t str,
    fraction_digits: usize,
    exponent: Option<&'t str>,
    /// Every mantissa digit is 0.
    zero: bool,
}

fn decimal_literal(literal: &str) -> Option<Decimal<'_>> {
    let unsigned = literal.strip_prefix('-').unwrap_or(literal);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    if let Some(exponent) = exponent {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() || !all_digits(digits) {
            return None;
        }
    }
    Some(Decimal {
        literal,
        fraction_digits: fraction.len(),
        exponent,
        zero: whole.bytes().chain(fraction.bytes()).all(|b| b == b'0'),
    })
}

/// `new BigDecimal(token)`: besides the shape, at most ten significant exponent digits, an
/// exponent within `int`, and a resulting scale within `int`.
fn big_decimal_literal(token: &str) -> Option<Decimal<'_>> {
    let decimal = decimal_literal(token)?;
    if let Some(exponent) = decimal.exponent {
        let negative = exponent.starts_with('-');
        let digits = exponent.trim_start_matches(['+', '-']);
        let significant = if digits.len() > 10 {
            let zeros = digits.len() - 10;
            digits[..zeros]
                .bytes()
                .all(|b| b == b'0')
                .then(|| &digits[zeros..])?
        } else {
            digits
        };
        let magnitude: i64 = significant.parse().ok()?;
        let exponent = if negative { -magnitude } else { magnitude };
        i32::try_from(exponent).ok()?;
        let fraction = i64::try_from(decimal.fraction_digits).ok()?;
        if exponent != 0 {
            i32::try_from(fraction - exponent).ok()?;
        }
    }
    Some(decimal)
}

/// A double as hookgate holds it: the infinities, which JSON cannot hold, as Java prints them.
fn double(d: f64) -> Value {
    match Number::from_f64(d) {
        Some(n) => Value::Number(n),
        None if d.is_nan() => Value::String("NaN".to_owned()),
        None if d > 0.0 => Value::String("Infinity".to_owned()),
        None => Value::String("-Infinity".to_owned()),
    }
}

/// Whether a leniently read document equals serde_json's reading of the same valid JSON, key
/// order and number kinds included, but for json-smart reading `-0` as the integer 0 where
/// serde_json makes it -0.0. The property the unit tests and the `lenient_json` fuzz target
/// check.
pub fn same_document(lenient: &Value, strict: &Value) -> bool {
    match (lenient, strict) {
        (Value::Number(l), Value::Number(s)) => {
            l.to_string() == s.to_string()
                || (l.as_u64() == Some(0) && s.as_f64().is_some_and(|f| f == 0.0))
        }
        (Value::Array(l), Value::Array(s)) => {
            l.len() == s.len() && l.iter().zip(s).all(|(l, s)| same_document(l, s))
        }
        (Value::Object(l), Value::Object(s)) => {
            l.len() == s.len()
                && l.iter()
                    .zip(s)
                    .all(|((lk, lv), (sk, sv))| lk == sk && same_document(lv, sv))
        }
        _ => lenient == strict,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::*;
    use crate::extract::tests::json_documents;

    /// `input` parses to the document `expected` (JSON text), key order and number kinds
    /// included (`Value`'s equality ignores both, its serialisation does not).
    #[track_caller]
    fn check(input: &str, expected: &str) {
        let expected: Value = serde_json::from_str(expected)
            .unwrap_or_else(|e| panic!("bad expectation {expected}: {e}"));
        match parse(input) {
            Ok(got) => {
                assert_eq!(got, expected, "input {input:?}");
                assert_eq!(got.to_string(), expected.to_string(), "input {input:?}");
            }
            Err(e) => panic!("input {input:?} refused: {e}"),
        }
    }

    #[track_caller]
    fn check_error(input: &str) {
        if let Ok(got) = parse(input) {
            panic!("input {input:?} accepted as {got}");
        }
    }

    #[test]
    fn useless_commas_add_nothing() {
        // The array and object forms of json-smart's TestExcessiveComma, and their mixtures.
        check("[4,5,,6]", "[4,5,6]");
        check("[4,5,]", "[4,5]");
        check("[,]", "[]");
        check("[,,,]", "[]");
        check("[,7]", "[7]");
        check("[ , 7 , , ]", "[7]");
        check(r#"{"x":1,,"y":2}"#, r#"{"x":1,"y":2}"#);
        check(r#"{"x":1,}"#, r#"{"x":1}"#);
        check("{,}", "{}");
        check(r#"{,,"x":1,,}"#, r#"{"x":1}"#);
        check(r#"{ , "x" : 1 , }"#, r#"{"x":1}"#);
        check(r#"[[1,],{"a":[,],},]"#, r#"[[1],{"a":[]}]"#);
    }

    #[test]
    fn array_elements_need_no_comma_between_them() {
        check(r#"["a" "b"]"#, r#"["a","b"]"#);
        check(r#"["a""b"]"#, r#"["a","b"]"#);
        check("[[1][2]]", "[[1],[2]]");
        check(r#"[{"a":1}{"b":2}]"#, r#"[{"a":1},{"b":2}]"#);
        check(r#"["a"x]"#, r#"["a","x"]"#);
        // A number ends without a comma only before a character past json-smart's stop table.
        check("[12~]", r#"[12,"~"]"#);
        check("[12é]", r#"[12,"é"]"#);
        check("[1.5~]", r#"[1.5,"~"]"#);
        check("[1e5~]", r#"[100000.0,"~"]"#);
        // Anything else makes one word of them.
        check("[1 2]", r#"["1 2"]"#);
        check("[true false]", r#"["true false"]"#);
        check("[1:2]", r#"["1:2"]"#);
    }

    #[test]
    fn quotes() {
        // json-smart's TestString / TestStrict: single quotes delimit strings too.
        check("{'k':'two words'}", r#"{"k":"two words"}"#);
        check(r#"["it's"]"#, r#"["it's"]"#);
        check(r#"['say "hi"']"#, r#"["say \"hi\""]"#);
        check(r"['a\'b']", r#"["a'b"]"#);
        check(r#"["a\'b"]"#, r#"["a'b"]"#);
        check(r#"{"k":'v',"l":"w"}"#, r#"{"k":"v","l":"w"}"#);
        check(r#"{'a b' : "c"}"#, r#"{"a b":"c"}"#);
    }

    #[test]
    fn unquoted_keys_and_values() {
        // json-smart's TestString / TestKeyword: bare keys and bare values.
        check("{a: hello world}", r#"{"a":"hello world"}"#);
        check("{ key with spaces : 1}", r#"{"key with spaces":1}"#);
        check(r#"{"a":1, b c : 2}"#, r#"{"a":1,"b c":2}"#);
        check("{1:2}", r#"{"1":2}"#);
        check("{true:null}", r#"{"true":null}"#);
        check(
            "{x:true,y:false,z:null}",
            r#"{"x":true,"y":false,"z":null}"#,
        );
        // A key runs to the colon, whatever it passes on the way.
        check("{a,b:1}", r#"{"a,b":1}"#);
        check(r#"{a"b:1}"#, r#"{"a\"b":1}"#);
        check("{a]:1}", r#"{"a]":1}"#);
        // A member value ends at `,` or `}` only, an element at `,` or `]` only.
        check("{a: hello]}", r#"{"a":"hello]"}"#);
        check("[a}]", r#"["a}"]"#);
        check("{a: x[1]}", r#"{"a":"x[1]"}"#);
        check(r#"{"a":1 "b":2}"#, r#"{"a":"1 \"b\":2"}"#);
        // An empty bare value is the empty string.
        check(r#"{"a":,"b":1}"#, r#"{"a":"","b":1}"#);
        check(r#"{"a": ,}"#, r#"{"a":""}"#);
        // Keywords only as the whole word; `NaN` is the word it is spelt as.
        check(
            "[truex, nul, True, NULL, null ]",
            r#"["truex","nul","True","NULL",null]"#,
        );
        check("{v:NaN}", r#"{"v":"NaN"}"#);
        check(
            "[NaN, NaNa, nan, Infinity, -NaN]",
            r#"["NaN","NaNa","nan","Infinity","-NaN"]"#,
        );
        check(
            "[+5, --5, - 5, .5, #x]",
            r##"["+5","--5","- 5",".5","#x"]"##,
        );
    }

    #[test]
    fn only_json_spaces_are_skipped_before_a_value() {
        // Any other control character starts a bare word, which the trim then shortens: the
        // value is the word "true", not true, and the key after the form feed keeps its quotes.
        check("[\u{c}true]", r#"["true"]"#);
        check("{\"a\":\u{c}1}", r#"{"a":"1"}"#);
        check("[1,\u{b}2]", r#"[1,"2"]"#);
        check("{\"a\":1,\u{c}\"b\":2}", r#"{"a":1,"\"b\"":2}"#);
        // After a value, though, every control character is skipped.
        check(
            "{\"a\":\"x\"\u{1}\u{c},\"b\":[]\u{7}}",
            r#"{"a":"x","b":[]}"#,
        );
    }

    #[test]
    fn words_are_trimmed_like_java() {
        check("[  padded  ]", r#"["padded"]"#);
        check("{ a\t:\tb\t}", r#"{"a":"b"}"#);
        // Java's Character.isWhitespace: U+001C–U+001F, U+2000 and U+3000 are whitespace,
        // U+00A0 and U+0085 are not.
        check("[x\u{1f}, \u{3000}y\u{2028}]", r#"["x","y"]"#);
        check("[\u{a0}x\u{a0}, x\u{85}]", r#"["\u00a0x\u00a0","x\u0085"]"#);
        // The trim never removes the last character.
        check("[\u{c}]", r#"["\f"]"#);
        check("[\u{c}\u{b}]", r#"["\u000b"]"#);
        check("[\u{2000} ]", r#"[" "]"#);
    }

    #[test]
    fn numbers() {
        // json-smart's TestZeroLead and TestInts.
        check(r#"{"t":00001}"#, r#"{"t":1}"#);
        check("[00.0, 01.0, -007]", "[0.0, 1.0, -7]");
        check(
            "[2147483647, -2147483648, 9223372036854775807, -9223372036854775808]",
            "[2147483647, -2147483648, 9223372036854775807, -9223372036854775808]",
        );
        // `-` alone is parseNumber's 0, and `-0` is the integer 0 (serde_json makes -0.0).
        check("[-, - ]", "[0, 0]");
        check("{a:-}", r#"{"a":0}"#);
        check("[-0, -0000000000000000000000]", "[0, 0]");
        check("[-0.0, -0e0]", "[-0.0, -0.0]");
        // Double.parseDouble's grammar.
        check(
            "[1., -.5, 1.e2, 1E2, 1e+2, 1e-2]",
            "[1.0, -0.5, 100.0, 100.0, 100.0, 0.01]",
        );
        check("[123.5E1, 51e88]", "[1235.0, 5.1e89]");
        // A token that does not end as a number is a word (TestFloat, TestInvalidNumber).
        check(
            "[12abc, 1.5.6, 12 34, 1e, 7ee3, 1.0%, 1e5x, 1e~, 1.0E+1.2]",
            r#"["12abc","1.5.6","12 34","1e","7ee3","1.0%","1e5x","1e~","1.0E+1.2"]"#,
        );
        check("{v: 12 }", r#"{"v":12}"#);
        check("[123é.5]", r#"[123,"é.5"]"#);
        // Past 64 bits (BigInteger) and past 18 characters (BigDecimal): the nearest f64.
        check(
            "[9223372036854775808, 18446744073709551615]",
            "[9223372036854775808, 18446744073709551615]",
        );
        check("[18446744073709551616]", "[18446744073709551616.0]");
        check("[-9223372036854775809]", "[-9223372036854775809.0]");
        check("[0000000000000000000000000042]", "[42]");
        check("[0.12345678912345678]", "[0.12345678912345678]");
        check("[-0.000000000000000000]", "[0.0]");
        check("[1.0000000000000000000e2147483647]", r#"["Infinity"]"#);
        // Past the double range: Java's Infinity, held as the string Java prints.
        check("[1e400, -1e400, 1e-400]", r#"["Infinity","-Infinity",0.0]"#);
        check(&format!("[{}]", "9".repeat(400)), r#"["Infinity"]"#);
        // parseNumber does not check its digits: control characters that `skipSpace` passed
        // and the trim kept count as digits of value '0' - c, Double.parseDouble trims them.
        check("[1\u{1}]", "[-37]");
        check("[1 \u{1}]", "[-107]");
        check("[1.5\u{1}]", "[1.5]");
        // ...and USE_INTEGER_STORAGE's `(int)` cast then truncates what they push too far.
        check(&format!("[1{}]", "\u{1}".repeat(10)), "[727450743]");
        check(&format!("[-{}]", "\u{1}".repeat(10)), "[682614665]");
        check(&format!("[-1{}]", "\u{1}".repeat(18)), "[-1504648311]");
    }

    #[test]
    fn number_errors() {
        // json-smart's TestInvalidNumber (CVE-2021-27568).
        check_error("{a:-.}");
        check_error("{a:2e+}");
        check_error("[1e+]");
        check_error("[1e-]");
        check_error("[-.e5]");
        // `1e+}` in an array is the word "1e+}", and then the array never ends.
        check_error("{a:[45e-}");
        // BigInteger and BigDecimal refuse what parseNumber and Double.parseDouble let by.
        check_error("[1000000000000000000000\u{1}]");
        check_error("[1.00000000000000000\u{1}]");
        check_error("[1.0000000000000000000e2147483648]");
        check_error("[1.0000000000000000000e12345678901]");
        // ...which serde_json reads as 0 (found by the fuzzer).
        check_error("[0e-1000000000000000000]");
    }

    #[test]
    fn escapes() {
        check(
            r#"["t\tn\nr\rf\fb\bs\\l\/q\'d\""]"#,
            r#"["t\tn\nr\rf\fb\bs\\l/q'd\""]"#,
        );
        // json-smart's TestString: escapes in single quotes.
        check(r"{t:'one\r\ntwo'}", r#"{"t":"one\r\ntwo"}"#);
        check(r#"["\u0041\x41\u00e9\u0000"]"#, r#"["AAé\u0000"]"#);
        // An unknown escape drops the character after the backslash.
        check(r#"["a\qb", "\é", "x\"y"]"#, r#"["ab","","x\"y"]"#);
        // `\u` escapes are UTF-16 units: pairs combine, the unpaired become U+FFFD.
        check(r#"["\uD83D\uDE00"]"#, r#"["😀"]"#);
        check(r#"["\ud83d\ude00x"]"#, r#"["😀x"]"#);
        check(
            r#"["\uD83D", "\uDE00\uD83D", "\uD83Dx"]"#,
            r#"["\ufffd","\ufffd\ufffd","\ufffdx"]"#,
        );
        // What falls between the two halves in json-smart's buffer still pairs them.
        check(r#"["\uD83D\q\uDE00"]"#, r#"["😀"]"#);
        check("[\"\\uD83D\u{1}\\uDE00\"]", r#"["😀"]"#);
        // A backslash before an astral character swallows only its high half.
        check(r#"["\😀"]"#, r#"["\ufffd"]"#);
        check(r#"["\uD83D\😀"]"#, r#"["😀"]"#);
    }

    #[test]
    fn escape_errors() {
        check_error(r#"["\u12G4"]"#);
        check_error(r#"["\x4"]"#);
        check_error(r#"["\uDé00"]"#);
        check_error(r#"["\u12"#);
    }

    #[test]
    fn control_characters_on_both_string_paths() {
        // Without a backslash the text is taken as it is: json-smart's TestString
        // (testBadString) keeps a raw form feed, and DEL and U+001A stay too.
        check(
            "[\"a\u{1}b\u{7f}c\tq\u{c}\u{1a}\"]",
            r#"["a\u0001b\u007fc\tq\f\u001a"]"#,
        );
        check("['\u{0}']", r#"["\u0000"]"#);
        // With one, raw control characters and DEL are dropped; escaped ones are kept.
        check("[\"a\u{1}b\u{7f}c\t\\n\"]", r#"["abc\n"]"#);
        check("[\"\\u0001\u{1}\\n\"]", r#"["\u0001\n"]"#);
        // There U+001A ends the input, unless it is escaped (then dropped as unknown).
        check_error("[\"\\n\u{1a}\"]");
        check("[\"a\\\u{1a}b\"]", r#"["ab"]"#);
    }

    #[test]
    fn u001a_outside_strings_is_the_end_of_input() {
        check_error("[1\u{1a}]");
        check_error("{\"a\"\u{1a}:1}");
        check_error("{\u{1a}:1}");
        check_error("[a\u{1a}]");
        check("{\"a\":1}\u{1a}", r#"{"a":1}"#);
    }

    #[test]
    fn trailing_data_is_ignored() {
        // json-smart's TestTaillingJunk (testTaillingDataPermisive) and TestInts.
        check(r#"{"n":7}  8"#, r#"{"n":7}"#);
        check(r#"{"n":7}#junk"#, r#"{"n":7}"#);
        check("[1]]]", "[1]");
        check("[]{", "[]");
        check(r#"{"a":1}{"b""#, r#"{"a":1}"#);
        check("\n\t [true] trailing", "[true]");
    }

    #[test]
    fn duplicate_keys_keep_the_first_place_and_the_last_value() {
        check(r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#);
        check("{a:1,'b':2,\"a\":[]}", r#"{"a":[],"b":2}"#);
    }

    #[test]
    fn unicode_text() {
        // json-smart's TestUtf8: non-Latin text passes through on both string paths.
        check(
            r#"{"日本語":"Русский 🐶🐱"}"#,
            r#"{"日本語":"Русский 🐶🐱"}"#,
        );
        check(r#"{"k":"עברית\n"}"#, r#"{"k":"עברית\n"}"#);
        check("{ключ: значение}", r#"{"ключ":"значение"}"#);
    }

    #[test]
    fn structural_errors() {
        // json-smart's TestTruncated and more: the end of input inside a string, an object or
        // an array.
        for input in [
            r#"["abc"#,
            "['abc",
            r#"["a\""#,
            r#"["\"#,
            "{",
            r#"{"a""#,
            r#"{"a":"#,
            r#"{"a":1"#,
            r#"{"key":{}"#,
            r#"{"a":1,"#,
            "{a:b",
            "[",
            "[1",
            "[1,",
            "[[]",
            "['1",
        ] {
            check_error(input);
        }
        // `:`, `}` or `]` where a value belongs.
        for input in [
            r#"{"a":}"#,
            r#"{"a"::1}"#,
            r#"{"a":]}"#,
            "[:]",
            "[}]",
            "[1,:]",
        ] {
            check_error(input);
        }
        // A key without a colon, a value followed by anything but `,` or `}` (json-smart's
        // TestStrict testDataAfterValue, TestString testS0), a misplaced bracket.
        for input in [
            r#"{"a" 1}"#,
            r#"{"a"}"#,
            "{a}",
            r#"{"a":"b"x}"#,
            "{\"1\":\"one\"\n\"2\":\"two\"}",
            "{\"a\":12~}",
            "{[:1}",
            "{{}}",
            "{:1}",
            "{]}",
        ] {
            check_error(input);
        }
    }

    #[test]
    fn only_objects_and_arrays_are_documents() {
        // json-smart would read each of these as a string or number; hookgate refuses them.
        for input in [
            "hello",
            "\"str\"",
            "'str'",
            "1",
            "true",
            "",
            "   ",
            "\u{c}{}",
            "\u{feff}{}",
            "}",
            "<xml/>",
            "a=1&b=2",
        ] {
            let error = parse(input).expect_err(input);
            assert!(error.reason == NOT_CONTAINER, "{input:?}: {error}");
        }
        assert_eq!(
            parse("  \n hello"),
            Err(LenientError {
                offset: 4,
                reason: NOT_CONTAINER
            })
        );
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            parse(r#"{"a" 1}"#),
            Err(LenientError {
                offset: 5,
                reason: NO_COLON
            })
        );
        assert_eq!(parse(r#"["abc"#).unwrap_err().offset, 5);
        assert_eq!(
            parse("[1,:]").unwrap_err().to_string(),
            "unexpected character at byte 3"
        );
    }

    /// On a thread with a 2 MiB stack, as the gateway's workers have.
    fn on_small_stack(test: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(test)
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }

    #[test]
    fn depth_is_limited_as_for_strict_json() {
        on_small_stack(|| {
            // json-smart's TestOverflow (at our limit, serde_json's), and each container kind at
            // the limit and past it.
            let nested = |open: &str, inner: &str, close: &str, n: usize| {
                format!("{}{inner}{}", open.repeat(n), close.repeat(n))
            };
            for n in [1, MAX_DEPTH] {
                let arrays = parse(&nested("[", "", "]", n)).expect("arrays");
                let objects = parse(&nested("{a:", "true", "}", n)).expect("objects");
                drop((arrays, objects));
            }
            let mixed = nested("[{\"a\":", "1", "}]", MAX_DEPTH / 2);
            drop(parse(&mixed).expect("mixed"));
            for n in [MAX_DEPTH + 1, 10_000] {
                for input in [nested("[", "", "]", n), nested("{a:", "true", "}", n)] {
                    assert_eq!(parse(&input).unwrap_err().reason, TOO_DEEP, "depth {n}");
                }
            }
            let siblings = format!("[{}]", vec!["{a:true}"; 400].join(","));
            assert_eq!(
                parse(&siblings).expect("siblings").as_array().map(Vec::len),
                Some(400)
            );
        });
    }

    #[test]
    fn large_bodies_take_linear_time() {
        // A quadratic rescan would take minutes on a mebibyte; each of these is milliseconds.
        let shapes = [
            format!("[{}]", "'x\"\\'y',".repeat(100_000)),
            format!("[\"{}\"]", "\\\"".repeat(500_000)),
            format!("[{}]", "\"a\" ".repeat(250_000)),
            format!("{{{}:1}}", "k ".repeat(500_000)),
            format!("[{}]", "12 ".repeat(300_000)),
            format!("[{}]", "1".repeat(1 << 20)),
            format!("[{}", "\"".repeat(1 << 20)),
            format!("[{}", ",".repeat(1 << 20)),
        ];
        for body in shapes {
            let started = Instant::now();
            let _ = parse(&body);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                &body[..20]
            );
        }
    }

    #[test]
    fn serde_json_map_insert_keeps_the_first_position() {
        let mut map = Map::new();
        map.insert("a".to_owned(), Value::from(1));
        map.insert("b".to_owned(), Value::from(2));
        map.insert("a".to_owned(), Value::from(3));
        assert_eq!(Value::Object(map).to_string(), r#"{"a":3,"b":2}"#);
    }

    /// See `has_long_float` in fuzz/props.rs: json-smart's BigDecimal refuses exponents
    /// serde_json reads.
    fn has_long_float(text: &str) -> bool {
        text.split(|c: char| !matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E'))
            .any(|token| token.len() > MAX_DOUBLE_LITERAL && token.contains(['.', 'e', 'E']))
    }

    /// Numeric literals of JSON's grammar, long and short, in and out of range.
    fn json_numbers() -> impl Strategy<Value = String> {
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,22})?([eE][+-]?[0-9]{1,3})?"
    }

    proptest! {
        /// What serde_json reads as an object or array, the lenient parse reads the same.
        #[test]
        fn json_reads_as_serde_json_reads_it(
            doc in json_documents(
                "[a-z\"\\\\\u{1}é😀 ]{0,3}",
                "[a-z \"'\\\\/\u{0}-\u{1f}\u{80}-\u{10ffff}]{0,8}",
            ),
        ) {
            let doc = match doc {
                Value::Array(_) | Value::Object(_) => doc,
                scalar => Value::Array(vec![scalar]),
            };
            for text in [doc.to_string(), serde_json::to_string_pretty(&doc).unwrap()] {
                let expected: Value = serde_json::from_str(&text).unwrap();
                let got = parse(&text);
                prop_assert_eq!(got.as_ref(), Ok(&expected), "{}", text);
                prop_assert_eq!(got.unwrap().to_string(), expected.to_string());
            }
        }

        /// Numbers too, past 64 bits and past 18 characters; what serde_json finds out of
        /// range is Java's Infinity.
        #[test]
        fn numbers_read_as_serde_json_reads_them(literal in json_numbers()) {
            prop_assume!(literal != "-0");
            for text in [format!("[{literal}]"), format!("{{\"n\": {literal} }}")] {
                let got = parse(&text).unwrap();
                match serde_json::from_str::<Value>(&text) {
                    Ok(expected) => prop_assert_eq!(got.to_string(), expected.to_string()),
                    Err(_) => {
                        let infinity = if literal.starts_with('-') { "-Infinity" } else { "Infinity" };
                        prop_assert!(got.to_string().contains(infinity), "{} gave {}", text, got);
                    }
                }
            }
        }

        /// Never a panic; a document is always an object or array; and valid JSON without
        /// DEL (which the escaping reader drops) reads as serde_json reads it, or is refused
        /// for a long float literal BigDecimal refuses.
        #[test]
        fn never_panics(
            text in prop_oneof![
                "[\\[{]?[\\[\\]{}:,\"'\\\\ a-z0-9.eE+\\-\t\n\u{c}\u{1}\u{1a}\u{7f}é😀\u{2000}]{0,40}",
                any::<String>(),
            ],
        ) {
            match parse(&text) {
                Ok(doc) => prop_assert!(doc.is_array() || doc.is_object()),
                Err(e) => prop_assert!(e.offset <= text.len()),
            }
            if let Ok(strict) = serde_json::from_str::<Value>(&text)
                && (strict.is_array() || strict.is_object())
                && !text.contains('\u{7f}')
            {
                match parse(&text) {
                    Ok(lenient) => prop_assert!(
                        same_document(&lenient, &strict), "{:?}: {} vs {}", text, lenient, strict
                    ),
                    Err(e) => prop_assert!(has_long_float(&text), "{:?} refused: {}", text, e),
                }
            }
        }
    }
}
