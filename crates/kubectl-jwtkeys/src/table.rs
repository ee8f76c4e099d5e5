//! Plain-text tables in kubectl's style (upper-case headers, columns padded with spaces) and instants
//! shown with their distance from now.

use jiff::{SignedDuration, Timestamp};

/// A table built row by row.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row; the last column is not padded.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `2026-01-01T00:00:00Z (in 29m)` or `(3h ago)`; the value unchanged when it does not parse.
pub fn when(rfc3339: &str, now: Timestamp) -> String {
    match rfc3339.parse::<Timestamp>() {
        Ok(at) => format!(
            "{} ({})",
            at.round(jiff::Unit::Second).unwrap_or(at),
            relative(at, now)
        ),
        Err(_) => rfc3339.to_string(),
    }
}

/// `in 29m`, `3h ago`, `now`.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let delta = at.duration_since(now);
    if delta.abs() < SignedDuration::from_secs(1) {
        return "now".into();
    }
    let text = human(delta.abs());
    if delta.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// The two largest units of a duration: `29m`, `1h5m`, `3d4h`, `12s`.
pub fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) if seconds == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m{seconds}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell_and_lines_not_padded_at_the_end() {
        let mut table = Table::new(&["KID", "STATE"]);
        table.row(vec!["abcdef".into(), "Active".into()]);
        table.row(vec!["x".into(), "".into()]);
        assert_eq!(table.render(), "KID      STATE\nabcdef   Active\nx\n");
    }

    #[test]
    fn instants_read_as_a_distance_from_now() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(
            when("2026-01-01T00:29:00Z", now),
            "2026-01-01T00:29:00Z (in 29m)"
        );
        assert_eq!(
            relative("2025-12-31T21:00:00Z".parse().unwrap(), now),
            "3h ago"
        );
        assert_eq!(
            relative("2026-01-04T04:10:00Z".parse().unwrap(), now),
            "in 3d4h"
        );
        assert_eq!(relative(now, now), "now");
        assert_eq!(when("soon", now), "soon");
    }
}
