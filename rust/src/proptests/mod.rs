//! Property tests of the PyO3-free cores (proptest). `cargo test` runs a modest number of
//! cases each; `PROPTEST_CASES=N cargo test --lib proptests` runs more.

mod cache;
mod keys;
mod limiter;

/// Cases per property: `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
