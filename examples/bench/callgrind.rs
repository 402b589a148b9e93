//! Instructions per request, counted by `valgrind --tool=callgrind` (issue 16): unlike
//! seconds, user-space instruction counts do not move with the neighbours on a shared machine,
//! so each change to the hit path is judged by a repeatable number.
//!
//! A server (the broker, or this driver's bare handler in `--bare-serve` mode) runs under
//! callgrind with instrumentation off while it starts; then `callgrind_control` switches it on,
//! a warm-up runs, the counters are zeroed, `n` identical requests are sent one after the other
//! on one keep-alive connection, and the counters are dumped. Instructions per request = the
//! dump's total / `n` (every thread of the process: actix workers, tokio, the audit writer).
//! The dump's functions, by their own (exclusive) cost, say where the instructions go.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One counted run.
pub struct Counted {
    /// User-space instructions per request.
    pub per_req: f64,
    /// The costliest functions (exclusive instructions per request, share, name).
    pub top: Vec<(f64, f64, String)>,
}

/// Whether valgrind and callgrind_control are installed.
pub fn available() -> bool {
    ["valgrind", "callgrind_control", "callgrind_annotate"]
        .iter()
        .all(|t| {
            Command::new(t)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

/// The request every counted run sends (the wrk hit script's request).
#[derive(Clone)]
pub struct Shape {
    pub url: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

/// Starts `cmd` under callgrind (instrumentation off), waits until `shape` answers 200, then
/// counts `n` requests. `None` when something failed (reported on stderr).
pub async fn count(
    label: &str,
    cmd: &[String],
    dir: &Path,
    shape: &Shape,
    n: u32,
) -> Option<Counted> {
    let out = dir.join(format!("callgrind.{label}"));
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let result = counted(&mut child, &out, shape, n).await;
    child.kill().ok();
    child.wait().ok();
    if result.is_none() {
        eprintln!("bench: callgrind run '{label}' failed");
    }
    result
}

async fn counted(child: &mut Child, out: &Path, shape: &Shape, n: u32) -> Option<Counted> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .ok()?;
    let send = || {
        let mut r = http.post(&shape.url).body(shape.body.clone());
        for (k, v) in &shape.headers {
            r = r.header(k, v);
        }
        async move {
            match r.send().await {
                Ok(r) => {
                    let ok = r.status() == 200;
                    let _ = r.bytes().await;
                    ok
                }
                Err(_) => false,
            }
        }
    };
    // Start-up under valgrind is slow: up to two minutes.
    let mut up = false;
    for _ in 0..240 {
        if send().await {
            up = true;
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !up {
        return None;
    }
    let pid = child.id().to_string();
    control(&["--instr=on", &pid])?;
    for _ in 0..50 {
        send().await;
    }
    control(&["--zero", &pid])?;
    let mut failed = 0;
    for _ in 0..n {
        if !send().await {
            failed += 1;
        }
    }
    control(&["--dump", &pid])?;
    if failed > 0 {
        eprintln!("bench: {failed} of {n} counted requests failed");
        return None;
    }
    // The dump file is `<out>.<n>` (n = dump number); take the newest.
    let dump = newest_dump(out)?;
    let text = std::fs::read_to_string(&dump).ok()?;
    let total: f64 = text.lines().find_map(|l| {
        l.strip_prefix("totals:")
            .or_else(|| l.strip_prefix("summary:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })?;
    let per_req = total / f64::from(n);
    Some(Counted {
        per_req,
        top: top_functions(&dump, total, n, 15),
    })
}

fn control(args: &[&str]) -> Option<()> {
    let ok = Command::new("callgrind_control")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then_some(())
}

fn newest_dump(out: &Path) -> Option<PathBuf> {
    let dir = out.parent()?;
    let prefix = out.file_name()?.to_str()?.to_owned();
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && n.len() > prefix.len())
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// `callgrind_annotate`'s exclusive cost per function, the `k` costliest, per request.
fn top_functions(dump: &Path, total: f64, n: u32, k: usize) -> Vec<(f64, f64, String)> {
    let Ok(o) = Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--threshold=99"])
        .arg(dump)
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let mut rows = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        // "1,234,567 (12.34%)  file:function [object]"
        let Some((num, rest)) = t.split_once(' ') else {
            continue;
        };
        let Ok(ir) = num.replace(',', "").parse::<f64>() else {
            continue;
        };
        let Some((_, name)) = rest.split_once(')') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.starts_with("PROGRAM TOTALS") || ir >= total {
            continue;
        }
        let name = name.split(" [").next().unwrap_or(name);
        let name = name.rsplit_once(':').map_or(name, |(_, f)| f);
        rows.push((ir / f64::from(n), ir / total * 100.0, name.to_owned()));
        if rows.len() == k {
            break;
        }
    }
    rows
}

/// A Markdown table of the costliest functions of each counted run.
pub fn table(runs: &[(&str, &Counted)]) -> String {
    let mut s = String::new();
    for (label, c) in runs {
        s.push_str(&format!(
            "\n**{label}**: {:.0} instructions per request; the costliest functions (own instructions per request):\n\n| instr/req | share | function |\n|---:|---:|---|\n",
            c.per_req
        ));
        for (ir, pct, name) in &c.top {
            let name: String = name.chars().take(110).collect();
            s.push_str(&format!(
                "| {ir:.0} | {pct:.1} % | `{}` |\n",
                name.replace('|', "\\|")
            ));
        }
    }
    s
}
