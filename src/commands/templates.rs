//! `templates check` and `templates render`: the checks the service runs on
//! its templates at start-up, and a preview of one rendered notification,
//! both without the broker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use notify_channels::ChannelsConfig;
use notify_core::config::Config;
use notify_core::templates::TemplateLoadError;
use notify_core::{ChannelKind, Content, ParseMode, TemplateStore};
use serde_json::Value;

use super::request::read_variables;
use super::ConfigArg;

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Check every template as the service does at start-up.
    ///
    /// Compiles each file, renders each template with its sample variables
    /// and reports every variable a template uses that its sample does not
    /// define. Prints each problem as `path:line:column: message`, one per
    /// line, and exits with status 1 when there is any; prints one summary
    /// line otherwise.
    Check(CheckArgs),
    /// Print what one template renders to, without sending anything.
    ///
    /// Shows the email subject, text and HTML, the SMS body, the Telegram
    /// text and parse mode, the push title and body, or the webhook message
    /// and data.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Template folder to check instead of `templates.dir` of the configuration.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Template folder to render from instead of `templates.dir` of the configuration.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Channel: email, sms, telegram, push or webhook.
    #[arg(long)]
    pub channel: ChannelKind,
    /// Template name, e.g. render_completed.
    #[arg(long)]
    pub template: String,
    /// Locale, e.g. de or de-AT; falls back to the language, then to
    /// `templates.default_locale`.
    #[arg(long)]
    pub locale: Option<String>,
    /// JSON file with the template variables; the template's sample
    /// variables (templates/samples/<template>.json) when absent.
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// Write the email HTML body to this file instead of printing it.
    #[arg(long)]
    pub html_out: Option<PathBuf>,
}

pub async fn run(command: TemplatesCommand) -> anyhow::Result<ExitCode> {
    match command {
        TemplatesCommand::Check(args) => check(&args),
        TemplatesCommand::Render(args) => render(&args),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config: Config<ChannelsConfig> = Config::load(&args.config.config)?;
    let dir = args.dir.as_deref().unwrap_or(&config.templates.dir);
    match TemplateStore::load(dir, &config.templates.default_locale) {
        Ok(store) => {
            println!("{}", summary(dir, &store));
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            report_problems(dir, &err);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints each problem on its own line on stdout, then a count on stderr.
fn report_problems(dir: &Path, err: &TemplateLoadError) {
    for problem in err.problems() {
        println!("{problem}");
    }
    let count = err.problems().len();
    let noun = if count == 1 { "problem" } else { "problems" };
    eprintln!("templates check failed: {count} {noun} in {}", dir.display());
}

/// Formats one line: how many templates, for which channels, in which locales.
fn summary(dir: &Path, store: &TemplateStore) -> String {
    let mut templates = 0;
    let mut names = BTreeSet::new();
    let mut channels = BTreeSet::new();
    let mut locales = BTreeSet::new();
    for (channel, name, template_locales) in store.templates() {
        templates += 1;
        names.insert(name.to_owned());
        channels.insert(channel.as_str());
        locales.extend(template_locales.into_iter().map(str::to_owned));
    }
    let join = |items: Vec<&str>| items.join(", ");
    format!(
        "{}: {templates} templates ({} names) for {} channels ({}) in {} locales ({}); no problems",
        dir.display(),
        names.len(),
        channels.len(),
        join(channels.into_iter().collect()),
        locales.len(),
        join(locales.iter().map(String::as_str).collect()),
    )
}

fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let config: Config<ChannelsConfig> = Config::load(&args.config.config)?;
    let dir = args.dir.as_deref().unwrap_or(&config.templates.dir);
    let store = match TemplateStore::load(dir, &config.templates.default_locale) {
        Ok(store) => store,
        Err(err) => {
            report_problems(dir, &err);
            return Ok(ExitCode::FAILURE);
        }
    };
    let variables = variables_for(&store, &args.template, args.vars.as_deref())?;
    let rendered = store
        .render(args.channel, &args.template, args.locale.as_deref(), &variables)
        .with_context(|| format!("cannot render {} template {}", args.channel, args.template))?;
    let has_html = matches!(&rendered.content, Content::Email(email) if email.html.is_some());
    if args.html_out.is_some() && !has_html {
        bail!(
            "--html-out needs an email template with an html.hbs part; {} template {} has no HTML body",
            args.channel,
            args.template
        );
    }

    println!("channel:  {}", args.channel);
    println!("template: {}", args.template);
    match args.locale.as_deref() {
        Some(requested) if !requested.eq_ignore_ascii_case(&rendered.locale) => {
            println!("locale:   {} (requested {requested}, which has no folder of its own)", rendered.locale);
        }
        _ => println!("locale:   {}", rendered.locale),
    }
    match &args.vars {
        Some(path) => println!("vars:     {}", path.display()),
        None => println!("vars:     sample variables of {}", args.template),
    }
    print_content(&rendered.content, args.html_out.as_deref())?;
    Ok(ExitCode::SUCCESS)
}

/// Returns the variables from `--vars`, or else the template's sample variables.
pub(crate) fn variables_for(store: &TemplateStore, template: &str, vars: Option<&Path>) -> anyhow::Result<Value> {
    match vars {
        Some(path) => read_variables(path),
        // An unknown template has no sample, and rendering then reports it by name.
        None => Ok(store.sample(template).cloned().unwrap_or(Value::Null)),
    }
}

fn print_content(content: &Content, html_out: Option<&Path>) -> anyhow::Result<()> {
    match content {
        Content::Email(email) => {
            println!("subject:  {}", email.subject);
            print_block("text", &email.text);
            match (&email.html, html_out) {
                (Some(html), Some(path)) => {
                    std::fs::write(path, html).with_context(|| format!("cannot write the HTML body to {}", path.display()))?;
                    println!("html:     written to {} ({} bytes)", path.display(), html.len());
                }
                (Some(html), None) => print_block("html", html),
                (None, _) => println!("html:     none (the template has no html.hbs)"),
            }
        }
        Content::Sms { body } => {
            println!("length:   {} characters", body.chars().count());
            print_block("body", body);
        }
        Content::Telegram { text, parse_mode } => {
            let mode = match parse_mode {
                ParseMode::Plain => "none (plain text)",
                ParseMode::MarkdownV2 => "MarkdownV2",
                ParseMode::Html => "HTML",
            };
            println!("parse mode: {mode}");
            print_block("text", text);
        }
        Content::Push { title, body } => {
            println!("title:    {title}");
            print_block("body", body);
        }
        Content::Webhook { message, data } => {
            print_block("message", message);
            let data = serde_json::to_string_pretty(data).context("cannot format the webhook data as JSON")?;
            print_block("data", &data);
        }
    }
    Ok(())
}

fn print_block(name: &str, text: &str) {
    println!("--- {name} ---");
    println!("{}", text.trim_end_matches('\n'));
}
