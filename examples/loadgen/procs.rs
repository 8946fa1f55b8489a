//! /proc figures: the server's memory, threads and CPU (--server-pid), this
//! process's own, the machine's MemAvailable, and the open-files limit.

use std::time::Instant;

use serde_json::{json, Value};

use crate::report::{mib, round1, round3, Out};
use crate::{Fail, Res};

#[derive(Clone, Copy)]
pub struct ProcSnap {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    pub cpu_ticks: u64,
    pub at: Option<Instant>,
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn proc_snap(pid: &str) -> Option<ProcSnap> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ProcSnap {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_ticks: utime + stime,
        at: Some(Instant::now()),
    })
}

pub fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The server (with `--server-pid`) and this process, sampled together.
pub struct Watch {
    pub server_pid: Option<u32>,
}

#[derive(Clone, Copy)]
pub struct Snap {
    pub server: Option<ProcSnap>,
    pub own: Option<ProcSnap>,
    pub mem_available_kib: Option<u64>,
}

impl Watch {
    pub fn new(server_pid: Option<u32>) -> Res<Watch> {
        if let Some(pid) = server_pid {
            if proc_snap(&pid.to_string()).is_none() {
                return Err(Fail::Usage(format!(
                    "--server-pid {pid}: no such process readable in /proc on this host (the server must run on this machine)"
                )));
            }
        }
        Ok(Watch { server_pid })
    }

    pub fn snap(&self) -> Snap {
        Snap {
            server: self.server_pid.and_then(|p| proc_snap(&p.to_string())),
            own: proc_snap("self"),
            mem_available_kib: mem_available_kib(),
        }
    }

    pub fn server_name(&self) -> Option<String> {
        let pid = self.server_pid?;
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Server's open-file soft limit, to warn when N connections will not fit.
    pub fn server_nofile(&self) -> Option<u64> {
        let pid = self.server_pid?;
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

pub fn snap_json(s: &ProcSnap) -> Value {
    json!({"rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "threads": s.threads})
}

pub fn snap_line(s: &ProcSnap) -> String {
    format!(
        "RSS {}  HWM {}  threads {}",
        mib(s.rss_kib),
        mib(s.hwm_kib),
        s.threads
    )
}

/// CPU seconds between two snapshots and the share of one core.
pub fn cpu(a: &ProcSnap, b: &ProcSnap) -> (f64, f64) {
    let secs = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / clk_tck();
    let wall = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    (secs, if wall > 0.0 { 100.0 * secs / wall } else { 0.0 })
}

/// Prints and records the server's before/after figures and both CPU figures over
/// `[m0, m1]` (the measured interval).
pub fn report_procs(out: &mut Out, watch: &Watch, before: &Snap, m0: &Snap, m1: &Snap) {
    if let (Some(b), Some(a0), Some(a1)) = (before.server, m0.server, m1.server) {
        let (cpu_s, cpu_pct) = cpu(&a0, &a1);
        out.line(format!(
            "server pid {} ({}):\n  before {}",
            watch.server_pid.unwrap_or(0),
            watch.server_name().unwrap_or_default(),
            snap_line(&b)
        ));
        out.line(format!("  after  {}", snap_line(&a1)));
        out.line(format!(
            "server CPU over the measured interval: {cpu_s:.2} s ({cpu_pct:.0}% of one core)"
        ));
        out.set(
            "server",
            json!({
                "pid": watch.server_pid, "before": snap_json(&b), "after": snap_json(&a1),
                "cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct),
            }),
        );
    } else if watch.server_pid.is_some() {
        out.line("server: /proc figures unavailable (did the server exit?)");
    }
    if let (Some(a0), Some(a1)) = (m0.own, m1.own) {
        let (cpu_s, cpu_pct) = cpu(&a0, &a1);
        out.line(format!(
            "loadgen CPU over the measured interval: {cpu_s:.2} s ({cpu_pct:.0}% of one core)"
        ));
        out.set(
            "loadgen",
            json!({"cpu_s": round3(cpu_s), "cpu_pct": round1(cpu_pct), "rss_kib": a1.rss_kib}),
        );
    }
}

/// Raises the soft open-files limit to the hard one; warns when `need` exceeds it.
pub fn raise_nofile(out: &mut Out, need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            out.progress(format!(
                "raised the soft RLIMIT_NOFILE from {before} to the hard limit {}",
                lim.rlim_max
            ));
        } else {
            lim.rlim_cur = before;
        }
    }
    out.set(
        "rlimit_nofile",
        json!({"before": before, "now": lim.rlim_cur, "need": need}),
    );
    if lim.rlim_cur < need {
        eprintln!(
            "loadgen: warning: this run needs about {need} file descriptors but RLIMIT_NOFILE is {} (hard {}): raise the hard limit (`ulimit -Hn`, LimitNOFILE=) or expect `too many open files`",
            lim.rlim_cur, lim.rlim_max
        );
    }
}
