//! One integration test binary (faster to link than one per file).

mod app_data;
mod canary;
mod client;
mod config;
mod deletion;
mod e2e;
mod helpers;
mod operations;
mod page;
mod replicas;
mod shutdown;
mod store;
