//! A real `redis-server` for the shared-cache tests: started on a free loopback port with its
//! own temporary directory and no persistence, killed when dropped. `redis-server` and
//! `redis-cli` come from the Debian package `redis-server` (scripts/test installs it); a
//! missing binary fails the test loudly.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Redis {
    child: Mutex<Option<Child>>,
    pub port: u16,
    dir: PathBuf,
    /// Extra server arguments (e.g. ACL users).
    args: Vec<String>,
    /// `redis-cli` authentication (`--user`, `--pass`).
    auth: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[], &[])
    }

    /// With extra server arguments, and the `redis-cli` arguments that authenticate.
    pub fn start_with(args: &[&str], auth: &[&str]) -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tb-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Redis {
            child: Mutex::new(None),
            port,
            dir,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            auth: auth.iter().map(|s| (*s).to_owned()).collect(),
        };
        r.restart();
        r
    }

    /// Starts the server (again) on the same port.
    pub fn restart(&self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.to_str().unwrap(),
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install the Debian package redis-server (scripts/test does)"
                )
            });
        *self.child.lock().unwrap() = Some(child);
        let t0 = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli --raw` with `args`; its stdout (bytes as received).
    pub fn cli_bytes(&self, args: &[&str]) -> Vec<u8> {
        Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "--raw",
                "--no-auth-warning",
            ])
            .args(&self.auth)
            .args(args)
            .output()
            .map(|o| o.stdout)
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): install redis-server"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli_bytes(args)).into_owned()
    }

    /// Every key (`redis-cli --scan`).
    pub fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
