//! `sqlx::migrate!` embeds `migrations/` when the crate compiles; without this, a new or edited
//! migration alone would not rebuild the daemon, and tests would run the old schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
