//! CPU time of processes, from `/proc/<pid>/stat`, to split a run's CPU
//! between the consumer, the broker and the benchmark itself; and their
//! context switches, which cost much of that time on a small machine.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// User plus system CPU time of a process, or `None` when it is gone.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in brackets may contain spaces, so fields are counted
    // after its closing bracket: state is field 3, utime 14 and stime 15.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((user + system) as f64 / clock_ticks_per_second() as f64))
}

/// Voluntary plus involuntary context switches of all threads of a process,
/// from `/proc/<pid>/task/*/status`, or `None` when it is gone. Threads that
/// already ended are not counted.
pub fn process_context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut switches = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        switches += status
            .lines()
            .filter(|line| line.starts_with("voluntary_ctxt_switches:") || line.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(switches)
}

/// Process id of the RabbitMQ node (`beam.smp`), when one runs on this machine.
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (name.trim() == "beam.smp").then_some(pid)
    })
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            // 100 is the value on every Linux architecture the project builds for.
            .unwrap_or(100)
    })
}

/// CPU time of the consumer processes, the broker and this process, and
/// the consumers' context switches, taken together.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub consumer: Duration,
    pub broker: Duration,
    pub bench: Duration,
    pub consumer_switches: u64,
}

impl CpuSnapshot {
    pub fn take(consumer_pids: &[u32], broker: Option<u32>) -> CpuSnapshot {
        CpuSnapshot {
            consumer: consumer_pids.iter().filter_map(|&pid| process_cpu(pid)).sum(),
            broker: broker.and_then(process_cpu).unwrap_or_default(),
            bench: process_cpu(std::process::id()).unwrap_or_default(),
            consumer_switches: consumer_pids.iter().filter_map(|&pid| process_context_switches(pid)).sum(),
        }
    }

    /// Context switches of the consumer processes since `earlier`, per message.
    pub fn switches_per_message_since(&self, earlier: &CpuSnapshot, messages: usize) -> f64 {
        self.consumer_switches.saturating_sub(earlier.consumer_switches) as f64 / messages.max(1) as f64
    }

    /// CPU time spent since `earlier`, in microseconds per message:
    /// consumer, broker, bench.
    pub fn micros_per_message_since(&self, earlier: &CpuSnapshot, messages: usize) -> [f64; 3] {
        let per_message = |later: Duration, earlier: Duration| {
            later.saturating_sub(earlier).as_secs_f64() * 1e6 / messages.max(1) as f64
        };
        [
            per_message(self.consumer, earlier.consumer),
            per_message(self.broker, earlier.broker),
            per_message(self.bench, earlier.bench),
        ]
    }
}
