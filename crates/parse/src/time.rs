//! Timestamps of timeline entries and dates of incidents.

use std::sync::LazyLock;

use chrono::{NaiveDate, NaiveTime};
use precedent_core::At;
use regex::Regex;

/// A timestamp at the very start of a line or cell: `14:02`, `[14:02]`, `14:02 UTC`,
/// `2021-03-04 14:02`, `2021-03-04T14:02:05Z`, `9:12am`, `2021-03-04`.
static LEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&crate::classify::ascii_boundaries(
        r"(?x)
        ^[\s\[(*_]*
        (?:(?P<date>(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01]))(?:[T\s,]+|$|[\])*_]))?
        (?:(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d)(?:\.\d+)?)?\s*(?P<ampm>[aApP]\.?[mM]\.?)?)?
        (?P<tz>\s*(?:Z|UTC|GMT|[PMCE][SD]T|CES?T|BST|IST|JST|AE[SD]T|[+-]\d{2}:?\d{2})\b)?
        [\])*_]*
        (?:\s|$|[-:,|–—.])",
    ))
    .expect("timestamp pattern compiles")
});

/// Relative times: `T+5m`, `T + 1h30m`, `T-10 min`.
static RELATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^[\s\[(*_]*T\s*(?P<sign>[+-])\s*(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h(?:ours?|rs?)?)?\s*(?:(?P<m>\d+)\s*m(?:in(?:utes?|s)?)?)?\s*(?:(?P<s>\d+)\s*s(?:ec(?:onds?|s)?)?)?[\])*_]*(?:\s|$|[-:,|–—.])",
    )
    .expect("relative time pattern compiles")
});

static ISO_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&crate::classify::ascii_boundaries(
        r"\b((?:19|20)\d{2})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])\b",
    ))
    .expect("iso date")
});

static COMPACT_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?:\D|$)")
        .expect("compact date")
});

const MONTHS: &str = "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?";

static MONTH_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&crate::classify::ascii_boundaries(&format!(
        r"(?i)\b(?P<mon>{MONTHS})\.?\s+(?P<d>[12]?\d|3[01])(?:st|nd|rd|th)?,?\s+(?P<y>(?:19|20)\d{{2}})\b"
    )))
    .expect("month-first date")
});

static DAY_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&crate::classify::ascii_boundaries(&format!(
        r"(?i)\b(?P<d>[12]?\d|3[01])(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{MONTHS})\.?,?\s+(?P<y>(?:19|20)\d{{2}})\b"
    )))
    .expect("day-first date")
});

/// Parses a timestamp at the start of `text`. Returns it and the byte length it took.
pub(crate) fn leading_timestamp(text: &str) -> Option<(At, usize)> {
    if let Some(caps) = RELATIVE.captures(text) {
        let num = |name| caps.name(name).and_then(|m| m.as_str().parse::<i64>().ok());
        let (d, h, m, s) = (num("d"), num("h"), num("m"), num("s"));
        if d.is_some() || h.is_some() || m.is_some() || s.is_some() {
            let minutes =
                d.unwrap_or(0) * 1440 + h.unwrap_or(0) * 60 + m.unwrap_or(0) + s.unwrap_or(0) / 60;
            let sign = if &caps["sign"] == "-" { -1 } else { 1 };
            let end = caps.get(0).map_or(0, |m| m.end());
            return Some((
                At {
                    raw: clean_raw(&text[..end]),
                    date: None,
                    time: None,
                    offset_minutes: Some(sign * minutes),
                },
                end,
            ));
        }
    }
    let caps = LEADING.captures(text)?;
    let date = caps.name("date").and_then(|m| parse_ymd(m.as_str()));
    let time = match (caps.name("h"), caps.name("m")) {
        (Some(h), Some(m)) => {
            let mut hour: u32 = h.as_str().parse().ok()?;
            let minute: u32 = m.as_str().parse().ok()?;
            let second: u32 = caps
                .name("s")
                .map_or(Some(0), |s| s.as_str().parse().ok())?;
            if let Some(ampm) = caps.name("ampm") {
                let pm = ampm.as_str().to_ascii_lowercase().starts_with('p');
                if !(1..=12).contains(&hour) {
                    return None;
                }
                hour = match (pm, hour) {
                    (false, 12) => 0,
                    (true, 12) => 12,
                    (true, h) => h + 12,
                    (false, h) => h,
                };
            }
            NaiveTime::from_hms_opt(hour, minute, second)
        }
        _ => None,
    };
    if date.is_none() && time.is_none() {
        return None;
    }
    let end = caps.get(0).map_or(0, |m| m.end());
    let raw_end = text[..end]
        .trim_end_matches([' ', '-', ':', ',', '|', '–', '—', '.', '\t'])
        .len();
    Some((
        At {
            raw: clean_raw(&text[..raw_end]),
            date,
            time,
            offset_minutes: None,
        },
        end,
    ))
}

fn clean_raw(raw: &str) -> String {
    raw.trim_matches(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '[' | ']' | '(' | ')' | '*' | '_' | '-' | ':' | ',' | '|' | '–' | '—'
            )
    })
    .to_owned()
}

fn parse_ymd(s: &str) -> Option<NaiveDate> {
    let mut parts = s.split(['-', '/', '.']);
    let y = parts.next()?.parse().ok()?;
    let m = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    NaiveDate::from_ymd_opt(y, m, d)
}

/// A date in a file name: `2021-09-30-cert.md`, `20170719-ldap.txt`.
pub(crate) fn date_from_file_name(name: &str) -> Option<NaiveDate> {
    if let Some(caps) = ISO_DATE.captures(name) {
        return NaiveDate::from_ymd_opt(
            caps[1].parse().ok()?,
            caps[2].parse().ok()?,
            caps[3].parse().ok()?,
        );
    }
    let caps = COMPACT_DATE.captures(name)?;
    NaiveDate::from_ymd_opt(
        caps[1].parse().ok()?,
        caps[2].parse().ok()?,
        caps[3].parse().ok()?,
    )
}

/// The first date written in `text` (ISO, `March 4, 2021`, `4th March 2021`).
pub(crate) fn first_date_in(text: &str) -> Option<NaiveDate> {
    let mut best: Option<(usize, NaiveDate)> = None;
    let mut consider = |pos: usize, date: Option<NaiveDate>| {
        if let Some(date) = date
            && best.is_none_or(|(p, _)| pos < p)
        {
            best = Some((pos, date));
        }
    };
    if let Some(caps) = ISO_DATE.captures(text) {
        let pos = caps.get(0).map_or(0, |m| m.start());
        consider(pos, parse_ymd(&caps[0]));
    }
    for regex in [&*MONTH_FIRST, &*DAY_FIRST] {
        if let Some(caps) = regex.captures(text) {
            let pos = caps.get(0).map_or(0, |m| m.start());
            let month = month_number(&caps["mon"]);
            let date = month.and_then(|m| {
                NaiveDate::from_ymd_opt(caps["y"].parse().ok()?, m, caps["d"].parse().ok()?)
            });
            consider(pos, date);
        }
    }
    best.map(|(_, date)| date)
}

/// A date or datetime value from front matter: `2021-03-04`, `2021-03-04T14:02:00Z`, `2021-03-04 14:02`.
pub(crate) fn date_value(value: &str) -> Option<NaiveDate> {
    let value = value.trim();
    parse_ymd(value.get(..10)?).or_else(|| first_date_in(value))
}

fn month_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let prefix = name.get(..3)?.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|n| *n == prefix)
        .map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)]
    use super::*;

    fn check(input: &str, expected: Option<(&str, Option<&str>, Option<&str>, Option<i64>)>) {
        let got = leading_timestamp(input).map(|(at, _)| at);
        let expected = expected.map(|(raw, date, time, offset)| At {
            raw: raw.to_owned(),
            date: date.map(|d| d.parse().unwrap()),
            time: time.map(|t| NaiveTime::parse_from_str(t, "%H:%M:%S").unwrap()),
            offset_minutes: offset,
        });
        assert_eq!(got, expected, "{input:?}");
    }

    #[test]
    fn leading_timestamps() {
        check("14:02 paged", Some(("14:02", None, Some("14:02:00"), None)));
        check(
            "14:02 UTC - paged",
            Some(("14:02 UTC", None, Some("14:02:00"), None)),
        );
        check(
            "[14:02] paged",
            Some(("14:02", None, Some("14:02:00"), None)),
        );
        check(
            "**09:12 UTC**: paged",
            Some(("09:12 UTC", None, Some("09:12:00"), None)),
        );
        check(
            "2021-03-04 14:02 | alert",
            Some((
                "2021-03-04 14:02",
                Some("2021-03-04"),
                Some("14:02:00"),
                None,
            )),
        );
        check(
            "2021-03-04T14:02:05Z rollout",
            Some((
                "2021-03-04T14:02:05Z",
                Some("2021-03-04"),
                Some("14:02:05"),
                None,
            )),
        );
        check(
            "9:15pm failover",
            Some(("9:15pm", None, Some("21:15:00"), None)),
        );
        check(
            "2018-01-19",
            Some(("2018-01-19", Some("2018-01-19"), None, None)),
        );
        check(
            "T+5m: rollback started",
            Some(("T+5m", None, None, Some(5))),
        );
        check(
            "T + 1h30m rollback",
            Some(("T + 1h30m", None, None, Some(90))),
        );
        check(
            "20:29 Filippo points out",
            Some(("20:29", None, Some("20:29:00"), None)),
        );
        check(
            "19:54: Greg reports",
            Some(("19:54", None, Some("19:54:00"), None)),
        );
        check("3.5 million requests", None);
        check("25:00 is not a time", None);
        check("1234 things", None);
        check("The outage", None);
        check("Tuesday we", None);
    }

    #[test]
    fn dates() {
        let d = |s: &str| Some(s.parse::<NaiveDate>().unwrap());
        assert_eq!(date_from_file_name("2021-09-30-ssl.md"), d("2021-09-30"));
        assert_eq!(date_from_file_name("20170719-ldap.txt"), d("2017-07-19"));
        assert_eq!(date_from_file_name("PM2021-004-adfs.md"), None);
        assert_eq!(
            first_date_in("On July 19th, 2017 at 20:06"),
            d("2017-07-19")
        );
        assert_eq!(
            first_date_in("on the 31st of March 2021 and 2022-01-01"),
            d("2021-03-31")
        );
        assert_eq!(first_date_in("Incident on 2020-08-04"), d("2020-08-04"));
        assert_eq!(first_date_in("no date here 2021"), None);
        assert_eq!(date_value("2021-03-04T14:02:00Z"), d("2021-03-04"));
    }
}
