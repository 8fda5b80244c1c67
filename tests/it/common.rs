//! Shared helpers: a real `mcplog serve` process on a free port over a temporary data directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use mcplog::client::{Client, Response};
use serde_json::{json, Value};

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub key: String,
    pub data_dir: PathBuf,
    pub log: Arc<Mutex<String>>,
}

/// Spawns `mcplog serve` on `data_dir` with extra environment variables, without waiting.
pub fn spawn(
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<SocketAddr>, Arc<Mutex<String>>) {
    spawn_with_args(data_dir, env, &[])
}

/// Like [`spawn`], with extra arguments to `mcplog serve`.
pub fn spawn_with_args(
    data_dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Child, mpsc::Receiver<SocketAddr>, Arc<Mutex<String>>) {
    let mut all = vec!["--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    all.push("--data-dir");
    all.push(data_dir.to_str().expect("a UTF-8 path"));
    spawn_serve(&all, env)
}

/// Spawns `mcplog serve` with exactly these arguments.
pub fn spawn_serve(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<SocketAddr>, Arc<Mutex<String>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcplog"));
    command
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawning mcplog serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Into the log first, so a test that has the address also has every line before it.
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if let Some(rest) = line.split("listening on http://").nth(1) {
                // Text or JSON log lines: the address ends at the first character that cannot
                // be part of one.
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || ".:[]".contains(c)))
                    .unwrap_or(rest.len());
                let _ = tx.send(rest[..end].parse().expect("an address"));
            }
        }
    });
    (child, rx, log)
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_with_args(data_dir, env, &[])
    }

    pub fn start_with_args(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let (mut child, rx, log) = spawn_with_args(data_dir, env, args);
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        let key = std::fs::read_to_string(data_dir.join("admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        Server {
            child,
            addr,
            key,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.expect("connecting")
    }

    pub async fn post(&self, path: &str, body: impl Into<String>) -> Response {
        self.client()
            .await
            .post(path, Some(&self.key), body.into())
            .await
            .expect("a response")
    }

    /// `POST` with another key.
    pub async fn post_as(&self, key: &str, path: &str, body: impl Into<String>) -> Response {
        self.client()
            .await
            .post(path, Some(key), body.into())
            .await
            .expect("a response")
    }

    /// `GET` with another key.
    pub async fn get_as(&self, key: &str, path: &str) -> Response {
        self.client()
            .await
            .get(path, Some(key))
            .await
            .expect("a response")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client()
            .await
            .get(path, Some(&self.key))
            .await
            .expect("a response")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a server that is expected to refuse to start; returns its exit status and log.
pub fn start_expecting_failure(data_dir: &Path) -> (ExitStatus, String) {
    let (mut child, rx, log) = spawn(data_dir, &[]);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100)); // let the reader thread drain stderr
            return (status, log.lock().unwrap().clone());
        }
        if rx.try_recv().is_ok() || Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "server started although it should have refused; log:\n{}",
                log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A valid event as JSON text.
pub fn event(action: &str, interaction_id: &str, mcp_id: &str, timestamp: f64) -> String {
    let payload = match action {
        "interaction_start" => "request_data",
        "interaction_progress" => "progress_data",
        "interaction_complete" => "result_data",
        "interaction_error" => "error_data",
        _ => "cancel_data",
    };
    json!({
        "action": action,
        "interaction_id": interaction_id,
        "mcp_id": mcp_id,
        "timestamp": timestamp,
        payload: {"n": timestamp},
    })
    .to_string()
}

/// The error object of an error response.
pub fn error_of(response: &Response) -> Value {
    let body = response.json();
    assert!(
        body["error"]["code"].is_string(),
        "not an error body: {body}"
    );
    assert!(
        body["error"]["message"].is_string(),
        "not an error body: {body}"
    );
    body["error"].clone()
}

/// Total bytes of the segment files of a data directory.
pub fn segment_bytes(data_dir: &Path) -> u64 {
    segment_paths(data_dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Segment files, oldest first.
pub fn segment_paths(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(data_dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}
