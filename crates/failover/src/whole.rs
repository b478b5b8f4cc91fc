//! Whole numbers in request bodies as JSON Schema counts them (docs/openapi.yaml): `4` and `4.0` alike, since
//! a number with a zero fraction is an integer there. Used with `#[serde(deserialize_with)]` on the integer
//! fields the agents receive; what they send is written without a fraction, as before.

use serde::{de, Deserialize, Deserializer};

/// 2^64: the first whole number past `u64::MAX`, exactly representable as an `f64`.
const PAST_U64: f64 = 18_446_744_073_709_551_616.0;

/// The whole number a JSON number stands for, if it is one from 0 to `u64::MAX`.
pub fn of(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..PAST_U64).contains(f)).map(|f| f as u64))
}

/// The whole number `text` (a query's value) stands for, written as a JSON number: `4`, `4.0` or `4e0`.
pub fn parse(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().or_else(|| of(&text.parse::<serde_json::Number>().ok()?))
}

fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(n: serde_json::Number) -> Result<T, D::Error> {
    of(&n)
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Other(&n.to_string()), &"a whole number in range"))
}

/// A whole number of `T` (`u64`, `u32`, `usize`).
pub fn exact<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    number::<D, T>(serde_json::Number::deserialize(d)?)
}

/// A whole number of `T`, or null.
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?.map(number::<D, T>).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "exact")]
        n: u32,
        #[serde(default, deserialize_with = "optional")]
        m: Option<u64>,
    }

    #[test]
    fn a_whole_number_is_taken_with_or_without_a_zero_fraction_and_nothing_else_is() {
        let body = |text: &str| serde_json::from_str::<Body>(text);
        assert_eq!(body(r#"{"n": 4}"#).unwrap(), Body { n: 4, m: None });
        assert_eq!(body(r#"{"n": 4.0, "m": 7e2}"#).unwrap(), Body { n: 4, m: Some(700) });
        assert_eq!(body(r#"{"n": 1, "m": null}"#).unwrap(), Body { n: 1, m: None });
        assert_eq!(body(r#"{"n": 0, "m": 18446744073709551615}"#).unwrap().m, Some(u64::MAX));
        for bad in [
            r#"{"n": 4.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "4"}"#,
            r#"{"n": 0, "m": 1.8446744073709552e19}"#,
        ] {
            let e = body(bad).unwrap_err().to_string();
            assert!(e.contains("whole number") || e.contains("invalid type"), "{bad}: {e}");
        }
        assert_eq!(parse("12"), Some(12));
        assert_eq!(parse("12.0"), Some(12));
        assert_eq!(parse("1.5"), None);
        assert_eq!(parse("-3"), None);
        assert_eq!(parse("x"), None);
    }
}
