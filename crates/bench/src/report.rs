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

/// One line of the table: a scenario's backlog rounds and its steady run.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    /// One run per round, in the order they ran.
    pub backlog: Vec<RunFigures>,
    pub steady: Option<RunFigures>,
}

impl Row {
    fn backlog_median(&self, figure: impl Fn(&RunFigures) -> Option<f64>) -> Option<f64> {
        median(self.backlog.iter().filter_map(figure).collect())
    }

    /// Throughput of each round as a share of the ceiling's in the same round.
    fn shares_of(&self, ceiling: &Row) -> Vec<f64> {
        self.backlog
            .iter()
            .zip(&ceiling.backlog)
            .filter_map(|(run, ceiling)| Some(run.throughput? / ceiling.throughput.filter(|t| *t > 0.0)?))
            .collect()
    }
}

/// Middle value, or the mean of the two middle values; `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// Renders the rows as a Markdown table. Backlog figures are medians over
/// the rounds, and "of ceiling" is the median of each round's throughput
/// over the ceiling's in the same round, with the lowest and highest share.
/// Peak memory is the highest of the rounds.
pub fn table(rows: &[Row], ceiling: Option<&Row>) -> String {
    let mut out = String::new();
    out.push_str("| run | backlog msg/s | of ceiling | lowest-highest | steady p50 ms | p99 ms | max ms | offered msg/s | peak RSS backlog MiB | peak RSS steady MiB | CPU µs/msg consumer | broker | bench | switches/msg consumer | load 1 min | problems |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for row in rows {
        let steady = row.steady.as_ref();
        let shares = ceiling.map(|ceiling| row.shares_of(ceiling)).unwrap_or_default();
        let lowest = shares.iter().copied().reduce(f64::min);
        let highest = shares.iter().copied().reduce(f64::max);
        let share_range = match (lowest, highest) {
            (Some(low), Some(high)) => format!("{:.0}-{:.0}%", 100.0 * low, 100.0 * high),
            _ => "-".to_owned(),
        };
        let latency = steady.and_then(|s| s.latency_ms);
        let loads: Vec<f64> = row.backlog.iter().chain(steady).flat_map(|run| run.load).filter(|load| load.is_finite()).collect();
        let load_range = match (loads.iter().copied().reduce(f64::min), loads.iter().copied().reduce(f64::max)) {
            (Some(low), Some(high)) => format!("{low:.2}-{high:.2}"),
            _ => "-".to_owned(),
        };
        let rounds = row.backlog.iter().enumerate().map(|(round, run)| (format!("backlog {}", round + 1), run));
        let problems: Vec<String> = rounds
            .chain(steady.map(|run| ("steady".to_owned(), run)))
            .map(|(name, run)| (name, run.problems()))
            .filter(|(_, problems)| !problems.is_empty())
            .map(|(name, problems)| format!("{name}: {problems}"))
            .collect();
        let peak_backlog = row.backlog.iter().filter_map(|run| run.peak_rss_kib).max();
        let cpu = |column: usize| row.backlog_median(|run| Some(run.cpu_micros_per_message?[column]));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            number(row.backlog_median(|run| run.throughput), 0),
            median(shares).map_or_else(|| "-".to_owned(), |share| format!("{:.0}%", 100.0 * share)),
            share_range,
            number(latency.map(|l| l[0]), 1),
            number(latency.map(|l| l[1]), 1),
            number(latency.map(|l| l[2]), 1),
            number(steady.and_then(|s| s.offered_rate), 0),
            number(peak_backlog.map(|kib| kib as f64 / 1024.0), 1),
            number(steady.and_then(|s| s.peak_rss_kib).map(|kib| kib as f64 / 1024.0), 1),
            number(cpu(0), 0),
            number(cpu(1), 0),
            number(cpu(2), 0),
            number(row.backlog_median(|run| run.switches_per_message), 1),
            load_range,
            if problems.is_empty() { "none".to_owned() } else { problems.join("; ") },
        );
    }
    out
}

/// Renders every backlog round: throughput, share of the same round's
/// ceiling, and the consumer's CPU time and context switches per message.
pub fn rounds_table(rows: &[Row], ceiling: Option<&Row>) -> String {
    let mut out = String::new();
    out.push_str("| run | round | msg/s | of ceiling | CPU µs/msg consumer | broker | switches/msg consumer |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let ceiling_runs = ceiling.map_or(&[][..], |ceiling| &ceiling.backlog[..]);
        for (round, run) in row.backlog.iter().enumerate() {
            let share = ceiling_runs.get(round).and_then(|ceiling| Some(run.throughput? / ceiling.throughput.filter(|t| *t > 0.0)?));
            let cpu = run.cpu_micros_per_message;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                round + 1,
                number(run.throughput, 0),
                share.map_or_else(|| "-".to_owned(), |share| format!("{:.0}%", 100.0 * share)),
                number(cpu.map(|c| c[0]), 0),
                number(cpu.map(|c| c[1]), 0),
                number(run.switches_per_message, 1),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64) -> RunFigures {
        RunFigures { throughput: Some(throughput), ..RunFigures::default() }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn shares_pair_rounds_with_the_ceiling() {
        let ceiling = Row { name: "ceiling".to_owned(), backlog: vec![run(100.0), run(200.0)], steady: None };
        let noop = Row { name: "noop".to_owned(), backlog: vec![run(90.0), run(100.0)], steady: None };
        assert_eq!(noop.shares_of(&ceiling), vec![0.9, 0.5]);
        let table = table(&[ceiling.clone(), noop], Some(&ceiling));
        let noop_line = table.lines().find(|line| line.starts_with("| noop")).unwrap();
        assert!(noop_line.starts_with("| noop | 95 | 70% | 50-90% |"), "{noop_line}");
    }
}
