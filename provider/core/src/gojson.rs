//! JSON bytes identical to Go's `encoding/json` output.
//!
//! Every hashed or persisted JSON body of the published formats (the AAD, the
//! registry state hash body, the identity fingerprint) is defined as the
//! output of Go's encoder. serde_json already matches it for key order (declaration order),
//! numbers and the short escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`,
//! `\u00XX` with lowercase hex). Go additionally escapes `<`, `>`, `&`,
//! U+2028 and U+2029; this formatter adds exactly those.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use std::io;

/// Wraps a serde_json formatter and applies Go's HTML-safe escaping.
struct GoEscaping<F>(F);

fn write_go_fragment<W: ?Sized + io::Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    let mut start = 0;
    for (i, ch) in fragment.char_indices() {
        let escape = match ch {
            '<' => "\\u003c",
            '>' => "\\u003e",
            '&' => "\\u0026",
            '\u{2028}' => "\\u2028",
            '\u{2029}' => "\\u2029",
            _ => continue,
        };
        writer.write_all(&fragment.as_bytes()[start..i])?;
        writer.write_all(escape.as_bytes())?;
        start = i + ch.len_utf8();
    }
    writer.write_all(&fragment.as_bytes()[start..])
}

macro_rules! delegate_formatter {
    ($($method:ident ( $($arg:ident : $ty:ty),* );)*) => {
        $(fn $method<W: ?Sized + io::Write>(&mut self, writer: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            self.0.$method(writer $(, $arg)*)
        })*
    };
}

impl<F: Formatter> Formatter for GoEscaping<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        write_go_fragment(writer, fragment)
    }

    delegate_formatter! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        end_object_key();
        begin_object_value();
        end_object_value();
    }
}

/// Go `json.Marshal` bytes of `value`.
pub fn to_compact<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoEscaping(CompactFormatter));
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Go `json.MarshalIndent(value, "", "  ")` bytes of `value`, plus a trailing newline.
pub fn to_indented(value: &(impl Serialize + ?Sized)) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let formatter = GoEscaping(PrettyFormatter::with_indent(b"  "));
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut ser)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_like_go_encoding_json() {
        // Expected bytes are what Go's json.Marshal prints for the same string.
        let s = "a<b>&c\u{2028}d\u{2029}\"\\\n\t\u{1}é";
        let got = String::from_utf8(to_compact(&s).unwrap()).unwrap();
        assert_eq!(got, r#""a\u003cb\u003e\u0026c\u2028d\u2029\"\\\n\t\u0001é""#);
    }

    #[test]
    fn compact_and_indented_shapes() {
        let v = json!({"b": 1, "a": [true, null], "c": {}});
        assert_eq!(to_compact(&v).unwrap(), br#"{"b":1,"a":[true,null],"c":{}}"#);
        let pretty = String::from_utf8(to_indented(&v).unwrap()).unwrap();
        assert_eq!(
            pretty,
            "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null\n  ],\n  \"c\": {}\n}\n"
        );
    }
}
