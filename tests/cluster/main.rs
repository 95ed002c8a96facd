//! The cluster's budget, measured: a test binary of its own, so its timing never runs beside the
//! main suite (`it`; cargo runs test binaries one after another), and its tests one at a time.
//! Each starts several daemons and checks every sliding second of the stand-in's arrivals; other
//! tests on the same two cores would measure the scheduler more than the budget.

#[allow(dead_code, unused_macros, unused_imports)]
#[path = "../it/helpers.rs"]
mod helpers;

mod budget;
