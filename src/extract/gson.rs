//! Renders JSON values the way GWT's Java stack does: scalars as `Object.toString()` (numbers
//! with `Double.toString`), containers as compact Gson with HTML-safe escaping.
//!
//! Jenkins jobs compare these strings, so `29.99`, `1.0`, `1.0E20` and `\u003d` must come out
//! byte for byte as GWT produces them.

use std::fmt::Write;

use serde_json::{Number, Value};

/// A scalar as GWT's flattener renders a leaf. `None` for JSON null, which yields no variable.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(number(n)),
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => Some(compact(value)),
    }
}

/// Compact Gson JSON (`serializeNulls`, HTML-safe escaping on), keeping document key order.
pub fn compact(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Gson's `JsonWriter.string` with `htmlSafe`: the five HTML characters and U+2028/U+2029 as
/// lower-case `\uXXXX`, the usual short escapes, other control characters as `\u00XX`.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '=' | '\'' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// json-smart reads integers as int/long and everything else as double; Java prints them with
/// `Long.toString` and `Double.toString`.
fn number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    java_double(n.as_f64().unwrap_or(f64::NAN))
}

/// Java's `Double.toString`: the shortest digits that round-trip (as Rust's formatter also
/// finds), written as `ddd.ddd` when 10^-3 <= |d| < 10^7 and as `d.dddE±n` otherwise, always
/// with at least one digit after the point.
pub fn java_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let magnitude = d.abs();
    if (1e-3..1e7).contains(&magnitude) {
        let plain = format!("{d}");
        return if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        };
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde±n`.
    let scientific = format!("{d:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_owned()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exponent}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doubles_print_like_java() {
        let cases = [
            (29.99, "29.99"),
            (1.0, "1.0"),
            (1.0e20, "1.0E20"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1234567.0, "1234567.0"),
            (12345678.0, "1.2345678E7"),
            (-2.5e-7, "-2.5E-7"),
            (0.0, "0.0"),
        ];
        for (value, expected) in cases {
            assert_eq!(java_double(value), expected, "{value}");
        }
    }

    #[test]
    fn numbers_keep_their_json_kind() {
        let doc: Value =
            serde_json::from_str(r#"[33333, 29.99, 1.0, 1e20, -7, 18446744073709551615]"#).unwrap();
        assert_eq!(
            compact(&doc),
            "[33333,29.99,1.0,1.0E20,-7,18446744073709551615]"
        );
    }

    #[test]
    fn strings_are_html_safe_like_gson() {
        let value =
            json!({"avatar": "https://x/?s=80&d=identicon", "t": "<a href='x'>\n\u{1}\u{2028}"});
        assert_eq!(
            compact(&value),
            r#"{"avatar":"https://x/?s\u003d80\u0026d\u003didenticon","t":"\u003ca href\u003d\u0027x\u0027\u003e\n\u0001\u2028"}"#
        );
    }

    #[test]
    fn containers_keep_document_order_and_nulls() {
        let value: Value = serde_json::from_str(r#"{"z":1,"a":null,"m":[null,true]}"#).unwrap();
        assert_eq!(compact(&value), r#"{"z":1,"a":null,"m":[null,true]}"#);
    }
}
