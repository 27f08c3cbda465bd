//! Skipping a test for want of a tool, loudly, and never in CI.
//!
//! Included with `#[path]` by the tests that need a host tool or root (tests/install.rs,
//! tests/crash.rs, and the full-file-system tests in tests/pzem_energy.rs and
//! tests/history_logger.rs). scripts/test installs every such tool and CI runs it as root, so
//! there a missing one is a failure, not a skip.
#![allow(dead_code)] // each test file uses a subset

/// Whether a missing prerequisite must fail the test: `CI` is set (to anything but
/// `false` or empty) or `PZEM_REQUIRE_ALL=1`.
pub fn strict() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    ci || std::env::var("PZEM_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// `what` (a sentence on what is missing and what therefore does not run) cannot be had
/// here: panics when [`strict`], else prints `SKIPPED: what (fix)` and returns, and the
/// caller skips or degrades. `fix` says how to get it, e.g. `install with: apt-get install
/// busybox` or `run as root`.
pub fn require_or_skip(what: &str, fix: &str) {
    assert!(
        !strict(),
        "{what} ({fix}); CI or PZEM_REQUIRE_ALL=1 is set, so this fails instead of skipping"
    );
    eprintln!("SKIPPED: {what} ({fix})");
}
