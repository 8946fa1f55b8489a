//! Durations on the command line and in the environment: a plain number is seconds
//! (`2.5`), or a number with a unit: `500ms`, `90s`, `30m`, `1h`, `7d` (`token --ttl`
//! takes the same).

use std::time::Duration;

const HINT: &str = "a duration: seconds (2.5) or 500ms, 90s, 30m, 1h, 7d";

/// Parses `v`, which must lie in `0 ..= max`.
pub fn parse(v: &str, max: Duration) -> Result<Duration, String> {
    let t = v.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{v:?} is not {HINT}"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{v:?} is not {HINT}")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs < 0.0 || secs > max.as_secs_f64() {
        return Err(format!("{v:?} is not between 0 and {} s", max.as_secs()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: Duration = Duration::from_secs(31_536_000);

    #[test]
    fn numbers_and_units() {
        let p = |v| parse(v, YEAR);
        assert_eq!(p("90"), Ok(Duration::from_secs(90)));
        assert_eq!(p("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(p("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(p("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(p(" 1h "), Ok(Duration::from_secs(3600)));
        assert_eq!(p("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(p("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "1x", "-1", "1h30m", "2y", "NaN"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(p("366d").is_err());
    }
}
