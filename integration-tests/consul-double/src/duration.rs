//! Go's `time.ParseDuration` syntax, which Consul uses for `wait`, `TTL` and `Interval`:
//! a sequence of decimal numbers with units (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as
//! `"300ms"`, `"1m30s"` or `"1.5h"`; a bare `"0"` is zero. Negative durations are refused
//! (Consul never accepts them where the double parses durations).

use std::time::Duration;

/// Parses a Go duration string.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration \"{text}\"");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{text}\""))?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{text}\""
                ))
            }
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<Duration>) {
        assert_eq!(parse(input).ok(), expected, "{input}");
    }

    #[test]
    fn go_durations() {
        check("0", Some(Duration::ZERO));
        check("5m", Some(Duration::from_secs(300)));
        check("300s", Some(Duration::from_secs(300)));
        check("1m30s", Some(Duration::from_secs(90)));
        check("250ms", Some(Duration::from_millis(250)));
        check("1.5h", Some(Duration::from_secs(5400)));
        check("10us", Some(Duration::from_micros(10)));
        check("", None);
        check("5", None);
        check("-1s", None);
        check("5x", None);
        check("s", None);
    }
}
