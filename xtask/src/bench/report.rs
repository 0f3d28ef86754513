//! The bench report: one row per measured figure, printed as a table and
//! written as JSON.
//!
//! A figure keeps every individual measurement and their median. Request
//! rates also get their ratio to the `GET /healthz` rate of the same bench
//! (the machine's ceiling for one HTTP round trip), and figures with a target
//! say whether the median meets it. A missed target is reported, not turned
//! into a failure; a scenario that could not run at all is a failure.

use anyhow::{Context, bail};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// The unit of request rates; these get a ratio to the healthz rate.
pub const PER_SECOND: &str = "req/s";

/// What a figure's median should be.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// At least this value.
    AtLeast(f64),
    /// At most this value.
    AtMost(f64),
}

impl Target {
    /// Whether `value` meets the target.
    fn met_by(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::AtMost(bound) => value <= bound,
        }
    }

    /// Signed distance from the bound, as a fraction of it (negative = missed).
    fn margin(self, value: f64) -> f64 {
        match self {
            Target::AtLeast(bound) => (value - bound) / bound,
            Target::AtMost(bound) => (bound - value) / bound,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The scenario that measured it.
    pub scenario: String,
    /// What it is ("appends", "p99", ...).
    pub name: String,
    /// Its unit ("req/s", "us", "ms", "s", "MB", "ratio").
    pub unit: String,
    /// Every measurement, in order.
    pub runs: Vec<f64>,
    /// The headline value: the median of `runs` unless set otherwise.
    pub median: f64,
    /// For request rates: `median` / the healthz median of this bench.
    pub vs_healthz: Option<f64>,
    /// What the median should be.
    pub target: Option<Target>,
    /// Whether the median meets the target.
    pub met: Option<bool>,
}

impl Figure {
    /// A figure whose headline is the median of `runs`.
    pub fn new(scenario: &str, name: &str, unit: &str, runs: Vec<f64>) -> Self {
        Figure {
            scenario: scenario.to_owned(),
            name: name.to_owned(),
            unit: unit.to_owned(),
            median: median(&runs),
            runs,
            vs_healthz: None,
            target: None,
            met: None,
        }
    }

    /// The same figure with a target.
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Everything one bench measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced it.
    pub command: String,
    /// Whether it was `--quick`.
    pub quick: bool,
    /// Measurements per scenario.
    pub repeats: usize,
    /// Warm-up and measured window of each load run, in seconds.
    pub warmup_seconds: f64,
    /// The measured window of each load run, in seconds.
    pub measure_seconds: f64,
    /// Connections of each load run.
    pub connections: usize,
    /// CPUs the machine offers.
    pub cpus: usize,
    /// When the bench started (Unix seconds).
    pub started_unix: u64,
    /// The figures, in scenario order.
    pub figures: Vec<Figure>,
    /// Context worth keeping next to the figures.
    pub notes: Vec<String>,
    /// Scenarios that failed, with why.
    pub failures: Vec<String>,
}

impl Report {
    /// Adds a figure.
    pub fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: {note}");
        self.notes.push(note);
    }

    /// The median of a figure already in the report.
    pub fn median_of(&self, scenario: &str, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|figure| figure.scenario == scenario && figure.name == name)
            .map(|figure| figure.median)
    }

    /// Fills in the ratios to the healthz rate and the target verdicts.
    pub fn finish(&mut self) {
        let ceiling = self.median_of("healthz", "GET /healthz");
        for figure in &mut self.figures {
            if figure.unit == PER_SECOND {
                figure.vs_healthz = ceiling.map(|ceiling| figure.median / ceiling);
            }
            figure.met = figure.target.map(|target| target.met_by(figure.median));
        }
    }

    /// The report as a plain-text table, followed by the notes and failures.
    pub fn table(&self) -> String {
        let header = [
            "scenario",
            "figure",
            "median",
            "runs",
            "vs healthz",
            "target",
            "result",
        ];
        let rows: Vec<[String; 7]> = self.figures.iter().map(row).collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        push_row(&mut out, &header.map(str::to_owned), &widths);
        push_row(&mut out, &widths.map(|width| "-".repeat(width)), &widths);
        for row in &rows {
            push_row(&mut out, row, &widths);
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "FAILED: {failure}");
        }
        out
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Fails when a scenario failed.
    pub fn check_complete(&self) -> anyhow::Result<()> {
        if !self.failures.is_empty() {
            bail!(
                "{} scenario(s) failed: {}",
                self.failures.len(),
                self.failures.join("; ")
            );
        }
        Ok(())
    }
}

/// The table cells of a figure.
fn row(figure: &Figure) -> [String; 7] {
    let runs: Vec<String> = figure
        .runs
        .iter()
        .map(|value| format_value(*value, &figure.unit))
        .collect();
    let (target, result) = match figure.target {
        None => (String::new(), String::new()),
        Some(target) => {
            let bound = match target {
                Target::AtLeast(bound) => format!(">= {}", format_value(bound, &figure.unit)),
                Target::AtMost(bound) => format!("<= {}", format_value(bound, &figure.unit)),
            };
            let margin = target.margin(figure.median) * 100.0;
            let verdict = if target.met_by(figure.median) && !margin.is_finite() {
                // A bound of zero leaves no margin to express as a share.
                "met".to_owned()
            } else if target.met_by(figure.median) {
                format!("met (+{margin:.0}%)")
            } else {
                format!("MISSED by {:.0}%", -margin)
            };
            (bound, verdict)
        }
    };
    [
        figure.scenario.clone(),
        figure.name.clone(),
        format_value(figure.median, &figure.unit),
        runs.join(" / "),
        figure
            .vs_healthz
            .map(|ratio| format!("{:.0}%", ratio * 100.0))
            .unwrap_or_default(),
        target,
        result,
    ]
}

/// Appends one table line.
fn push_row(out: &mut String, cells: &[String; 7], widths: &[usize; 7]) {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    let _ = writeln!(out, "{}", line.join(" | ").trim_end());
}

/// A value with its unit, rounded for reading.
pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        PER_SECOND => format!("{}/s", thousands(value.round() as u64)),
        "us" => format!("{} us", thousands(value.round() as u64)),
        "ratio" => format!("{value:.2}"),
        "s" => format!("{value:.3} s"),
        _ => format!("{value:.1} {unit}"),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn targets_report_their_margin() {
        assert!(Target::AtLeast(100.0).met_by(100.0));
        assert!(!Target::AtMost(1.5).met_by(1.6));
        assert!((Target::AtLeast(100.0).margin(80.0) + 0.2).abs() < 1e-9);
    }
}
