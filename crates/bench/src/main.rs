//! End-to-end benchmark of flatrender-notify on the local RabbitMQ.
//!
//! Runs, each on its own exchanges and queues: the broker ceiling (a minimal
//! consumer), the service with the no-op plugin, with the webhook channel
//! against a local receiver, and with the email channel against a local SMTP
//! server. Each runs on a backlog published before the consumer starts
//! (throughput, peak memory), in rounds that take turns, and once at a steady
//! offered load (latency).
//! Then one and two service instances share a queue behind a slow receiver.
//! See docs/benchmarks.md for the figures and what each column means.

mod ceiling;
mod cpu;
mod messages;
mod observer;
mod receiver;
mod report;
mod service;
mod slice;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use notify_core::config::DispatcherConfig;
use notify_core::ChannelKind;
use notify_testkit::SmtpServer;
use serde_json::json;

use crate::ceiling::Ceiling;
use crate::cpu::{broker_pid, CpuSnapshot};
use crate::messages::MessageFactory;
use crate::observer::Observer;
use crate::receiver::WebhookReceiver;
use crate::report::{load_average, machine_facts, rounds_table, table, Row, RunFigures};
use crate::service::{cargo_build, channels, config_toml, supports_noop, wait_consuming, workspace_root, ServiceProcess};
use crate::slice::{Leftovers, Slice};

/// Benchmark flatrender-notify against the RabbitMQ on 127.0.0.1:5672.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Messages in each backlog run, all published before the consumer starts.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Body size of every dispatch message, in bytes; a padding variable fills it up.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Offered load of the steady runs, in messages per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Length of the steady runs, in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Messages of the one- and two-instance runs.
    #[arg(long, default_value_t = 5_000)]
    scale_messages: usize,
    /// Delay of the slow webhook receiver's response in the one- and
    /// two-instance runs, in milliseconds.
    #[arg(long, default_value_t = 20)]
    scale_delay_ms: u64,
    /// Service binary to run instead of building one with the `noop` feature.
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// Command that every service process runs under, split at spaces, e.g.
    /// "valgrind --tool=callgrind" for a profile; the figures then describe
    /// the wrapped process.
    #[arg(long)]
    service_wrapper: Option<String>,
    /// One-minute load average below which the first run starts; the
    /// benchmark waits for it after building, at most --load-wait seconds.
    #[arg(long, default_value_t = 1.5)]
    max_load: f64,
    /// Maximum wait for --max-load, in seconds; 0 starts at once.
    #[arg(long, default_value_t = 120)]
    load_wait: u64,
    /// Backlog runs per scenario. The scenarios take turns, so that a change
    /// in the machine's other load reaches each of them alike; the table
    /// shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Prefetch of the ceiling's and the services' consumers; the
    /// service's default when not given.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    prefetch: Option<u16>,
    /// Messages in flight per consumer; the service's default, or the
    /// prefetch when that is lower, when not given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: Option<u64>,
    /// Skip the broker ceiling.
    #[arg(long)]
    skip_ceiling: bool,
    /// Skip the service with the no-op plugin.
    #[arg(long)]
    skip_noop: bool,
    /// Skip the service with the webhook channel.
    #[arg(long)]
    skip_webhook: bool,
    /// Skip the service with the email channel.
    #[arg(long)]
    skip_email: bool,
    /// Skip the backlog runs.
    #[arg(long)]
    skip_backlog: bool,
    /// Skip the steady-load runs.
    #[arg(long)]
    skip_steady: bool,
    /// Skip the one- and two-instance runs.
    #[arg(long)]
    skip_scale: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Ceiling,
    Noop,
    Webhook,
    Email,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Ceiling => "ceiling",
            Scenario::Noop => "noop",
            Scenario::Webhook => "webhook",
            Scenario::Email => "email",
        }
    }

    /// Returns the channel whose queue the scenario consumes.
    ///
    /// The no-op plugin and the ceiling consume the SMS queue: like the
    /// ceiling, the service then publishes one event per message, where a
    /// webhook also owes `tenant.webhook.fired.v1`. `bench-noop-service`
    /// can only replace the webhook plugin, so with it they use webhooks.
    fn channel_kind(self, noop_mode: &NoopMode) -> ChannelKind {
        match (self, noop_mode) {
            (Scenario::Email, _) => ChannelKind::Email,
            (Scenario::Webhook, _) | (Scenario::Ceiling | Scenario::Noop, NoopMode::Hosted(_)) => ChannelKind::Webhook,
            (Scenario::Ceiling | Scenario::Noop, NoopMode::Factory) => ChannelKind::Sms,
        }
    }
}

/// Service binary of the no-op run.
#[derive(Debug, Clone)]
enum NoopMode {
    /// The service binary itself, with `[channels.noop]`.
    Factory,
    /// `bench-noop-service`, because the factory does not register `[channels.noop]`.
    Hosted(PathBuf),
}

/// Settings and state shared by every run.
struct Bench {
    args: Args,
    run_id: String,
    run_dir: PathBuf,
    leftovers: Leftovers,
    service_bin: Option<PathBuf>,
    noop_mode: NoopMode,
    dispatcher: DispatcherConfig,
}

/// One run: a scenario, backlog or steady, with its message count.
#[derive(Debug, Clone)]
struct RunSpec {
    scenario: Scenario,
    steady: bool,
    messages: usize,
    instances: usize,
    receiver_delay: Duration,
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let run_dir = workspace_root().join("target").join("bench").join(&run_id);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let leftovers = Leftovers::default();

    println!("{}", machine_facts());
    println!("run {run_id}: files in {}", run_dir.display());
    let mut dispatcher = DispatcherConfig::default();
    if let Some(prefetch) = args.prefetch {
        dispatcher.prefetch = prefetch;
        dispatcher.concurrency = dispatcher.concurrency.min(usize::from(prefetch));
    }
    if let Some(concurrency) = args.concurrency {
        dispatcher.concurrency = usize::try_from(concurrency).unwrap_or(usize::MAX);
    }
    let mut context = Bench {
        args,
        run_id,
        run_dir,
        leftovers: leftovers.clone(),
        service_bin: None,
        noop_mode: NoopMode::Factory,
        dispatcher,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = run(&mut context) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted by SIGINT")),
        _ = terminate.recv() => Err(anyhow::anyhow!("interrupted by SIGTERM")),
    };
    leftovers.delete_all().await;
    for binary in ["flatrender-notify", "bench-noop-service"] {
        let _ = std::fs::remove_file(context.run_dir.join(binary));
    }
    result
}

async fn run(context: &mut Bench) -> anyhow::Result<()> {
    let args = &context.args;
    let needs_service = !(args.skip_noop && args.skip_webhook && args.skip_email && args.skip_scale);
    if needs_service {
        // Building takes minutes, so it runs off the runtime's threads and a
        // signal can still stop the benchmark meanwhile.
        let args = (context.args.service_bin.clone(), context.args.skip_noop, context.run_dir.clone());
        let (service_bin, noop_mode) = tokio::task::spawn_blocking(move || prepare_binaries(args.0, args.1, &args.2))
            .await
            .context("building the service binaries panicked")??;
        context.service_bin = Some(service_bin);
        context.noop_mode = noop_mode;
    }
    let args = &context.args;
    wait_for_load(args.max_load, Duration::from_secs(args.load_wait)).await;
    let steady_messages = (args.rate * args.duration as f64).round() as usize;
    let scenarios: Vec<Scenario> = [
        (Scenario::Ceiling, args.skip_ceiling),
        (Scenario::Noop, args.skip_noop),
        (Scenario::Webhook, args.skip_webhook),
        (Scenario::Email, args.skip_email),
    ]
    .into_iter()
    .filter_map(|(scenario, skipped)| (!skipped).then_some(scenario))
    .collect();
    let spec = |scenario: Scenario, steady: bool, messages: usize, label: String| RunSpec {
        scenario,
        steady,
        messages,
        instances: 1,
        receiver_delay: Duration::ZERO,
        label,
    };

    let mut backlogs: Vec<Vec<RunFigures>> = vec![Vec::new(); scenarios.len()];
    if !args.skip_backlog {
        for round in 1..=args.rounds {
            for (index, &scenario) in scenarios.iter().enumerate() {
                let label = format!("{}-backlog-{round}", scenario.name());
                backlogs[index].push(run_once(context, &spec(scenario, false, args.messages, label)).await?);
            }
        }
    }
    let mut rows = Vec::new();
    for (&scenario, backlog) in scenarios.iter().zip(backlogs) {
        let label = format!("{}-steady", scenario.name());
        let steady = if args.skip_steady { None } else { Some(run_once(context, &spec(scenario, true, steady_messages, label)).await?) };
        let name = match (scenario, &context.noop_mode) {
            (Scenario::Noop, NoopMode::Hosted(_)) => "noop (bench-noop-service)".to_owned(),
            _ => scenario.name().to_owned(),
        };
        rows.push(Row { name, backlog, steady });
    }

    let ceiling = rows.iter().find(|row| row.name == "ceiling");
    println!(
        "\n{} messages of {} bytes per backlog run, {} rounds; steady runs offer {} msg/s for {} s\n",
        args.messages,
        MessageFactory::new(ChannelKind::Webhook, json!({"url": "http://127.0.0.1:9/unused"}), args.size, 0).body_len(),
        args.rounds,
        args.rate,
        args.duration
    );
    println!("{}", table(&rows, ceiling));
    if !args.skip_backlog {
        println!("Backlog rounds:\n");
        println!("{}", rounds_table(&rows, ceiling));
    }

    if !args.skip_scale {
        let delay = Duration::from_millis(args.scale_delay_ms);
        let mut scale = Vec::new();
        for instances in [1, 2] {
            let spec = RunSpec {
                scenario: Scenario::Webhook,
                steady: false,
                messages: args.scale_messages,
                instances,
                receiver_delay: delay,
                label: format!("scale-{instances}"),
            };
            scale.push((instances, run_once(context, &spec).await?));
        }
        println!("\n{} webhook messages, receiver responds after {} ms:\n", args.scale_messages, args.scale_delay_ms);
        println!("| instances | msg/s | delivered | duplicate events | receiver requests | problems |");
        println!("|---:|---:|---:|---:|---:|---|");
        for (instances, figures) in &scale {
            println!(
                "| {instances} | {:.0} | {} | {} | {} | {} |",
                figures.throughput.unwrap_or(0.0),
                figures.delivered,
                figures.duplicates,
                figures.received.unwrap_or(0),
                if figures.problems().is_empty() { "none".to_owned() } else { figures.problems() },
            );
        }
    }
    Ok(())
}

/// Builds the service binary with the `noop` feature unless `service_bin`
/// is given, and `bench-noop-service` when that binary's factory does not
/// register `[channels.noop]`.
fn prepare_binaries(service_bin: Option<PathBuf>, skip_noop: bool, run_dir: &Path) -> anyhow::Result<(PathBuf, NoopMode)> {
    let binary = match service_bin {
        Some(binary) => binary,
        None => cargo_build(&["-p", "flatrender-notify", "--features", "notify-channels/noop"], "flatrender-notify", run_dir)?,
    };
    let mut noop_mode = NoopMode::Factory;
    if !skip_noop && !supports_noop(&binary, run_dir)? {
        eprintln!("the service binary rejects [channels.noop]: the no-op run uses bench-noop-service");
        let hosted = cargo_build(&["-p", "bench", "--bin", "bench-noop-service", "--features", "noop-host"], "bench-noop-service", run_dir)?;
        noop_mode = NoopMode::Hosted(hosted);
    }
    Ok((binary, noop_mode))
}

/// Waits until the one-minute load average is below `max_load`, at most `max_wait`.
async fn wait_for_load(max_load: f64, max_wait: Duration) {
    let started = Instant::now();
    let mut load = load_average();
    if load >= max_load && !max_wait.is_zero() {
        eprintln!("load {load:.2}: waiting up to {}s for it to fall below {max_load}", max_wait.as_secs());
    }
    while load >= max_load && started.elapsed() < max_wait {
        tokio::time::sleep(Duration::from_secs(2)).await;
        load = load_average();
    }
    if load >= max_load {
        eprintln!("load {load:.2} is still above {max_load}: other processes compete for the CPUs and the figures suffer");
    }
}

/// Runs one measurement on a slice of its own and deletes the slice afterwards.
async fn run_once(context: &Bench, spec: &RunSpec) -> anyhow::Result<RunFigures> {
    eprintln!("{}: {} messages, load {:.2}", spec.label, spec.messages, load_average());
    let slice = Slice::create(&context.run_id, &spec.label, spec.scenario.channel_kind(&context.noop_mode), &context.leftovers).await?;
    let result = measure(context, spec, &slice).await;
    if let Err(err) = slice.delete().await {
        eprintln!("deleting the queues and exchanges of {} failed: {err:#}", spec.label);
    }
    let figures = result.with_context(|| format!("the {} run failed", spec.label))?;
    let cpu = figures.cpu_micros_per_message.unwrap_or_default();
    eprintln!(
        "{}: {} delivered, {:.0} msg/s, p99 {:.1} ms, CPU µs/msg consumer {:.0} broker {:.0} bench {:.0}{}",
        spec.label,
        figures.delivered,
        figures.throughput.unwrap_or(0.0),
        figures.latency_ms.map_or(0.0, |l| l[1]),
        cpu[0],
        cpu[1],
        cpu[2],
        if figures.problems().is_empty() { String::new() } else { format!(" ({})", figures.problems()) }
    );
    Ok(figures)
}

/// The consumer of a run: the minimal consumer or service processes.
enum Consumer {
    Ceiling(Box<Ceiling>),
    Services(Vec<ServiceProcess>),
}

impl Consumer {
    /// Returns the process ids whose CPU time counts as the consumer's.
    fn pids(&self) -> Vec<u32> {
        match self {
            Consumer::Ceiling(_) => vec![std::process::id()],
            Consumer::Services(services) => services.iter().map(ServiceProcess::pid).collect(),
        }
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        match self {
            Consumer::Ceiling(_) => None,
            Consumer::Services(services) => services.iter().filter_map(ServiceProcess::peak_rss_kib).max(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Consumer::Ceiling(ceiling) => ceiling.stop().await,
            Consumer::Services(services) => {
                for service in services {
                    service.stop().await;
                }
                Ok(())
            }
        }
    }
}

async fn measure(context: &Bench, spec: &RunSpec, slice: &Slice) -> anyhow::Result<RunFigures> {
    let load_before = load_average();
    let receiver = match spec.scenario {
        Scenario::Webhook => Some(WebhookReceiver::start(spec.receiver_delay).await?),
        _ => None,
    };
    let smtp = match spec.scenario {
        Scenario::Email => Some(SmtpServer::start("127.0.0.1:0").await.context("cannot start the SMTP server")?),
        _ => None,
    };
    let channel = spec.scenario.channel_kind(&context.noop_mode);
    let recipient = match (&receiver, &smtp, channel) {
        (Some(receiver), _, _) => json!({"url": receiver.url()}),
        (_, Some(_), _) => json!({"email": "bench@example.com", "name": "Ada"}),
        // Neither the ceiling nor the no-op plugin sends anything to these.
        (_, _, ChannelKind::Sms) => json!({"phone": "+15550100"}),
        _ => json!({"url": "http://127.0.0.1:9/unused"}),
    };
    let factory = Arc::new(MessageFactory::new(channel, recipient, context.args.size, spec.messages));
    let observer = Observer::start(slice, Arc::clone(&factory)).await?;

    if !spec.steady {
        let took = slice.publish_backlog(&factory).await?;
        eprintln!("{}: backlog published in {:.1} s", spec.label, took.as_secs_f64());
    }
    let consumer = start_consumer(context, spec, slice, smtp.as_ref().map(SmtpServer::addr)).await?;
    let broker = broker_pid();
    let cpu_before = CpuSnapshot::take(&consumer.pids(), broker);
    let mut offered_rate = None;
    if spec.steady {
        offered_rate = Some(slice.publish_paced(&factory, context.args.rate).await?);
    }
    // Bounds a stuck run; a healthy one ends as soon as every message has an outcome.
    let timeout = Duration::from_secs(60) + Duration::from_millis(10 * spec.messages as u64);
    let linger = Duration::from_millis(if spec.instances > 1 { 2_000 } else { 300 });
    let waited = Instant::now();
    let outcomes = observer.finish(spec.messages, timeout, linger).await?;
    if outcomes.settled() < spec.messages {
        eprintln!("{}: only {} of {} messages settled within {:?}", spec.label, outcomes.settled(), spec.messages, waited.elapsed());
    }
    let cpu_after = CpuSnapshot::take(&consumer.pids(), broker);
    let cpu = cpu_after.micros_per_message_since(&cpu_before, outcomes.settled());
    let switches = cpu_after.switches_per_message_since(&cpu_before, outcomes.settled());
    let peak_rss_kib = consumer.peak_rss_kib();
    consumer.stop().await?;

    let mut figures = RunFigures::from_outcomes(spec.messages, &outcomes);
    figures.peak_rss_kib = peak_rss_kib;
    figures.cpu_micros_per_message = Some(cpu);
    figures.switches_per_message = Some(switches);
    figures.offered_rate = offered_rate;
    figures.load = [load_before, load_average()];
    figures.received = match (&receiver, &smtp) {
        (Some(receiver), _) => Some(receiver.requests()),
        (_, Some(smtp)) => Some(smtp.messages().len()),
        _ => None,
    };
    Ok(figures)
}

async fn start_consumer(
    context: &Bench,
    spec: &RunSpec,
    slice: &Slice,
    smtp: Option<std::net::SocketAddr>,
) -> anyhow::Result<Consumer> {
    if spec.scenario == Scenario::Ceiling {
        let ceiling = Ceiling::start(slice, context.dispatcher.prefetch, context.dispatcher.concurrency).await?;
        return Ok(Consumer::Ceiling(Box::new(ceiling)));
    }
    let service_bin = context.service_bin.as_ref().context("no service binary was built")?;
    let (binary, channels_toml) = match (spec.scenario, &context.noop_mode) {
        (Scenario::Noop, NoopMode::Factory) => (service_bin, channels::noop()),
        (Scenario::Noop, NoopMode::Hosted(hosted)) => (hosted, channels::webhook()),
        (Scenario::Email, _) => (service_bin, channels::email(smtp.map_or(25, |addr| addr.port()))),
        _ => (service_bin, channels::webhook()),
    };
    let config_path = context.run_dir.join(format!("{}.toml", spec.label));
    std::fs::write(&config_path, config_toml(slice, &channels_toml, &context.dispatcher))?;
    let mut services = Vec::new();
    for instance in 0..spec.instances {
        let log_path = context.run_dir.join(format!("{}-{instance}.log", spec.label));
        services.push(ServiceProcess::spawn(binary, context.args.service_wrapper.as_deref(), &config_path, &log_path)?);
    }
    wait_consuming(slice, &mut services, spec.instances as u32, context.args.service_wrapper.is_some()).await?;
    Ok(Consumer::Services(services))
}
