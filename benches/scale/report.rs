//! The figures of a run: each printed as it is measured and again in a table at the end (also
//! when a phase fails), with its bound checked only after everything is printed.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

struct Figure {
    label: String,
    value: f64,
    unit: &'static str,
    versus: String,
    /// Upper bound, checked in quick mode (or always for an invariant).
    bound: Option<f64>,
    invariant: bool,
}

impl Figure {
    /// Over its bound, or not measured at all (NaN) where a bound applies.
    fn exceeded(&self) -> bool {
        self.bound
            .is_some_and(|b| self.value.is_nan() || self.value > b)
    }
}

/// Every figure, printed as it is measured and again as a table at the end (also when a phase
/// fails); bounds are checked only after everything is printed.
pub struct Report {
    quick: bool,
    /// What was run, repeated above the summary table.
    title: String,
    figures: Mutex<Vec<Figure>>,
    /// The summary table was printed.
    printed: AtomicBool,
}

pub fn show(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let magnitude = value.abs();
    if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 0.01 {
        format!("{value:.2}")
    } else {
        // Two significant digits (an EC key's floor is milliseconds): 0.0017, not 0.00.
        let decimals = 1 - magnitude.log10().floor() as i32;
        format!("{value:.*}", decimals.max(0) as usize)
    }
}

impl Report {
    /// An empty report; bounds are checked in quick mode only (invariants always).
    pub fn new(quick: bool, title: String) -> Report {
        Report {
            quick,
            title,
            figures: Mutex::new(Vec::new()),
            printed: AtomicBool::new(false),
        }
    }

    pub fn phase(&self, title: &str) {
        println!("\n== {title}");
    }

    /// Records and prints a figure; `bound` is checked in quick mode only.
    pub fn figure(
        &self,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        versus: impl Into<String>,
        bound: Option<f64>,
    ) -> f64 {
        self.add(label.into(), value, unit, versus.into(), bound, false)
    }

    /// Records and prints a figure whose bound holds in every mode (a correctness invariant).
    pub fn invariant(
        &self,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        versus: impl Into<String>,
        bound: f64,
    ) -> f64 {
        self.add(label.into(), value, unit, versus.into(), Some(bound), true)
    }

    fn add(
        &self,
        label: String,
        value: f64,
        unit: &'static str,
        versus: String,
        bound: Option<f64>,
        invariant: bool,
    ) -> f64 {
        let figure = Figure {
            label,
            value,
            unit,
            versus,
            bound: bound.filter(|_| self.quick || invariant),
            invariant,
        };
        println!("  {}", Self::line(&figure));
        self.figures().push(figure);
        value
    }

    fn line(figure: &Figure) -> String {
        let mut line = format!("{}: {} {}", figure.label, show(figure.value), figure.unit);
        let mut notes = Vec::new();
        if !figure.versus.is_empty() {
            notes.push(figure.versus.clone());
        }
        if let Some(bound) = figure.bound {
            let verdict = if figure.value <= bound {
                "ok"
            } else {
                "EXCEEDED"
            };
            notes.push(format!("bound {} {}: {verdict}", show(bound), figure.unit));
        }
        if !notes.is_empty() {
            line.push_str(&format!("  ({})", notes.join("; ")));
        }
        line
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, Vec<Figure>> {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn table(&self) {
        self.printed.store(true, Ordering::SeqCst);
        let figures = self.figures();
        let width = figures
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(0);
        println!("\n== summary: {}", self.title);
        for f in figures.iter() {
            let bound = match f.bound {
                Some(b) if f.exceeded() => format!("EXCEEDS {}", show(b)),
                Some(b) => format!("<= {}", show(b)),
                None => String::new(),
            };
            println!(
                "  {:width$}  {:>10} {:<12} {:<16} {}",
                f.label,
                show(f.value),
                f.unit,
                bound,
                f.versus
            );
        }
    }

    /// Panics naming every figure over its bound.
    pub fn check(&self) {
        let exceeded: Vec<String> = self
            .figures()
            .iter()
            .filter(|f| f.exceeded())
            .map(|f| {
                format!(
                    "{}{}: {} {} exceeds the bound {} {}",
                    if f.invariant { "invariant " } else { "" },
                    f.label,
                    show(f.value),
                    f.unit,
                    show(f.bound.unwrap_or_default()),
                    f.unit
                )
            })
            .collect();
        assert!(
            exceeded.is_empty(),
            "scale bench: {} figure(s) out of bounds:\n  {}",
            exceeded.len(),
            exceeded.join("\n  ")
        );
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.printed.load(Ordering::SeqCst) {
            self.table();
        }
    }
}
