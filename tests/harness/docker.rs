//! [`DockerCluster`]: nodes in Docker containers on a network of their own, for faults
//! a process cannot fake (cutting a node off the network). The image is built from
//! our binary (`scripts/docker-image.sh`, FROM scratch: nothing is pulled). The test
//! drives each node with the CLI inside its own container (`docker exec`), so every
//! request stays on that container's loopback or on the test network.

use super::binary;
use anyhow::{Context, Result, bail};
use std::process::{Command, Output};

/// Containers forming one cluster; removed (with their network and image) on drop.
#[derive(Debug)]
pub struct DockerCluster {
    prefix: String,
    image: String,
    nodes: usize,
    clients: Vec<String>,
}

fn docker(args: &[&str]) -> Result<Output> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("run docker")?;
    Ok(out)
}

fn docker_ok(args: &[&str]) -> Result<String> {
    let out = docker(args)?;
    if !out.status.success() {
        bail!(
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl DockerCluster {
    /// Builds the image and starts `nodes` containers: node 1 founds the cluster, the
    /// others join through it.
    pub fn start(nodes: usize) -> Result<DockerCluster> {
        DockerCluster::start_with(nodes, &binary(), "")
    }

    /// Like [`DockerCluster::start`], with another build of the binary; `tag`
    /// distinguishes its containers from other clusters of the same test process.
    pub fn start_with(nodes: usize, bin: &std::path::Path, tag: &str) -> Result<DockerCluster> {
        let prefix = format!("dltest{}{tag}", std::process::id());
        let image = format!("datalayer-test:{prefix}");
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/docker-image.sh");
        let built = Command::new("bash")
            .arg(&script)
            .arg(bin)
            .arg(&image)
            .output()
            .context("build the image")?;
        if !built.status.success() {
            bail!(
                "image build failed: {}",
                String::from_utf8_lossy(&built.stderr)
            );
        }
        let cluster = DockerCluster {
            prefix,
            image,
            nodes: 0,
            clients: Vec::new(),
        };
        docker_ok(&["network", "create", &cluster.prefix])?;
        let mut cluster = cluster;
        for i in 1..=nodes {
            let name = cluster.name(i);
            let advertise = format!("{name}:7700");
            let join = format!("{}:7700", cluster.name(1));
            let mut args = vec![
                "run",
                "-d",
                "--name",
                &name,
                "--hostname",
                &name,
                "--network",
                &cluster.prefix,
                &cluster.image,
                "start",
                "--data-dir",
                "/data",
                "--grpc-addr",
                "0.0.0.0:7700",
                "--http-addr",
                "0.0.0.0:7701",
                "--advertise-addr",
                &advertise,
            ];
            if i > 1 {
                args.extend(["--join", join.as_str()]);
            }
            docker_ok(&args)?;
            cluster.nodes = i;
        }
        Ok(cluster)
    }

    /// The container of node `i` (1-based, the order nodes joined in, so its id).
    pub fn name(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Runs the CLI inside node `i`'s container against that node.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<Output> {
        let name = self.name(i);
        let mut all = vec![
            "exec",
            name.as_str(),
            "/datalayer",
            "--addr",
            "127.0.0.1:7700",
        ];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Node `i`'s `status --json`, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = self.cli(i, &["--json", "status"]).ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Table names node `i` knows.
    pub fn tables(&self, i: usize) -> Option<Vec<String>> {
        let out = self.cli(i, &["--json", "table", "list"]).ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            v["tables"]
                .as_array()?
                .iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect(),
        )
    }

    /// Cuts node `i` off the cluster's network.
    pub fn disconnect(&self, i: usize) -> Result<()> {
        docker_ok(&["network", "disconnect", &self.prefix, &self.name(i)]).map(|_| ())
    }

    /// Puts node `i` back on the cluster's network.
    pub fn connect(&self, i: usize) -> Result<()> {
        let name = self.name(i);
        docker_ok(&["network", "connect", "--alias", &name, &self.prefix, &name]).map(|_| ())
    }

    /// Kills node `i`'s process with SIGKILL (the container stops, its disk stays).
    pub fn kill(&self, i: usize) -> Result<()> {
        docker_ok(&["kill", "-s", "KILL", &self.name(i)]).map(|_| ())
    }

    /// Starts node `i`'s container again (after [`DockerCluster::kill`]).
    pub fn start_node(&self, i: usize) -> Result<()> {
        docker_ok(&["start", &self.name(i)]).map(|_| ())
    }

    /// Stops node `i` with SIGTERM and starts it again.
    pub fn restart(&self, i: usize) -> Result<()> {
        docker_ok(&["restart", "-t", "10", &self.name(i)]).map(|_| ())
    }

    /// Freezes every process of node `i` (`docker pause`).
    pub fn pause(&self, i: usize) -> Result<()> {
        docker_ok(&["pause", &self.name(i)]).map(|_| ())
    }

    /// Thaws node `i`.
    pub fn unpause(&self, i: usize) -> Result<()> {
        docker_ok(&["unpause", &self.name(i)]).map(|_| ())
    }

    /// Starts `datalayer` with `args` in a container of its own on the cluster's
    /// network (a client, such as `workload`); returns its name.
    pub fn run_client(&mut self, name: &str, args: &[&str]) -> Result<String> {
        let name = format!("{}-{name}", self.prefix);
        let mut all = vec![
            "run",
            "-d",
            "--name",
            name.as_str(),
            "--network",
            self.prefix.as_str(),
            self.image.as_str(),
        ];
        all.extend_from_slice(args);
        docker_ok(&all)?;
        self.clients.push(name.clone());
        Ok(name)
    }

    /// The standard output of a client container so far.
    pub fn client_output(&self, name: &str) -> Result<String> {
        let out = docker(&["logs", name])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits for a client container to exit; returns its standard output.
    pub fn wait_client(&self, name: &str) -> Result<String> {
        docker_ok(&["wait", name])?;
        self.client_output(name)
    }

    /// The gRPC addresses of every node, as the containers reach them.
    pub fn addrs(&self) -> String {
        (1..=self.nodes)
            .map(|i| format!("{}:7700", self.name(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The logs of node `i`.
    pub fn logs(&self, i: usize) -> String {
        docker(&["logs", &self.name(i)])
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for c in &self.clients {
            let _ = docker(&["rm", "-f", c]);
        }
        for i in 1..=self.nodes {
            let _ = docker(&["rm", "-f", &self.name(i)]);
        }
        let _ = docker(&["network", "rm", &self.prefix]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}
