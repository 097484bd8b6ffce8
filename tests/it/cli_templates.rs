//! `templates check` on the shipped templates and on broken copies, and
//! `templates render` of the starter email.

use std::path::{Path, PathBuf};

use crate::utils::cli::{run_cli, ConfigFile};

/// A copy of the shipped `templates/` folder, removed on drop.
struct TemplatesCopy {
    dir: PathBuf,
}

impl TemplatesCopy {
    fn new() -> TemplatesCopy {
        let dir = std::env::temp_dir().join(format!("flatrender-notify-it/templates-{}", uuid::Uuid::new_v4().simple()));
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"), &dir);
        TemplatesCopy { dir }
    }

    /// Replaces line `line` (1-based) of a file in the copy.
    fn replace_line(&self, file: &str, line: usize, text: &str) {
        let path = self.dir.join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = source.lines().collect();
        lines[line - 1] = text;
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
}

impl Drop for TemplatesCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const TEXT_FILE: &str = "email/render_completed/en/text.hbs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_check_passes_on_shipped_templates() {
    let config = ConfigFile::without_broker("");

    let output = run_cli(&["templates", "check", "--config", config.path().to_str().unwrap()]).await;

    assert!(output.success(), "{output}");
    assert_eq!(output.stdout.lines().count(), 1, "one summary line: {output}");
    assert!(output.stdout.contains("5 channels (email, push, sms, telegram, webhook)"), "{output}");
    assert!(output.stdout.contains("2 locales (de, en)"), "{output}");
    assert!(output.stdout.contains("no problems"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_check_reports_syntax_error_line() {
    let copy = TemplatesCopy::new();
    copy.replace_line(TEXT_FILE, 3, "Download it {{> }} here:");
    let config = ConfigFile::without_broker("");
    let args = ["templates", "check", "--config", config.path().to_str().unwrap(), "--dir", copy.dir.to_str().unwrap()];

    let output = run_cli(&args).await;

    assert_eq!(output.status.code(), Some(1), "{output}");
    let expected = format!("{}:3:", copy.dir.join(TEXT_FILE).display());
    let problem = output.stdout.lines().find(|line| line.starts_with(&expected));
    let problem = problem.unwrap_or_else(|| panic!("no problem at {expected}: {output}"));
    assert!(problem.contains("invalid handlebars syntax"), "{problem}");
    assert!(output.stderr.contains("templates check failed: 1 problem in"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_check_reports_misspelt_variable() {
    let copy = TemplatesCopy::new();
    copy.replace_line(TEXT_FILE, 4, "{{downlod_url}}");
    let config = ConfigFile::without_broker("");
    let args = ["templates", "check", "--config", config.path().to_str().unwrap(), "--dir", copy.dir.to_str().unwrap()];

    let output = run_cli(&args).await;

    assert_eq!(output.status.code(), Some(1), "{output}");
    let expected = format!("{}:4:", copy.dir.join(TEXT_FILE).display());
    let problem = output.stdout.lines().find(|line| line.starts_with(&expected));
    let problem = problem.unwrap_or_else(|| panic!("no problem at {expected}: {output}"));
    assert!(problem.contains("downlod_url"), "the problem names the variable: {problem}");
    for line in output.stdout.lines() {
        assert!(line.contains(TEXT_FILE), "every problem is in the edited file: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_prints_email_subject() {
    let config = ConfigFile::without_broker("");
    let vars = config.path().with_extension("vars.json");
    std::fs::write(&vars, r#"{"project_name": "Intro", "download_url": "https://example.com/r/1"}"#).unwrap();
    let render = |extra: &[&str]| {
        let mut args = vec!["templates", "render", "--config", config.path().to_str().unwrap()];
        args.extend(["--channel", "email", "--template", "render_completed"]);
        args.extend(extra);
        args.iter().map(|arg| arg.to_string()).collect::<Vec<String>>()
    };

    let sample = run_cli(&render(&[])).await;
    let with_vars = run_cli(&render(&["--vars", vars.to_str().unwrap()])).await;
    let german = run_cli(&render(&["--locale", "de-AT"])).await;
    std::fs::remove_file(&vars).unwrap();

    assert!(sample.success(), "{sample}");
    assert!(sample.stdout.contains("subject:  Your render of Riverside Loft is ready\n"), "sample variables: {sample}");
    assert!(sample.stdout.contains("--- text ---"), "{sample}");
    assert!(sample.stdout.contains("--- html ---"), "{sample}");
    assert!(with_vars.success(), "{with_vars}");
    assert!(with_vars.stdout.contains("subject:  Your render of Intro is ready\n"), "variables from --vars: {with_vars}");
    assert!(german.success(), "{german}");
    assert!(german.stdout.contains("locale:   de (requested de-AT"), "locale fallback: {german}");
    assert!(german.stdout.contains("subject:  Ihr Rendering von Riverside Loft ist fertig\n"), "{german}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_writes_html_to_file() {
    let config = ConfigFile::without_broker("");
    let html = config.path().with_extension("html");
    let args = |channel: &str| {
        ["templates", "render", "--config", config.path().to_str().unwrap(), "--channel", channel]
            .into_iter()
            .chain(["--template", "render_completed", "--html-out", html.to_str().unwrap()])
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };

    let output = run_cli(&args("email")).await;
    let written = std::fs::read_to_string(&html);
    let _ = std::fs::remove_file(&html);
    let sms = run_cli(&args("sms")).await;

    assert!(output.success(), "{output}");
    let written = written.expect("the HTML body is written to --html-out");
    assert!(written.starts_with("<!DOCTYPE html>"), "{written}");
    assert!(written.contains("<strong>Riverside Loft</strong>"), "{written}");
    assert!(!output.stdout.contains("<!DOCTYPE html>"), "HTML goes to the file, not stdout: {output}");
    assert!(output.stdout.contains(&format!("html:     written to {}", html.display())), "{output}");
    assert_eq!(sms.status.code(), Some(1), "--html-out without an HTML part fails: {sms}");
    assert!(sms.stderr.contains("--html-out"), "{sms}");
    assert!(!html.exists(), "nothing written for sms");
}
