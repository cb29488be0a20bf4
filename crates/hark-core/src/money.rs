//! Money and prices: amounts in integer micro-units of the one configured currency,
//! exact decimal parsing and formatting, and the price table that gives each usage
//! event its price when it is written. No floating point anywhere.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Micro-units of the configured currency (1.00 = 1 000 000).
pub type Micros = i64;

pub const MICROS_PER_UNIT: i64 = 1_000_000;
const MS_PER_HOUR: i128 = 3_600_000;

/// The product a usage event bills.
pub const SPEECH_TO_TEXT: &str = "speech_to_text";
pub const STREAMING: &str = "streaming";
pub const PRODUCTS: [&str; 2] = [SPEECH_TO_TEXT, STREAMING];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not an amount: write digits with at most six decimals, like 50.00")]
    Malformed(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Parses decimal text (`50`, `50.5`, `-0.000001`) to micro-units exactly.
pub fn parse_amount(text: &str) -> Result<Micros, MoneyError> {
    let malformed = || MoneyError::Malformed(text.to_string());
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(malformed());
    }
    let too_large = || MoneyError::TooLarge(text.to_string());
    let mut value: i64 = 0;
    for b in whole.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    value = value.checked_mul(MICROS_PER_UNIT).ok_or_else(too_large)?;
    let mut frac_micros: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
    }
    value = value.checked_add(frac_micros).ok_or_else(too_large)?;
    Ok(if negative { -value } else { value })
}

/// Micro-units as decimal text with at least two and at most six decimals
/// (`1500000` is `1.50`, `1` is `0.000001`), exactly.
pub fn format_amount(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let whole = abs / MICROS_PER_UNIT as u64;
    let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 {
        &frac[..2]
    } else {
        trimmed
    };
    format!("{sign}{whole}.{frac}")
}

/// The cost of `duration_ms` at `per_hour` micro-units per hour, rounded half up to a
/// micro-unit. Rounding is per event; every report sums the recorded costs.
pub fn cost_of(per_hour: Micros, duration_ms: i64) -> Micros {
    let raw = i128::from(per_hour) * i128::from(duration_ms.max(0));
    let rounded = (raw + MS_PER_HOUR / 2).div_euclid(MS_PER_HOUR);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

/// One price: from `effective_from` on (until a later entry for the same product and
/// model takes over), `per_hour` micro-units per hour of audio (speech-to-text) or of
/// session (streaming). `model` `*` matches every model without its own entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub product: String,
    pub model: String,
    pub per_hour: Micros,
    pub effective_from: Millis,
}

/// Every price ever in force, so an event is priced by its own instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceTable {
    prices: Vec<Price>,
}

/// Built-in prices (AssemblyAI's published list prices for its base models):
/// 0.15 per hour of pre-recorded audio and 0.15 per hour of streaming session.
pub const DEFAULT_SPEECH_TO_TEXT_PER_HOUR: Micros = 150_000;
pub const DEFAULT_STREAMING_PER_HOUR: Micros = 150_000;

impl PriceTable {
    pub fn new(mut prices: Vec<Price>) -> Self {
        // Latest first, so the first match at an instant is the one in force.
        prices.sort_by_key(|p| std::cmp::Reverse(p.effective_from));
        Self { prices }
    }

    pub fn builtin() -> Self {
        Self::new(vec![
            Price {
                product: SPEECH_TO_TEXT.into(),
                model: "*".into(),
                per_hour: DEFAULT_SPEECH_TO_TEXT_PER_HOUR,
                effective_from: 0,
            },
            Price {
                product: STREAMING.into(),
                model: "*".into(),
                per_hour: DEFAULT_STREAMING_PER_HOUR,
                effective_from: 0,
            },
        ])
    }

    pub fn prices(&self) -> &[Price] {
        &self.prices
    }

    /// The per-hour price of `product`/`model` at `at`: the model's own entry in force
    /// if there is one, else the product's `*` entry, else zero (unpriced).
    pub fn per_hour(&self, product: &str, model: &str, at: Millis) -> Micros {
        let in_force = |m: &str| {
            self.prices
                .iter()
                .find(|p| p.product == product && p.model == m && p.effective_from <= at)
                .map(|p| p.per_hour)
        };
        in_force(model).or_else(|| in_force("*")).unwrap_or(0)
    }
}

/// A formatted amount for JSON, CSV and mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Micros);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_amount(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_text_exactly() {
        assert_eq!(parse_amount("50.00"), Ok(50_000_000));
        assert_eq!(parse_amount("50"), Ok(50_000_000));
        assert_eq!(parse_amount("0.1"), Ok(100_000));
        assert_eq!(parse_amount("-2.000001"), Ok(-2_000_001));
        assert_eq!(parse_amount(".5"), Ok(500_000));
        assert_eq!(parse_amount("19.99"), Ok(19_990_000));
        for bad in [
            "",
            "-",
            "1.",
            "1.0000001",
            "1e3",
            "1,00",
            "abc",
            "1.2.3",
            " . ",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_amount("99999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_with_two_to_six_decimals() {
        assert_eq!(format_amount(50_000_000), "50.00");
        assert_eq!(format_amount(1_500_000), "1.50");
        assert_eq!(format_amount(1), "0.000001");
        assert_eq!(format_amount(-1_234_500), "-1.2345");
        assert_eq!(format_amount(0), "0.00");
        for m in [0, 7, 123_456_789, -42, 1_000_000] {
            assert_eq!(parse_amount(&format_amount(m)), Ok(m));
        }
    }

    #[test]
    fn cost_rounds_half_up_per_event() {
        // One hour at 0.15 is 0.15; one second is 0.15/3600 = 41.67 micro-units.
        assert_eq!(cost_of(150_000, 3_600_000), 150_000);
        assert_eq!(cost_of(150_000, 1_000), 42);
        assert_eq!(cost_of(150_000, 0), 0);
        assert_eq!(cost_of(360_000, 5), 1); // 0.5 rounds up
    }

    #[test]
    fn price_in_force_by_instant_and_model() {
        let table = PriceTable::new(vec![
            Price {
                product: SPEECH_TO_TEXT.into(),
                model: "*".into(),
                per_hour: 100,
                effective_from: 0,
            },
            Price {
                product: SPEECH_TO_TEXT.into(),
                model: "*".into(),
                per_hour: 200,
                effective_from: 1_000,
            },
            Price {
                product: SPEECH_TO_TEXT.into(),
                model: "best".into(),
                per_hour: 500,
                effective_from: 2_000,
            },
        ]);
        assert_eq!(table.per_hour(SPEECH_TO_TEXT, "tiny", 999), 100);
        assert_eq!(table.per_hour(SPEECH_TO_TEXT, "tiny", 1_000), 200);
        assert_eq!(table.per_hour(SPEECH_TO_TEXT, "best", 1_500), 200);
        assert_eq!(table.per_hour(SPEECH_TO_TEXT, "best", 2_000), 500);
        assert_eq!(table.per_hour(STREAMING, "best", 2_000), 0);
    }
}
