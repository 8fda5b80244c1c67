//! The dashboard in a real headless Chromium: known data in, the rendered numbers, the drawn
//! chart and an interaction's timeline checked, a wrong key shown a clear message, and a
//! screenshot kept as a test artifact (`target/test-artifacts/dashboard.png`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::Server;

/// Debian's Chromium, or `MCPLOG_CHROMIUM`. `.ci/run` installs it; elsewhere the test says it
/// skipped.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("MCPLOG_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install chromium (see .ci/run)"
    );
    eprintln!(
        "SKIPPED dashboard test: no chromium at {} (apt-get install chromium)",
        path.display()
    );
    None
}

/// Runs headless Chromium on a URL with the flags a machine without internet needs.
fn headless(browser: &PathBuf, profile: &std::path::Path, extra: &[&str], url: &str) -> String {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=8000")
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The text of the element that carries `attribute` (up to its first `<`).
fn text_after<'a>(dom: &'a str, attribute: &str) -> &'a str {
    let at = dom
        .find(attribute)
        .unwrap_or_else(|| panic!("{attribute} not in the page"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

#[tokio::test]
async fn the_dashboard_renders_known_data_in_headless_chromium() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let t = now - 1800.0;
    let mut events = Vec::new();
    let mut finish = |id: &str, mcp: &str, action: &str, seconds: f64| {
        events.push(json!({"action": "interaction_start", "interaction_id": id, "mcp_id": mcp, "timestamp": t}));
        events.push(json!({"action": action, "interaction_id": id, "mcp_id": mcp, "timestamp": t + seconds}));
    };
    for (i, s) in [1.0, 2.0, 3.0, 4.0].iter().enumerate() {
        finish(&format!("ok-{i}"), "ocr", "interaction_complete", *s);
    }
    finish("bad-0", "pdf", "interaction_error", 10.0);
    finish("bad-1", "pdf", "interaction_error", 20.0);
    finish("stop-0", "ocr", "interaction_cancelled", 5.0);
    events.push(json!({"action": "interaction_start", "interaction_id": "run-0", "mcp_id": "ocr", "timestamp": t}));
    events.push(json!({"action": "interaction_start", "interaction_id": "run-1", "mcp_id": "ocr", "timestamp": t}));
    events.push(json!({"action": "interaction_progress", "interaction_id": "run-1", "mcp_id": "ocr", "timestamp": t + 1.0, "progress_data": {"page": 2}}));
    assert_eq!(
        server
            .post(
                "/api/v2/interactions/batch",
                serde_json::Value::Array(events).to_string()
            )
            .await
            .status,
        200
    );

    let profile = tempfile::tempdir().unwrap();
    let url = format!(
        "http://{}/dashboard#key={}&open=run-1",
        server.addr, server.key
    );
    let dom = headless(&browser, profile.path(), &["--dump-dom"], &url);
    for (stat, expected) in [
        ("total", "9"),
        ("active", "2"),
        ("completed", "4"),
        ("failed", "2"),
        ("cancelled", "1"),
        ("stale", "0"),
        ("queue_size", "0"),
    ] {
        assert_eq!(
            text_after(&dom, &format!("data-stat=\"{stat}\"")),
            expected,
            "card {stat}"
        );
    }
    // 7 finished: 4 completed, 2 failed, 1 cancelled; times over completed and failed.
    assert_eq!(text_after(&dom, "id=\"m-success_rate\""), "57.1%");
    assert_eq!(text_after(&dom, "id=\"m-error_rate\""), "28.6%");
    assert_eq!(text_after(&dom, "id=\"m-avg_processing_time\""), "6.67 s");
    assert_eq!(text_after(&dom, "id=\"m-min_processing_time\""), "1.00 s");
    assert_eq!(text_after(&dom, "id=\"m-max_processing_time\""), "20.00 s");
    let p99: f64 = text_after(&dom, "id=\"m-p99_processing_time\"")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!((20.0..=21.0).contains(&p99), "p99 {p99}");
    // The chart: bars whose counts add up to each outcome.
    for (kind, expected) in [("completed", 4), ("failed", 2), ("cancelled", 1)] {
        let drawn: u64 = dom
            .match_indices(&format!("class=\"bar {kind}\""))
            .map(|(at, _)| {
                let rest = &dom[at..];
                let count = rest.find("data-count=\"").unwrap() + "data-count=\"".len();
                rest[count..count + rest[count..].find('"').unwrap()]
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(drawn, expected, "{kind} bars");
    }
    assert!(
        dom.contains("per <span id=\"bucket\">hour</span>"),
        "24h is charted per hour"
    );
    // The latest interactions, and the timeline the link opened.
    for id in ["ok-0", "bad-1", "stop-0", "run-1"] {
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "{id} not listed"
        );
    }
    assert_eq!(text_after(&dom, "id=\"detail-id\""), "run-1");
    let timeline = &dom[dom.find("id=\"timeline\"").unwrap()..];
    assert!(
        timeline.contains("interaction_start") && timeline.contains("interaction_progress"),
        "timeline not drawn"
    );
    assert!(!dom.contains(&server.key), "the key stays out of the page");

    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        profile.path(),
        &[
            "--window-size=1280,1100",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "no screenshot"
    );

    // A wrong key: a clear message, not a blank page.
    let wrong = headless(
        &browser,
        tempfile::tempdir().unwrap().path(),
        &["--dump-dom"],
        &format!("http://{}/dashboard#key=wrong-key", server.addr),
    );
    assert!(
        wrong.contains("The API key was refused"),
        "no message for a wrong key"
    );
    assert!(
        wrong.contains("<div id=\"login\">"),
        "the key form is shown again"
    );
}
