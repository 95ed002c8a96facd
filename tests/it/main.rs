//! One integration test binary (faster to link than one per file).

mod any_value;
mod app_data;
mod canary;
mod client;
mod config;
mod deletion;
mod e2e;
mod editors;
mod faults;
mod helpers;
mod operations;
mod operator;
mod page;
mod read_only;
mod recovery;
mod replaced;
mod replicas;
mod shutdown;
mod store;
