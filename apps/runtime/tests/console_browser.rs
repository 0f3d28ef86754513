//! The console in a real browser, as part of `cargo test`: runs the
//! Playwright test of `console-tests/` (Debian's headless Chromium) against
//! this build's binary. The test installs its locked npm packages first.
//!
//! It passes without running, and says so, when `npm` or
//! `/usr/bin/chromium` is missing, unless `RUNTIME_TEST_REQUIRE_BROWSER` is
//! set (CI sets it, after installing Chromium). The PostgreSQL run of this
//! suite skips it: the console test drives its own embedded-log service.

use std::path::Path;
use std::process::{Command, Output};

const CHROMIUM: &str = "/usr/bin/chromium";

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"))
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_console_works_in_a_real_browser() {
    if std::env::var("RUNTIME_TEST_BACKEND").is_ok_and(|backend| backend == "postgres") {
        eprintln!(
            "skipped: the_console_works_in_a_real_browser on the postgres suite: it drives its own embedded-log service"
        );
        return;
    }
    let npm_answers = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !npm_answers || !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("RUNTIME_TEST_REQUIRE_BROWSER").is_none(),
            "the browser test is required but npm or {CHROMIUM} is missing"
        );
        eprintln!("skipped: the_console_works_in_a_real_browser: npm or {CHROMIUM} is missing");
        return;
    }
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console-tests");
    let installed = run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&tests));
    succeeded("npm ci", &installed);
    let screenshots = tempfile::tempdir().unwrap();
    let tested = run(Command::new("npm")
        .arg("test")
        .current_dir(&tests)
        .env(
            "RUNTIME_BIN",
            env!("CARGO_BIN_EXE_openagents-runtime-service"),
        )
        .env("CHROMIUM", CHROMIUM)
        .env("CONSOLE_SCREENSHOTS", screenshots.path()));
    succeeded("the console's browser test", &tested);
}
