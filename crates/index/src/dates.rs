//! Dates as people type them in `since` and `until` filters: a day (`2023-06-01`), a month
//! (`2023-06`), a year (`2023`), or a time ago (`7d`, `2w`, `3m`, `1y`), plus `today` and
//! `yesterday`. One parser for the CLI, HTTP and MCP, so that every surface accepts the same
//! forms and says the same thing about the rest.

use chrono::{Datelike, Days, Months, NaiveDate};
use serde::{Deserialize, Deserializer};

/// The forms [`parse_date`] accepts, for error messages and help texts.
pub const DATE_FORMS: &str = "2023-06-01, 2023-06, 2023, or a time ago such as 7d, 2w, 3m, 1y";

/// Which end of a range a date bounds: a month or a year given for `since` means its first day,
/// for `until` its last day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateEdge {
    /// The first day a filter lets through (`since`).
    Start,
    /// The last day a filter lets through (`until`).
    End,
}

/// A date that is not in one of the [`DATE_FORMS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {text:?} as a date: expected {DATE_FORMS}")]
pub struct DateError {
    /// What was given.
    pub text: String,
}

/// Reads `text` as a day, month, year or time ago before `today`; months and years become
/// their first or last day depending on `edge`.
pub fn parse_date(text: &str, edge: DateEdge, today: NaiveDate) -> Result<NaiveDate, DateError> {
    let err = || DateError {
        text: text.to_owned(),
    };
    let t = text.trim().to_ascii_lowercase();
    match t.as_str() {
        "today" => return Ok(today),
        "yesterday" => return today.checked_sub_days(Days::new(1)).ok_or_else(err),
        _ => {}
    }
    if let Some(ago) = relative(&t, today) {
        return ago.ok_or_else(err);
    }
    absolute(&t, edge).ok_or_else(err)
}

/// `2023-06-01`, `2023-06`, `2023`.
fn absolute(t: &str, edge: DateEdge) -> Option<NaiveDate> {
    let num = |s: &str, len: std::ops::RangeInclusive<usize>| -> Option<u32> {
        if len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let parts: Vec<&str> = t.split('-').collect();
    match parts.as_slice() {
        [y, m, d] => NaiveDate::from_ymd_opt(num(y, 4..=4)? as i32, num(m, 1..=2)?, num(d, 1..=2)?),
        [y, m] => {
            let first = NaiveDate::from_ymd_opt(num(y, 4..=4)? as i32, num(m, 1..=2)?, 1)?;
            match edge {
                DateEdge::Start => Some(first),
                DateEdge::End => first.checked_add_months(Months::new(1))?.pred_opt(),
            }
        }
        [y] => {
            let year = num(y, 4..=4)? as i32;
            match edge {
                DateEdge::Start => NaiveDate::from_ymd_opt(year, 1, 1),
                DateEdge::End => NaiveDate::from_ymd_opt(year, 12, 31),
            }
        }
        _ => None,
    }
}

/// `7d`, `2w`, `3m`, `1y` (also `7 days`, `2 weeks`): `None` when `t` is not of that form.
fn relative(t: &str, today: NaiveDate) -> Option<Option<NaiveDate>> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u32 = t[..digits].parse().ok()?;
    let unit = t[digits..].trim();
    let date = match unit {
        "d" | "day" | "days" => today.checked_sub_days(Days::new(u64::from(n))),
        "w" | "week" | "weeks" => today.checked_sub_days(Days::new(u64::from(n) * 7)),
        "m" | "mo" | "month" | "months" => today.checked_sub_months(Months::new(n)),
        "y" | "year" | "years" => today
            .with_year(today.year() - n as i32)
            .or_else(|| today.pred_opt()?.with_year(today.year() - n as i32)),
        _ => return None,
    };
    Some(date)
}

/// Today in local time, the reference of relative dates.
pub fn today() -> NaiveDate {
    chrono::Local::now().date_naive()
}

fn deserialize_edge<'de, D: Deserializer<'de>>(
    deserializer: D,
    edge: DateEdge,
) -> Result<Option<NaiveDate>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    // serde's messages do not say which field failed: this one names its parameter.
    let name = match edge {
        DateEdge::Start => "since",
        DateEdge::End => "until",
    };
    text.map(|t| {
        parse_date(&t, edge, today()).map_err(|e| serde::de::Error::custom(format!("{name}: {e}")))
    })
    .transpose()
}

/// For `#[serde(deserialize_with = ...)]` on an optional `since` date: accepts every
/// [`DATE_FORMS`] form and names the accepted forms otherwise.
pub fn deserialize_since<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDate>, D::Error> {
    deserialize_edge(deserializer, DateEdge::Start)
}

/// The same for an optional `until` date (a month or year means its last day).
pub fn deserialize_until<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDate>, D::Error> {
    deserialize_edge(deserializer, DateEdge::End)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn check(text: &str, edge: DateEdge, expected: Option<NaiveDate>) {
        assert_eq!(
            parse_date(text, edge, day(2024, 3, 15)).ok(),
            expected,
            "{text}"
        );
    }

    #[test]
    fn accepts_days_months_years_and_times_ago() {
        use DateEdge::{End, Start};
        check("2023-06-01", Start, Some(day(2023, 6, 1)));
        check("2023-6-1", End, Some(day(2023, 6, 1)));
        check("2023-06", Start, Some(day(2023, 6, 1)));
        check("2023-06", End, Some(day(2023, 6, 30)));
        check("2024-02", End, Some(day(2024, 2, 29)));
        check("2023-12", End, Some(day(2023, 12, 31)));
        check("2023", Start, Some(day(2023, 1, 1)));
        check("2023", End, Some(day(2023, 12, 31)));
        check("7d", Start, Some(day(2024, 3, 8)));
        check("2w", End, Some(day(2024, 3, 1)));
        check("3m", Start, Some(day(2023, 12, 15)));
        check("1y", Start, Some(day(2023, 3, 15)));
        check("10 days", Start, Some(day(2024, 3, 5)));
        check(" Today ", Start, Some(day(2024, 3, 15)));
        check("yesterday", Start, Some(day(2024, 3, 14)));
    }

    #[test]
    fn rejects_the_rest_and_names_the_forms() {
        use DateEdge::Start;
        for bad in [
            "",
            "2023-13",
            "2023-02-30",
            "23",
            "7x",
            "d7",
            "next week",
            "2023/06/01",
        ] {
            check(bad, Start, None);
        }
        let err = parse_date("yesterday-ish", Start, day(2024, 3, 15)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("2023-06-01") && msg.contains("7d"), "{msg}");
    }

    #[test]
    fn deserializes_through_serde() {
        #[derive(Deserialize)]
        struct F {
            #[serde(default, deserialize_with = "deserialize_until")]
            until: Option<NaiveDate>,
        }
        let f: F = serde_json::from_str(r#"{"until": "2023-06"}"#).unwrap();
        assert_eq!(f.until, Some(day(2023, 6, 30)));
        let f: F = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(f.until, None);
        let err = serde_json::from_str::<F>(r#"{"until": "soon"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("2w"), "{err}");
        assert!(err.to_string().starts_with("until: "), "{err}");
    }
}
