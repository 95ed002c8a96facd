//! The status page's chart: final rows per minute as an inline SVG bar chart (no script, no
//! external file). Each bar carries its minute and count as `data-` attributes and a `<title>`
//! (the browser's tooltip).

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::page::{escape, thousands};

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 170.0;
/// Room for the y labels on the left and the time labels below.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;
/// Horizontal grid lines above the baseline.
const GRID_LINES: i64 = 4;

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `n`, and at least
/// `GRID_LINES`, so that every grid line gets a whole number.
fn nice_ceiling(n: i64) -> i64 {
    let n = n.max(GRID_LINES);
    let mut step = 1_i64;
    loop {
        for m in [1, 2, 5] {
            let candidate = step.saturating_mul(m).saturating_mul(GRID_LINES);
            if candidate >= n {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
        if step == i64::MAX {
            return i64::MAX;
        }
    }
}

/// The bar chart of `counts` (one per minute from `start`).
pub fn per_minute(start: DateTime<Utc>, counts: &[i64]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let top = nice_ceiling(counts.iter().copied().max().unwrap_or(0));
    let slot = plot_w / counts.len().max(1) as f64;
    let bar_w = (slot * 0.78).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="final rows per minute, last hour" xmlns="http://www.w3.org/2000/svg">"#
    );
    for line in 0..=GRID_LINES {
        let value = top / GRID_LINES * line;
        let y = TOP + plot_h - plot_h * line as f64 / GRID_LINES as f64;
        let class = if line == 0 { "axis" } else { "grid" };
        let _ = write!(
            svg,
            r#"<line class="{class}" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="ylabel" x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ty = y + 4.0,
            label = thousands(value),
        );
    }
    for (i, &count) in counts.iter().enumerate() {
        let minute = start + chrono::Duration::minutes(i as i64);
        let label = minute.format("%H:%M").to_string();
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let h = if count > 0 {
            (plot_h * count as f64 / top as f64).max(1.5)
        } else {
            0.0
        };
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" data-minute="{m}" data-count="{count}"><title>{label} UTC: {n}</title></rect>"#,
            y = TOP + plot_h - h,
            m = escape(&minute.to_rfc3339()),
            n = thousands(count),
        );
        let last = i + 1 == counts.len();
        if i % 10 == 0 || last {
            let text = if last { format!("{label} (now)") } else { label };
            let anchor = if last { "end" } else { "middle" };
            let tx = if last { WIDTH - RIGHT } else { x + bar_w / 2.0 };
            let _ = write!(
                svg,
                r#"<text class="xlabel" x="{tx:.1}" y="{ty}" text-anchor="{anchor}">{text}</text>"#,
                ty = HEIGHT - 8.0,
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_round_and_covers_the_highest_bar() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(3), 4);
        assert_eq!(nice_ceiling(5), 8);
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(41), 80);
        assert_eq!(nice_ceiling(12_001), 20_000);
        assert!(nice_ceiling(i64::MAX) >= i64::MAX / 2);
    }

    #[test]
    fn one_bar_per_minute_with_its_count() {
        let start = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().to_utc();
        let mut counts = vec![0; 60];
        counts[3] = 7;
        counts[59] = 1_500;
        let svg = per_minute(start, &counts);
        assert_eq!(svg.matches("<rect").count(), 60);
        assert!(
            svg.contains(r#"data-minute="2026-11-30T10:03:00+00:00" data-count="7""#),
            "{svg}"
        );
        assert!(svg.contains("<title>10:59 UTC: 1,500</title>"));
        assert!(svg.contains("10:59 (now)"));
        assert!(svg.contains(">2,000</text>"), "the top grid line: {svg}");
    }
}
