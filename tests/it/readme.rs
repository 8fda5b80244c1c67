//! The README's examples, run: `tests/readme/examples.sh` runs every example command of README.md
//! in README order against a fresh server and checks each answer against what the README shows,
//! and a static check makes sure the script holds every example command of the README verbatim,
//! so an example cannot change (or be added) without the script running it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Server;

/// README commands in ```sh blocks that the script does not run, by prefix: they build, test,
/// benchmark or start a server of their own.
const NOT_RUN: [&str; 7] = [
    // Needs the server stopped; tests/it/repair.rs runs it on damaged logs.
    "cargo run --release --bin mcplog-seg -- repair",
    "cargo run --release -- serve",
    "cargo test",
    "cargo bench",
    "target/release/mcplog-load",
    "fuzz/run.sh",
    // Starts NATS servers and two nodes; tests/it/cluster.rs runs it on free ports.
    "deploy/cluster/start-local.sh",
];

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A fresh server on `<tmp>/data`, the script against it, then SIGTERM: exit 0, as the README
/// says. The script stops this server with SIGTERM itself to walk through a master secret
/// rotation, and checks that the server it starts in its place exits 0 too.
#[test]
fn readme_examples_run_against_a_fresh_server_and_answer_as_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A heartbeat well inside the script's follow window, so the follow example shows one.
    let mut server = Server::start_with(&data, &[("MCPLOG_REPLAY_HEARTBEAT", "1s")]);
    // The first-start lines the README shows.
    let log = server.log();
    for line in [
        &format!(
            "INFO mcplog::server: first start: an admin key was written to {} (mode 0600)",
            data.join("admin.key").display()
        ),
        "INFO mcplog::server: log recovered events=0 interactions=0 segments=1 truncated_bytes=0",
        &format!("INFO mcplog::server: listening on http://{}", server.addr),
    ] {
        assert!(log.contains(line), "the log has no line {line:?}:\n{log}");
    }
    let output = Command::new("bash")
        .arg(repo_file("tests/readme/examples.sh"))
        .env("MCPLOG_URL", format!("http://{}", server.addr))
        .env("MCPLOG_DATA", &server.data_dir)
        .env("MCPLOG_BIN", env!("CARGO_BIN_EXE_mcplog"))
        .env("MCPLOG_SEG_BIN", env!("CARGO_BIN_EXE_mcplog-seg"))
        .env("MCPLOG_FOLLOW_SECONDS", "3")
        // The script restarts the server (the master secret rotation): its own runs with the
        // same heartbeat.
        .env("MCPLOG_SERVER_PID", server.child.id().to_string())
        .env("MCPLOG_REPLAY_HEARTBEAT", "1s")
        .output()
        .expect("running bash tests/readme/examples.sh (needs bash, curl, flock and python3)");
    assert!(
        output.status.success(),
        "tests/readme/examples.sh failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- server log\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert_eq!(
        exit.code(),
        Some(0),
        "after SIGTERM; log:\n{}",
        server.log()
    );
}

/// Every command of the README's ```sh blocks (backslash-continued and quoted lines joined,
/// comments dropped, white space normalised) is a command of the script, in README order.
#[test]
fn every_readme_example_command_is_run_by_the_script() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let script = std::fs::read_to_string(repo_file("tests/readme/examples.sh")).unwrap();
    let mut sh = String::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if in_sh && line.trim_start().starts_with("```") {
            in_sh = false;
            sh.push('\n');
        } else if in_sh {
            sh.push_str(line);
            sh.push('\n');
        } else if line.trim() == "```sh" {
            in_sh = true;
        }
    }
    let examples: Vec<String> = commands(&sh)
        .into_iter()
        .filter(|c| !NOT_RUN.iter().any(|p| c.starts_with(p)))
        .collect();
    assert!(
        examples.iter().filter(|c| c.starts_with("curl ")).count() >= 15,
        "the README's curl examples were not found: {examples:#?}"
    );
    let run = commands(&script);
    let mut from = 0;
    for example in &examples {
        match run[from..].iter().position(|c| c == example) {
            Some(at) => from += at + 1,
            None => panic!(
                "README example not run by tests/readme/examples.sh (or not in README order):\n  \
                 {example}\nCopy it there verbatim, after the script's previous README command, \
                 with a check of what the README shows it printing; or, if it cannot run there, \
                 add its prefix to NOT_RUN in tests/it/readme.rs."
            ),
        }
    }
    // The substitution the script relies on: every example talks to localhost:8080.
    for example in examples.iter().filter(|c| c.starts_with("curl ")) {
        assert!(example.contains("localhost:8080/"), "{example}");
    }
}

/// The commands of shell text: logical lines with comments dropped, backslash-newlines and newlines
/// inside quotes joined, white space collapsed to one space. Here-document bodies are skipped.
fn commands(text: &str) -> Vec<String> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote = Quote::None;
    let mut heredoc: Option<String> = None;
    for line in text.lines() {
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut continued = false;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Quote::Single => {
                    if c == '\'' {
                        quote = Quote::None;
                    }
                    current.push(c);
                }
                Quote::Double => {
                    if c == '\\' && i + 1 < chars.len() {
                        current.push(c);
                        current.push(chars[i + 1]);
                        i += 1;
                    } else {
                        if c == '"' {
                            quote = Quote::None;
                        }
                        current.push(c);
                    }
                }
                Quote::None => {
                    if c == '#' && (i == 0 || chars[i - 1].is_whitespace()) {
                        break;
                    }
                    if c == '\\' && i + 1 == chars.len() {
                        continued = true;
                        break;
                    }
                    if c == '\\' {
                        current.push(c);
                        current.push(chars[i + 1]);
                        i += 1;
                    } else {
                        match c {
                            '\'' => quote = Quote::Single,
                            '"' => quote = Quote::Double,
                            _ => {}
                        }
                        current.push(c);
                    }
                }
            }
            i += 1;
        }
        if quote != Quote::None || continued {
            current.push(' ');
            continue;
        }
        let command = current.split_whitespace().collect::<Vec<_>>().join(" ");
        current.clear();
        if let Some(at) = command.find("<<") {
            let word = command[at + 2..]
                .trim_start_matches('-')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(|c| c == '\'' || c == '"');
            if !word.is_empty() {
                heredoc = Some(word.to_owned());
            }
        }
        if !command.is_empty() {
            out.push(command);
        }
    }
    out
}

#[test]
fn commands_join_continuations_and_quotes_and_drop_comments() {
    let text = "curl -s \"a?b=1\" \\\n  -H x   # note\n# only a comment\ncurl -d '{\n  \"a\": 1}'  # c\nx=1 <<'EOF'\nnot 'a command\nEOF\ny\n";
    assert_eq!(
        commands(text),
        [
            "curl -s \"a?b=1\" -H x",
            "curl -d '{ \"a\": 1}'",
            "x=1 <<'EOF'",
            "y"
        ]
    );
}
