//! Postgres refuses NUL in `text` and in `jsonb` strings (`\u0000`): one such byte in a caption,
//! a title or a model's answer would fail the whole statement, and with it every other row the
//! statement carried. Every write of outside text goes through these; NUL is dropped, the rest
//! is kept as it is.

use std::borrow::Cow;

/// `s` without NUL characters.
pub fn clean(s: &str) -> String {
    clean_cow(s).into_owned()
}

/// `s` without NUL characters, borrowed when it has none.
pub fn clean_cow(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', ""))
    } else {
        Cow::Borrowed(s)
    }
}

/// `v` with NUL removed from every string and object key in it.
pub fn clean_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(a) => Value::Array(a.iter().map(clean_json).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (clean(k), clean_json(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_dropped_from_text_and_every_json_string() {
        assert_eq!(clean("a\0b"), "ab");
        let v = serde_json::json!({"k\u{0}": ["x\u{0}y", 1, {"z": "\u{0}"}]});
        assert_eq!(
            clean_json(&v),
            serde_json::json!({"k": ["xy", 1, {"z": ""}]})
        );
    }
}
