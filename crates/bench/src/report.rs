//! Figures of a run, the table they are printed in, and the machine facts
//! printed with it.

use std::fmt::Write as _;
use std::process::Command;

use crate::observer::Outcomes;

/// Figures of one run.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    pub messages: usize,
    pub delivered: usize,
    pub failed: usize,
    pub duplicates: usize,
    /// Delivered events per second, first to last arrival.
    pub throughput: Option<f64>,
    /// Latency percentiles in milliseconds: p50, p99, max.
    pub latency_ms: Option<[f64; 3]>,
    /// Highest `VmHWM` of the service processes, in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Publish rate the paced publisher reached, messages per second.
    pub offered_rate: Option<f64>,
    /// One-minute load average before and after the run.
    pub load: [f64; 2],
    /// Requests the webhook receiver or SMTP server accepted.
    pub received: Option<usize>,
    /// CPU time per settled message while the consumer ran, in
    /// microseconds: consumer processes, RabbitMQ, the benchmark process.
    pub cpu_micros_per_message: Option<[f64; 3]>,
    /// Context switches of the consumer processes per settled message.
    pub switches_per_message: Option<f64>,
}

impl RunFigures {
    pub fn from_outcomes(messages: usize, outcomes: &Outcomes) -> RunFigures {
        let mut latencies: Vec<i64> = outcomes.delivered.iter().map(|d| d.latency_micros).collect();
        latencies.sort_unstable();
        RunFigures {
            messages,
            delivered: outcomes.delivered.len(),
            failed: outcomes.failed,
            duplicates: outcomes.duplicates,
            throughput: outcomes.throughput(),
            latency_ms: percentiles(&latencies),
            ..RunFigures::default()
        }
    }

    /// Messages with no outcome event at the end of the run.
    pub fn missing(&self) -> usize {
        self.messages.saturating_sub(self.delivered + self.failed)
    }

    /// Lists what went wrong in the run; empty when every message was delivered once.
    pub fn problems(&self) -> String {
        let mut problems = Vec::new();
        if self.failed > 0 {
            problems.push(format!("{} failed", self.failed));
        }
        if self.missing() > 0 {
            problems.push(format!("{} without outcome", self.missing()));
        }
        if self.duplicates > 0 {
            problems.push(format!("{} duplicate events", self.duplicates));
        }
        if let Some(received) = self.received {
            if received != self.messages {
                problems.push(format!("receiver got {received} of {}", self.messages));
            }
        }
        problems.join(", ")
    }
}

/// Computes the nearest-rank p50 and p99, and the maximum, of sorted
/// microseconds, in milliseconds.
fn percentiles(sorted_micros: &[i64]) -> Option<[f64; 3]> {
    let max = *sorted_micros.last()?;
    let rank = |p: f64| {
        let index = ((p * sorted_micros.len() as f64).ceil() as usize).clamp(1, sorted_micros.len()) - 1;
        sorted_micros[index] as f64 / 1000.0
    };
    Some([rank(0.50), rank(0.99), max as f64 / 1000.0])
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub backlog: Option<RunFigures>,
    pub steady: Option<RunFigures>,
}

/// Renders the rows as a Markdown table, with each backlog throughput as a
/// share of `ceiling` (messages per second).
pub fn table(rows: &[Row], ceiling: Option<f64>) -> String {
    let mut out = String::new();
    out.push_str("| run | backlog msg/s | of ceiling | steady p50 ms | p99 ms | max ms | offered msg/s | peak RSS backlog MiB | peak RSS steady MiB | CPU µs/msg consumer | broker | bench | switches/msg consumer | load 1 min | problems |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for row in rows {
        let backlog = row.backlog.as_ref();
        let steady = row.steady.as_ref();
        let throughput = backlog.and_then(|b| b.throughput);
        let ratio = match (throughput, ceiling) {
            (Some(t), Some(c)) if c > 0.0 => format!("{:.0}%", 100.0 * t / c),
            _ => "-".to_owned(),
        };
        let latency = steady.and_then(|s| s.latency_ms);
        let loads: Vec<String> = [backlog, steady]
            .into_iter()
            .flatten()
            .map(|run| format!("{:.2}-{:.2}", run.load[0], run.load[1]))
            .collect();
        let problems: Vec<String> = [("backlog", backlog), ("steady", steady)]
            .into_iter()
            .filter_map(|(name, run)| run.map(|run| (name, run.problems())))
            .filter(|(_, problems)| !problems.is_empty())
            .map(|(name, problems)| format!("{name}: {problems}"))
            .collect();
        let cpu = backlog.and_then(|b| b.cpu_micros_per_message);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            number(throughput, 0),
            ratio,
            number(latency.map(|l| l[0]), 1),
            number(latency.map(|l| l[1]), 1),
            number(latency.map(|l| l[2]), 1),
            number(steady.and_then(|s| s.offered_rate), 0),
            number(backlog.and_then(|b| b.peak_rss_kib).map(|kib| kib as f64 / 1024.0), 1),
            number(steady.and_then(|s| s.peak_rss_kib).map(|kib| kib as f64 / 1024.0), 1),
            number(cpu.map(|c| c[0]), 0),
            number(cpu.map(|c| c[1]), 0),
            number(cpu.map(|c| c[2]), 0),
            number(backlog.and_then(|b| b.switches_per_message), 1),
            if loads.is_empty() { "-".to_owned() } else { loads.join(", ") },
            if problems.is_empty() { "none".to_owned() } else { problems.join("; ") },
        );
    }
    out
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Returns the one-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Returns the CPU count, CPU model, memory and RabbitMQ version, one per line.
pub fn machine_facts() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or("unknown".to_owned(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let rabbitmq = Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).lines().last().map(str::trim).map(str::to_owned))
        .unwrap_or_else(|| "unknown (rabbitmqctl version failed)".to_owned());
    format!("CPUs: {cpus}\nCPU model: {model}\nmemory: {memory_gib}\nRabbitMQ: {rabbitmq}\n")
}
