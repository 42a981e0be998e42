//! Durations as our users write them: whole seconds (`10`) or strings such as `"500ms"`.
//!
//! Not `humantime`: it refuses a bare number of seconds (`replicaLagThreshold: 5`, as the
//! configuration our users already run writes it) and fractions (`0.5`, `1.5s`), and it takes
//! spellings nobody here writes (`1y`, `2months`) whose lengths would only be refused later.

use std::time::Duration;

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"`, combinations such as `"1m30s"`, and a bare number
/// of seconds (`"10"`, `"0.5"`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}` has a number without a unit (ms, s, m or h)"))?;
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (write for example 500ms, 10s, 2m or 1h)"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` in `{text}` is not a number", &rest[..digits]))?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let scale = match after[..unit_len].trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(format!(
                    "`{unit}` in `{text}` is not a unit (use ms, s, m or h)"
                ));
            }
        };
        total = total
            .checked_add(seconds_to_duration(number * scale)?)
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = &after[unit_len..];
    }
    Ok(total)
}

pub(crate) fn seconds_to_duration(seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{seconds} is not a duration of 0 seconds or more"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{seconds} seconds is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for bad in [
            "", "abc", "10x", "-1", "-1s", "s", "1..2s", "NaN", "inf", "1e400",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("10parsecs").unwrap_err().contains("parsecs"));
    }
}

/// Property tests: any text gives a duration or a reason, never a panic; what users write
/// parses to exactly what they meant. `PROPTEST_CASES=100000 cargo test --lib props` runs them
/// longer.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_gives_a_reason(text in any::<String>()) {
            if let Err(reason) = parse_duration(&text) {
                prop_assert!(!reason.is_empty());
            }
        }

        #[test]
        fn duration_shaped_text_parses_or_gives_a_reason(
            text in "[0-9.]{0,6}(ms|s|sec|m|min|h|x|)[0-9.]{0,4}(ms|s|h|)",
        ) {
            if let Err(reason) = parse_duration(&text) {
                prop_assert!(!reason.is_empty());
            }
        }

        #[test]
        fn combined_units_add_up(
            h in 0u64..100, m in 0u64..100, s in 0u64..100, ms in 0u64..1000,
        ) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            prop_assert_eq!(parse_duration(&text), Ok(expected));
        }

        #[test]
        fn bare_numbers_are_seconds(seconds in 0u64..1_000_000_000) {
            prop_assert_eq!(
                parse_duration(&seconds.to_string()),
                Ok(Duration::from_secs(seconds))
            );
        }

        #[test]
        fn negative_and_non_finite_numbers_are_refused(
            x in prop_oneof![
                (1e-300f64..1e300).prop_map(|x| -x),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
            ],
        ) {
            prop_assert!(parse_duration(&x.to_string()).is_err());
            let with_unit = format!("{x}s");
            prop_assert!(parse_duration(&with_unit).is_err());
        }
    }
}
