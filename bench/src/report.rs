//! The result table: one line per measurement, with its goal and whether it was met.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Measured, with no goal to hold it against.
    Info,
    /// Could not be measured in this run; the value says why.
    Missing,
}

impl Verdict {
    pub fn of(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "**FAIL**",
            Verdict::Info => "—",
            Verdict::Missing => "not measured",
        }
    }
}

pub struct Line {
    pub measurement: String,
    pub value: String,
    pub goal: String,
    pub verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Per section: how busy the machine was with other work meanwhile.
    pub noise: Vec<String>,
    /// `--quick`: sizes too small for the goals, so nothing is judged (the goals still show).
    pub not_judged: bool,
}

impl Report {
    pub fn add(
        &mut self,
        measurement: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) {
        let line = Line {
            measurement: measurement.into(),
            value: value.into(),
            goal: goal.into(),
            verdict,
        };
        eprintln!(
            "  => {} | {} | {} | {}",
            line.measurement,
            line.value,
            line.goal,
            line.verdict.label()
        );
        self.lines.push(line);
    }

    pub fn info(&mut self, measurement: impl Into<String>, value: impl Into<String>) {
        self.add(measurement, value, "—", Verdict::Info);
    }

    pub fn check(
        &mut self,
        measurement: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        ok: bool,
    ) {
        let verdict = if self.not_judged {
            Verdict::Info
        } else {
            Verdict::of(ok)
        };
        let goal = goal.into();
        let goal = if self.not_judged {
            format!("{goal} (not judged: --quick)")
        } else {
            goal
        };
        self.add(measurement, value, goal, verdict);
    }

    pub fn missing(&mut self, measurement: impl Into<String>, why: impl Into<String>, goal: impl Into<String>) {
        self.add(measurement, why, goal, Verdict::Missing);
    }

    pub fn failures(&self) -> usize {
        self.lines.iter().filter(|l| l.verdict == Verdict::Fail).count()
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str("| measurement | value | goal | result |\n|---|---|---|---|\n");
        for line in &self.lines {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(&line.measurement),
                cell(&line.value),
                cell(&line.goal),
                line.verdict.label()
            );
        }
        out
    }
}

/// `12345.6` as `12,346`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.round());
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}
