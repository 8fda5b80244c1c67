//! The client packages' own suites (`clients/python`, `clients/typescript`), run against this
//! build's `mcplog` binary: each starts real servers, drives the real MCP SDKs and checks what
//! the server stored. `.ci/run` installs their dependencies (a virtualenv in
//! `clients/python/.venv`, `npm ci` in `clients/typescript`); elsewhere a suite whose
//! dependencies are missing says it skipped, and under CI that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `ready` exists; if not, fails under CI and says the suite skipped elsewhere.
fn installed(ready: &Path, suite: &str, install: &str) -> bool {
    if ready.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install the {suite} client's dependencies (see .ci/run): {install}"
    );
    eprintln!(
        "SKIPPED the {suite} client's suite: {} is missing; {install}",
        ready.display()
    );
    false
}

/// Runs a suite with the binary under test, and fails with its output if it fails.
fn run_suite(mut command: Command, suite: &str) {
    let output = command
        .env("MCPLOG_BIN", env!("CARGO_BIN_EXE_mcplog"))
        .output()
        .unwrap_or_else(|err| panic!("the {suite} suite did not start: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the {suite} client's suite failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Shown with --nocapture: how many passed, for the record.
    println!(
        "{suite}: {}",
        stdout.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_python_clients_suite_passes_against_this_server() {
    let python = repo().join("clients/python/.venv/bin/python");
    let install = "python3 -m venv clients/python/.venv && \
                   clients/python/.venv/bin/pip install -e 'clients/python[test]'";
    if !installed(&python, "Python", install) {
        return;
    }
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ])
        .current_dir(repo());
    run_suite(command, "Python");
}

#[test]
fn the_typescript_clients_suite_passes_against_this_server() {
    let dir = repo().join("clients/typescript");
    let install = "npm ci --prefix clients/typescript";
    if !installed(&dir.join("node_modules"), "TypeScript", install) {
        return;
    }
    let mut command = Command::new("npm");
    command.args(["test", "--silent"]).current_dir(dir);
    run_suite(command, "TypeScript");
}

/// The README's one-line integrations are the lines the client suites run, so they cannot drift.
#[test]
fn the_readmes_one_line_integrations_are_what_the_suites_run() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let suites = [
        (
            "clients/python/tests/test_sdk_e2e.py",
            "middleware=[McpLogMiddleware(log)]",
        ),
        (
            "clients/python/tests/test_sdk_e2e.py",
            "middleware=[mcplog.mcp.middleware(log)]",
        ),
        (
            "clients/typescript/test/sdk.test.mjs",
            "instrument(server, { client });",
        ),
    ];
    for (suite, line) in suites {
        let code = std::fs::read_to_string(repo().join(suite)).unwrap();
        assert!(readme.contains(line), "README.md lacks {line:?}");
        assert!(code.contains(line), "{suite} no longer runs {line:?}");
    }
}
