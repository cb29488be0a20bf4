//! How quantities are reported to people: durations in seconds rounded to the
//! millisecond, so sums of stored seconds never print binary float noise.

/// `seconds` rounded to the nearest millisecond. The result prints as at most three
/// decimals (`75.926`, never `75.92637500000001`).
pub fn seconds_to_ms(seconds: f64) -> f64 {
    if !seconds.is_finite() {
        return 0.0;
    }
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_print_without_noise() {
        let sum: f64 = [30.1, 25.726375, 20.1].iter().sum();
        assert_eq!(serde_json_like(seconds_to_ms(sum)), "75.926");
        assert_eq!(serde_json_like(seconds_to_ms(75.92637500000001)), "75.926");
        assert_eq!(seconds_to_ms(0.0004), 0.0);
        assert_eq!(seconds_to_ms(2.0006), 2.001);
        assert_eq!(seconds_to_ms(f64::NAN), 0.0);
    }

    /// Rust prints the shortest text that reads back as the same float, as JSON does.
    fn serde_json_like(v: f64) -> String {
        format!("{v}")
    }
}
