//! The figures: one JSON line each on stdout as they come, a readable line
//! on stderr, and a table at the end.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

/// Figures collected so far.
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, String)>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Print one figure: `v` (its `name` names it) and its readable line.
    pub fn figure(&mut self, v: Value, readable: String) {
        println!("{v}");
        let _ = std::io::stdout().flush();
        let name = v["name"].as_str().unwrap_or("?").to_owned();
        eprintln!("bench: {name}: {readable}");
        self.rows.push((name, readable));
    }

    /// Every figure's readable line, as a table on stderr.
    pub fn table(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(4);
        eprintln!();
        eprintln!("{:w$}  result", "figure");
        eprintln!("{:-<w$}  {:-<60}", "", "");
        for (name, text) in &self.rows {
            eprintln!("{name:w$}  {text}");
        }
    }
}

/// `x` to `digits` decimals (for the JSON figures).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// The `p` quantile of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}
