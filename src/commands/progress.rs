//! Progress for long operator commands (`enqueue` of a big input, `prune`): a bar with rate and
//! ETA when the size is known, a spinner with count and rate otherwise. Drawn on stderr only
//! when stderr is a terminal; into a pipe, a file or the journal nothing is drawn at all.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a spinner turns when nothing else moves it.
const TICK: Duration = Duration::from_millis(120);

/// Whether progress is drawn at all (stderr is a terminal).
pub fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn target() -> ProgressDrawTarget {
    // `ProgressDrawTarget::stderr()` hides itself off a terminal too (and with TERM=dumb); the
    // explicit check keeps that true whatever indicatif decides.
    if visible() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// indicatif's keys plus `{rate}`: units per second, whole (`{per_sec}` shows four decimals).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .with_key("rate", |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.0}/s", state.per_sec());
        })
}

/// A bar over `len` units; `template` uses indicatif's keys (`{pos}`, `{bytes}`, ...) and `{rate}`.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target());
    bar.set_style(style(template).progress_chars("=> "));
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner for work of unknown size.
pub fn spinner(template: &str) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, target());
    spinner.set_style(style(template));
    spinner.enable_steady_tick(TICK);
    spinner
}
