//! session-reaper: deletes stale Zoho Office Integrator sessions recorded in a database table,
//! through a rate-limited worker pool with retries, and records every outcome back.

pub mod api;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod editor;
pub mod health;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod runtime;
pub mod session_id;
pub mod shutdown;
pub mod standin;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod worker;
