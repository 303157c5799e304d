//! Plain-text tables for the commands' human output.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// Columns padded to their widest cell; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How long ago `at` was, in its largest whole unit (`42s`, `5m`, `3h`,
/// `2d`); `-` when unknown.
pub fn age(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else {
        return "-".into();
    };
    age_secs((now - at).num_seconds())
}

/// The age of something the database timed, from its seconds ago (a float
/// from `extract(epoch …)`, which an infinite time makes infinite).
pub fn age_of_secs(secs: f64) -> String {
    if secs.is_nan() {
        return "-".into();
    }
    // A float cast to an integer saturates.
    age_secs(secs as i64)
}

fn age_secs(s: i64) -> String {
    let s = s.max(0);
    match s {
        86_400.. => format!("{}d", s / 86_400),
        3_600.. => format!("{}h", s / 3_600),
        60.. => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The most characters a name, a host or a runtime shows in a table.
pub const WIDEST: usize = 64;

/// A name, a host or a runtime as a table's padded cell shows it:
/// [`shown`], cut at [`WIDEST`] characters with `…`, so one row's long
/// name does not pad every line of the table to its width (`--json` keeps
/// it whole).
pub fn cell(text: &str) -> String {
    let shown = shown(text);
    if shown.chars().count() <= WIDEST {
        return shown;
    }
    let cut: String = shown.chars().take(WIDEST - 1).collect();
    format!("{cut}…")
}

/// Text a row provides (a name, a host, an error), as the human output
/// shows it: as it is when each character prints as itself, else quoted
/// and escaped as `{:?}` does (the way `berth plan` shows a name), so a
/// newline, a tab or an escape sequence cannot break a table's lines or
/// paint on the terminal. JSON output keeps the raw value.
pub fn shown(text: &str) -> String {
    let debug = format!("{text:?}");
    // `{:?}` escapes a quote and a backslash too; those alone print as
    // themselves and leave the text as it is.
    let plain = debug.len() - 2 == text.len() + text.matches(['"', '\\']).count();
    if plain { text.to_string() } else { debug }
}

/// The first 19 characters of a digest (`sha256:` and 12 hex), or `-`.
pub fn short_digest(digest: Option<&str>) -> String {
    match digest {
        Some(d) => d.get(..19).unwrap_or(d).to_string(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_name_is_cut_and_a_short_one_kept() {
        assert_eq!(cell("web-1"), "web-1");
        let long = cell(&"n".repeat(100_000));
        assert_eq!(long, format!("{}…", "n".repeat(WIDEST - 1)));
        assert_eq!(cell("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn an_age_from_seconds_takes_any_float() {
        assert_eq!(age_of_secs(90.0), "1m");
        assert_eq!(age_of_secs(-5.0), "0s");
        assert_eq!(
            age_of_secs(f64::INFINITY),
            format!("{}d", i64::MAX / 86_400)
        );
        assert_eq!(age_of_secs(f64::NEG_INFINITY), "0s");
        assert_eq!(age_of_secs(f64::NAN), "-");
    }

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let mut t = Table::new(&["ID", "STATUS", "NOTE"]);
        t.push(vec!["a".into(), "online".into(), "x".into()]);
        t.push(vec!["bbbb".into(), "-".into(), "longer note".into()]);
        assert_eq!(
            t.render(),
            "ID    STATUS  NOTE\na     online  x\nbbbb  -       longer note\n"
        );
    }

    #[test]
    fn text_that_does_not_print_as_itself_is_quoted_and_escaped() {
        for plain in ["alpha", "two words", "it's \"quoted\" C:\\x", "café", ""] {
            assert_eq!(shown(plain), plain);
        }
        assert_eq!(shown("a\nb"), r#""a\nb""#);
        assert_eq!(shown("tab\there \"q\""), r#""tab\there \"q\"""#);
        assert_eq!(shown("\x1b[2J\x1b[31mok"), r#""\u{1b}[2J\u{1b}[31mok""#);
        assert_eq!(shown("cr\rover"), r#""cr\rover""#);
        assert_eq!(shown("rtl\u{202e}x"), r#""rtl\u{202e}x""#);
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::TimeDelta::seconds(s));
        assert_eq!(age(ago(42), now), "42s");
        assert_eq!(age(ago(300), now), "5m");
        assert_eq!(age(ago(3 * 3600 + 5), now), "3h");
        assert_eq!(age(ago(2 * 86_400), now), "2d");
        assert_eq!(age(None, now), "-");
    }
}
