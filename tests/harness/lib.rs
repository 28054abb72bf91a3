//! # The test harness
//!
//! Runs the real `datalayer` binary as a child process on loopback with a data
//! directory of its own, and talks to it over gRPC and the CLI. Every wait is on a
//! condition with a deadline ([`wait_until`]); nothing sleeps for a fixed time.
//!
//! The binary comes from the same target directory as the test (`cargo build --bins`
//! first; the README's test command does).

mod cluster;
mod docker;
pub mod linearizability;
pub mod replicated;
pub mod workload;

pub use cluster::{CLUSTER_WAIT, TestCluster, free_port};
pub use docker::DockerCluster;

use anyhow::{Context, Result, anyhow, bail};
use datalayer_client::Client;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `datalayer` binary built next to this test.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/datalayer
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests live in target/<profile>/deps")
        .join("datalayer");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` before the tests",
        bin.display()
    );
    bin
}

/// Polls `pred` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut pred: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if pred().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One node process with its own data directory.
#[derive(Debug)]
pub struct TestNode {
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    /// Flags given to `datalayer start` besides the data directory.
    args: Vec<String>,
    /// gRPC address of the running process.
    pub grpc: SocketAddr,
    /// HTTP address of the running process.
    pub http: SocketAddr,
    /// Where the process's stderr (its log) goes.
    pub log: PathBuf,
}

impl TestNode {
    /// Starts a node on free loopback ports with a fresh data directory.
    pub fn start() -> Result<TestNode> {
        TestNode::start_with(&[
            "--grpc-addr".into(),
            "127.0.0.1:0".into(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
        ])
    }

    /// Starts a node with a fresh data directory and these `datalayer start` flags.
    pub fn start_with(args: &[String]) -> Result<TestNode> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        let mut node = TestNode {
            log: tmp.path().join("node.log"),
            data_dir,
            _tmp: Some(tmp),
            child: None,
            args: args.to_vec(),
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        node.spawn()?;
        Ok(node)
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(binary())
            .arg("start")
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn datalayer")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "node did not become ready; end of its log:\n{}",
                    tail.join("\n")
                );
            }
        };
        let field = |name: &str| -> Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .ok_or_else(|| anyhow!("no {name} in {line:?}"))?
                .parse()
                .context("address")
        };
        self.grpc = field("grpc=")?;
        self.http = field("http=")?;
        self.child = Some(child);
        Ok(())
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it; returns its exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("node is not running"))?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("node did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process in its tracks (SIGSTOP), as a long pause would.
    pub fn pause(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("node is not running"))?;
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} failed");
        }
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process ended by itself (it crashed, or a fail point fired).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Starts the process again on the same data directory with its flags as `edit`
    /// leaves them (they stay so for later restarts).
    pub fn restart_with(&mut self, edit: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        edit(&mut self.args);
        self.restart()
    }

    /// Starts the process again on the same data directory (with the same flags).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// A gRPC client of the node.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.grpc.to_string()).await?)
    }

    /// Runs the CLI against the node.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("--addr")
            .arg(self.grpc.to_string())
            .args(args)
            .output()
            .expect("run the datalayer CLI")
    }

    /// `GET path` on the node's HTTP address: (status code, body).
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.http, path)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP answer {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Stdout of a CLI run, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of a CLI run, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout of a CLI run parsed as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(o),
            stderr(o)
        )
    })
}

/// A `datalayer start` process started with arguments of the test's choosing; killed
/// when dropped.
#[derive(Debug)]
pub struct StartedNode {
    child: Child,
    /// The ready line the node printed.
    pub ready: String,
}

impl StartedNode {
    /// Runs `datalayer start ARGS` in `cwd` and waits for its ready line.
    pub fn spawn(args: &[&std::ffi::OsStr], cwd: &Path) -> Result<StartedNode> {
        let mut child = Command::new(binary())
            .arg("start")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut ready = String::new();
        out.read_line(&mut ready)?;
        // Keep draining so the node never writes to a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        let node = StartedNode { child, ready };
        if !node.ready.contains("ready") {
            bail!("node did not become ready: {:?}", node.ready);
        }
        Ok(node)
    }

    /// The value of `name=` in the ready line (`grpc`, `http`, `data`).
    pub fn field(&self, name: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for StartedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
