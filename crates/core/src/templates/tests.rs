//! Tests of loading and rendering, each against a template directory written
//! to a fresh temporary folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::{RenderError, Rendered, TemplateLoadError, TemplateStore};
use crate::channel::ChannelKind;
use crate::content::{Content, EmailContent, ParseMode};
use crate::error::FailureKind;

/// A temporary template directory, removed on drop.
struct TempTemplates {
    root: PathBuf,
}

impl TempTemplates {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "notify-core-templates-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let root = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        TempTemplates { root }
    }

    /// Writes a file at a path relative to the template directory.
    fn write(&self, relative: &str, contents: &str) -> &Self {
        let path = self.root.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
        self
    }

    fn sample(&self, template: &str, variables: Value) -> &Self {
        self.write(&format!("samples/{template}.json"), &variables.to_string())
    }

    fn load(&self) -> Result<TemplateStore, TemplateLoadError> {
        TemplateStore::load(&self.root, "en")
    }

    fn load_ok(&self) -> TemplateStore {
        match self.load() {
            Ok(store) => store,
            Err(error) => panic!("expected the templates to load, got:\n{error}"),
        }
    }
}

impl Drop for TempTemplates {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn sms_body(rendered: Rendered) -> String {
    match rendered.content {
        Content::Sms { body } => body,
        other => panic!("expected SMS content, got {other:?}"),
    }
}

fn email(rendered: Rendered) -> EmailContent {
    match rendered.content {
        Content::Email(email) => email,
        other => panic!("expected email content, got {other:?}"),
    }
}

fn has_problem(error: &TemplateLoadError, path_end: &str, message_part: &str) -> bool {
    error.problems().iter().any(|problem| {
        problem.location.path.ends_with(path_end) && problem.message.contains(message_part)
    })
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TemplateStore>();
    assert_send_sync::<RenderError>();
}

#[test]
fn missing_variable_named_in_error() {
    let templates = TempTemplates::new();
    templates
        .write("email/welcome/en/subject.hbs", "Welcome\n")
        .write("email/welcome/en/text.hbs", "Hi {{first_name}}\n")
        .sample("welcome", json!({"first_name": "Ada"}));
    let store = templates.load_ok();

    let error = store
        .render(ChannelKind::Email, "welcome", None, &json!({}))
        .unwrap_err();

    let RenderError::MissingVariable { variable, location } = &error else {
        panic!("expected a missing variable, got {error:?}");
    };
    assert_eq!(variable, "first_name");
    assert!(
        location.path.ends_with("email/welcome/en/text.hbs"),
        "{location}"
    );
    assert_eq!(location.line, Some(1));
    assert_eq!(error.kind(), FailureKind::InvalidContent);
    assert!(error.to_string().contains("first_name"), "{error}");
    assert!(error.to_string().contains("text.hbs"), "{error}");
}

#[test]
fn misspelt_variable_caught_at_load() {
    let templates = TempTemplates::new();
    templates
        .write("email/promo/en/subject.hbs", "Our spring offer")
        .write(
            "email/promo/en/text.hbs",
            "Hello!\n{{#if dicount_code}}Save now{{/if}}\n",
        )
        .sample("promo", json!({"discount_code": "SPRING10"}));

    let error = templates.load().unwrap_err();

    assert_eq!(error.problems().len(), 1, "{error}");
    let problem = &error.problems()[0];
    assert!(
        problem.location.path.ends_with("email/promo/en/text.hbs"),
        "{problem}"
    );
    assert_eq!(problem.location.line, Some(2));
    assert!(problem.message.contains("`dicount_code`"), "{problem}");
    assert!(problem.message.contains("promo.json"), "{problem}");
}

#[test]
fn each_over_missing_value_fails() {
    let templates = TempTemplates::new();
    templates
        .write(
            "sms/order/en/body.hbs",
            "Items: {{#each items}}{{name}} {{/each}}",
        )
        .sample("order", json!({"items": [{"name": "poster"}]}));
    let store = templates.load_ok();

    let rendered = store
        .render(
            ChannelKind::Sms,
            "order",
            None,
            &json!({"items": [{"name": "mug"}]}),
        )
        .unwrap();
    assert_eq!(sms_body(rendered), "Items: mug ");

    let error = store
        .render(ChannelKind::Sms, "order", None, &json!({}))
        .unwrap_err();
    let RenderError::MissingVariable { variable, .. } = &error else {
        panic!("expected a missing variable, got {error:?}");
    };
    assert_eq!(variable, "items");
    assert_eq!(error.kind(), FailureKind::InvalidContent);
}

#[test]
fn null_and_absent_render_same() {
    let templates = TempTemplates::new();
    templates
        .write(
            "sms/offer/en/body.hbs",
            "Hello{{#if coupon}}, use {{coupon}}{{/if}}.\n",
        )
        .write("sms/coupon/en/body.hbs", "Code {{coupon}}")
        .sample("offer", json!({"coupon": "SAVE10"}))
        .sample("coupon", json!({"coupon": "SAVE10"}));
    let store = templates.load_ok();

    let render = |template: &str, variables: Value| {
        store.render(ChannelKind::Sms, template, None, &variables)
    };

    let absent = sms_body(render("offer", json!({})).unwrap());
    let null = sms_body(render("offer", json!({"coupon": null})).unwrap());
    assert_eq!(absent, "Hello.");
    assert_eq!(null, absent);
    let given = sms_body(render("offer", json!({"coupon": "SAVE10"})).unwrap());
    assert_eq!(given, "Hello, use SAVE10.");

    let absent_error = render("coupon", json!({})).unwrap_err();
    let null_error = render("coupon", json!({"coupon": null})).unwrap_err();
    assert!(
        matches!(absent_error, RenderError::MissingVariable { .. }),
        "{absent_error:?}"
    );
    assert_eq!(null_error.to_string(), absent_error.to_string());
}

#[test]
fn nested_null_members_removed() {
    let templates = TempTemplates::new();
    templates
        .write(
            "sms/account/en/body.hbs",
            "{{#if user.nickname}}Hi {{user.nickname}}{{else}}Hi {{user.name}}{{/if}}",
        )
        .sample(
            "account",
            json!({"user": {"name": "Ada", "nickname": "ada"}}),
        );
    let store = templates.load_ok();

    let rendered = store
        .render(
            ChannelKind::Sms,
            "account",
            None,
            &json!({"user": {"name": "Ada", "nickname": null}}),
        )
        .unwrap();
    assert_eq!(sms_body(rendered), "Hi Ada");
}

#[test]
fn escaping_only_in_html_email() {
    let templates = TempTemplates::new();
    templates
        .write("email/note/en/subject.hbs", "{{name}} {{code}}\n")
        .write("email/note/en/text.hbs", "{{name}} {{code}}\n")
        .write("email/note/en/html.hbs", "<p>{{name}} {{code}}</p>\n")
        .write("sms/note/en/body.hbs", "{{name}} {{code}}\n")
        .sample("note", json!({"name": "x", "code": "y"}));
    let store = templates.load_ok();
    let variables = json!({"name": "Jack O'Neill & <Sons>", "code": "a=b`c"});

    let email = email(
        store
            .render(ChannelKind::Email, "note", None, &variables)
            .unwrap(),
    );
    assert_eq!(email.subject, "Jack O'Neill & <Sons> a=b`c");
    assert_eq!(email.text, "Jack O'Neill & <Sons> a=b`c\n");
    assert_eq!(
        email.html.as_deref(),
        Some("<p>Jack O&#x27;Neill &amp; &lt;Sons&gt; a&#x3D;b&#x60;c</p>\n")
    );

    let sms = sms_body(
        store
            .render(ChannelKind::Sms, "note", None, &variables)
            .unwrap(),
    );
    assert_eq!(sms, "Jack O'Neill & <Sons> a=b`c");
}

#[test]
fn telegram_html_escapes_values_only() {
    let templates = TempTemplates::new();
    templates
        .write(
            "telegram/reply/en/body.html.hbs",
            "<b>{{title}}</b>\n{{body}}\n",
        )
        .sample("reply", json!({"title": "t", "body": "b"}));
    let store = templates.load_ok();

    let variables = json!({"title": "Q&A", "body": "Reply to <user@example.com>\nThanks"});
    let rendered = store
        .render(ChannelKind::Telegram, "reply", None, &variables)
        .unwrap();

    assert_eq!(
        rendered.content,
        Content::Telegram {
            text: "<b>Q&amp;A</b>\nReply to &lt;user@example.com&gt;\nThanks".to_owned(),
            parse_mode: ParseMode::Html,
        }
    );
}

#[test]
fn telegram_markdown_v2_escapes_values() {
    let templates = TempTemplates::new();
    templates
        .write(
            "telegram/alert/en/body.md.hbs",
            "*{{server}} alert:* {{message}}\n",
        )
        .sample("alert", json!({"server": "s", "message": "m"}));
    let store = templates.load_ok();

    let variables = json!({
        "server": "db-01",
        "message": "Disk 95.5% full (sda1)! See https://example.com/a_b",
    });
    let rendered = store
        .render(ChannelKind::Telegram, "alert", None, &variables)
        .unwrap();

    assert_eq!(
        rendered.content,
        Content::Telegram {
            text: r"*db\-01 alert:* Disk 95\.5% full \(sda1\)\! See https://example\.com/a\_b"
                .to_owned(),
            parse_mode: ParseMode::MarkdownV2,
        }
    );
}

#[test]
fn telegram_plain_body_not_escaped() {
    let templates = TempTemplates::new();
    templates
        .write("telegram/plain/en/body.hbs", "{{text}}")
        .sample("plain", json!({"text": "a"}));
    let store = templates.load_ok();

    let rendered = store
        .render(
            ChannelKind::Telegram,
            "plain",
            None,
            &json!({"text": "<b>1.5*2</b>"}),
        )
        .unwrap();
    assert_eq!(
        rendered.content,
        Content::Telegram {
            text: "<b>1.5*2</b>".to_owned(),
            parse_mode: ParseMode::Plain,
        }
    );
}

#[test]
fn locale_fallback_order() {
    let templates = TempTemplates::new();
    templates
        .write("sms/greeting/en/body.hbs", "Hello")
        .write("sms/greeting/de/body.hbs", "Hallo")
        .write("sms/greeting/de-AT/body.hbs", "Servus")
        .sample("greeting", json!({}));
    let store = templates.load_ok();

    let cases = [
        (None, "en", "Hello"),
        (Some("en"), "en", "Hello"),
        (Some("de-AT"), "de-AT", "Servus"),
        (Some("de_at"), "de-AT", "Servus"),
        (Some("de-AT-x-private"), "de-AT", "Servus"),
        (Some("de-CH"), "de", "Hallo"),
        (Some("de"), "de", "Hallo"),
        (Some("fr-FR"), "en", "Hello"),
        (Some(""), "en", "Hello"),
    ];
    for (requested, locale, body) in cases {
        let rendered = store
            .render(ChannelKind::Sms, "greeting", requested, &json!({}))
            .unwrap();
        assert_eq!(rendered.locale, locale, "requested {requested:?}");
        assert_eq!(sms_body(rendered), body, "requested {requested:?}");
    }
}

#[test]
fn syntax_error_names_file_and_line() {
    let templates = TempTemplates::new();
    templates
        .write(
            "sms/broken/en/body.hbs",
            "Hello\nyour render {{project_name} is done",
        )
        .sample("broken", json!({"project_name": "Loft"}));

    let error = templates.load().unwrap_err();

    assert_eq!(error.problems().len(), 1, "{error}");
    let problem = &error.problems()[0];
    assert!(
        problem.location.path.ends_with("sms/broken/en/body.hbs"),
        "{problem}"
    );
    assert_eq!(problem.location.line, Some(2));
    assert!(problem.location.column.is_some(), "{problem}");
    assert!(problem.to_string().contains("body.hbs:2:"), "{problem}");
}

#[test]
fn every_problem_listed() {
    let templates = TempTemplates::new();
    templates
        .write("email/welcome/en/subjet.hbs", "Welcome")
        .write("email/welcome/en/text.hbs", "Hi")
        .write("sms/Welcome/en/body.hbs", "Hi")
        .write("sms/welcome/english/body.hbs", "Hi")
        .write("sms/reminder/de/body.hbs", "Hallo")
        .write("push/broken/en/title.hbs", "{{#if x}}open")
        .write("push/broken/en/body.hbs", "Body")
        .write("telegram/both/en/body.hbs", "a")
        .write("telegram/both/en/body.md.hbs", "b")
        .write("emial/welcome/en/subject.hbs", "Hi")
        .sample("welcome", json!({}))
        .sample("broken", json!({"x": true}))
        .sample("both", json!({}));

    let error = templates.load().unwrap_err();

    assert!(
        has_problem(&error, "email/welcome/en/subjet.hbs", "unknown file name"),
        "{error}"
    );
    assert!(
        has_problem(&error, "email/welcome/en", "missing email subject"),
        "{error}"
    );
    assert!(
        has_problem(&error, "sms/Welcome", "invalid template folder"),
        "{error}"
    );
    assert!(
        has_problem(&error, "sms/welcome/english", "invalid locale folder"),
        "{error}"
    );
    assert!(
        has_problem(&error, "sms/reminder", "missing the default locale"),
        "{error}"
    );
    assert!(
        has_problem(&error, "sms/welcome", "missing the default locale"),
        "{error}"
    );
    assert!(
        has_problem(&error, "samples/reminder.json", "missing sample"),
        "{error}"
    );
    assert!(
        has_problem(&error, "push/broken/en/title.hbs", "invalid template"),
        "{error}"
    );
    assert!(
        has_problem(&error, "telegram/both/en", "conflicting Telegram bodies"),
        "{error}"
    );
    assert!(has_problem(&error, "emial", "unexpected entry"), "{error}");
    assert_eq!(error.problems().len(), 10, "{error}");
    assert_eq!(error.to_string().lines().count(), error.problems().len());
}

#[test]
fn line_break_in_subject_rejected() {
    let templates = TempTemplates::new();
    templates
        .write(
            "email/shipped/en/subject.hbs",
            "Order {{order_ref}} shipped\n",
        )
        .write(
            "email/shipped/en/text.hbs",
            "Your order {{order_ref}} is on its way.\n",
        )
        .write("push/shipped/en/title.hbs", "Order {{order_ref}} shipped\n")
        .write("push/shipped/en/body.hbs", "It is on its way.\n")
        .sample("shipped", json!({"order_ref": "A-1001"}));
    let store = templates.load_ok();

    let subject = email(
        store
            .render(
                ChannelKind::Email,
                "shipped",
                None,
                &json!({"order_ref": "A-1001"}),
            )
            .unwrap(),
    )
    .subject;
    assert_eq!(subject, "Order A-1001 shipped");

    for order_ref in ["A-1\r\nBcc: victim@example.com", "A-1\nX", "A-1\rX"] {
        for channel in [ChannelKind::Email, ChannelKind::Push] {
            let error = store
                .render(channel, "shipped", None, &json!({"order_ref": order_ref}))
                .unwrap_err();
            let RenderError::InvalidOutput { part, .. } = &error else {
                panic!("expected invalid output for {order_ref:?} on {channel}, got {error:?}");
            };
            assert!(part.contains("subject") || part.contains("title"), "{part}");
            assert_eq!(error.kind(), FailureKind::InvalidContent);
        }
    }
}

#[test]
fn multi_line_subject_fails_at_load() {
    let templates = TempTemplates::new();
    templates
        .write("email/digest/en/subject.hbs", "Your digest\nfor {{week}}\n")
        .write("email/digest/en/text.hbs", "Digest")
        .sample("digest", json!({"week": "week 12"}));

    let error = templates.load().unwrap_err();

    assert!(
        has_problem(&error, "email/digest/en/subject.hbs", "line break"),
        "{error}"
    );
}

#[test]
fn unknown_template_error() {
    let templates = TempTemplates::new();
    templates
        .write("sms/welcome/en/body.hbs", "Hi")
        .sample("welcome", json!({}));
    let store = templates.load_ok();

    assert!(store.has_template(ChannelKind::Sms, "welcome"));
    assert!(!store.has_template(ChannelKind::Email, "welcome"));
    assert!(!store.has_template(ChannelKind::Sms, "goodbye"));

    for (channel, template) in [
        (ChannelKind::Sms, "goodbye"),
        (ChannelKind::Email, "welcome"),
    ] {
        let error = store
            .render(channel, template, None, &json!({}))
            .unwrap_err();
        assert!(
            matches!(error, RenderError::UnknownTemplate { .. }),
            "{error:?}"
        );
        assert_eq!(error.kind(), FailureKind::UnknownTemplate);
    }
}

#[test]
fn invalid_variables_rejected() {
    let templates = TempTemplates::new();
    templates
        .write("sms/welcome/en/body.hbs", "Hi")
        .sample("welcome", json!({}));
    let store = templates.load_ok();

    let error = store
        .render(ChannelKind::Sms, "welcome", None, &json!(["a"]))
        .unwrap_err();
    assert!(
        matches!(error, RenderError::InvalidVariables { found: "an array" }),
        "{error:?}"
    );
    assert_eq!(error.kind(), FailureKind::InvalidMessage);

    let rendered = store
        .render(ChannelKind::Sms, "welcome", None, &Value::Null)
        .unwrap();
    assert_eq!(sms_body(rendered), "Hi");
}

#[test]
fn webhook_data_keeps_variables() {
    let templates = TempTemplates::new();
    templates
        .write("webhook/event/en/message.hbs", "Render {{id}} done\n")
        .sample("event", json!({"id": "r1"}));
    let store = templates.load_ok();

    let variables = json!({"id": "r2", "note": null});
    let rendered = store
        .render(ChannelKind::Webhook, "event", None, &variables)
        .unwrap();
    assert_eq!(
        rendered.content,
        Content::Webhook {
            message: "Render r2 done".to_owned(),
            data: variables,
        }
    );
}

#[test]
fn partial_layout_wraps_html_body() {
    let templates = TempTemplates::new();
    templates
        .write(
            "partials/layout.hbs",
            "<h1>{{heading}}</h1>\n{{> @partial-block}}<footer>{{footer}}</footer>\n",
        )
        .write("email/hello/en/subject.hbs", "Hello")
        .write("email/hello/en/text.hbs", "Hello {{name}}")
        .write(
            "email/hello/en/html.hbs",
            "{{#> layout heading=\"Hi & welcome\"}}<p>{{name}}</p>\n{{/layout}}",
        )
        .sample("hello", json!({"name": "Ada", "footer": "FlatRender"}));
    let store = templates.load_ok();

    let html = email(
        store
            .render(
                ChannelKind::Email,
                "hello",
                None,
                &json!({"name": "<Ada>", "footer": "F"}),
            )
            .unwrap(),
    )
    .html;
    assert_eq!(
        html.as_deref(),
        Some("<h1>Hi &amp; welcome</h1>\n<p>&lt;Ada&gt;</p>\n<footer>F</footer>\n")
    );

    let error = store
        .render(ChannelKind::Email, "hello", None, &json!({"name": "Ada"}))
        .unwrap_err();
    let RenderError::MissingVariable { variable, location } = &error else {
        panic!("expected a missing variable, got {error:?}");
    };
    assert_eq!(variable, "footer");
    assert!(location.path.ends_with("partials/layout.hbs"), "{location}");
}

#[test]
fn partial_problems_reported_at_load() {
    let templates = TempTemplates::new();
    templates
        .write("partials/signature.hbs", "Regards, {{team_nmae}}")
        .write("sms/hello/en/body.hbs", "Hi {{> signature}}")
        .write("sms/bye/en/body.hbs", "Bye {{> signatur}}")
        .sample("hello", json!({"team_name": "FlatRender"}))
        .sample("bye", json!({}));

    let error = templates.load().unwrap_err();

    assert!(
        has_problem(&error, "partials/signature.hbs", "`team_nmae`"),
        "{error}"
    );
    assert!(
        has_problem(&error, "sms/bye/en/body.hbs", "missing partial `signatur`"),
        "{error}"
    );
    assert_eq!(error.problems().len(), 2, "{error}");
}

#[test]
fn templates_listed_with_locales() {
    let templates = TempTemplates::new();
    templates
        .write("sms/welcome/en/body.hbs", "Hi")
        .write("sms/welcome/de/body.hbs", "Hallo")
        .write("push/welcome/en/title.hbs", "Hi")
        .write("push/welcome/en/body.hbs", "Welcome")
        .sample("welcome", json!({}));
    let store = templates.load_ok();

    let listed: Vec<(ChannelKind, &str, Vec<&str>)> = store.templates().collect();
    assert_eq!(
        listed,
        [
            (ChannelKind::Sms, "welcome", vec!["de", "en"]),
            (ChannelKind::Push, "welcome", vec!["en"]),
        ]
    );
    assert_eq!(store.sample("welcome"), Some(&json!({})));
}

// The starter templates shipped in the repository.

/// Templates that the service's producers send, with the variables each needs.
const STARTER_TEMPLATES: &[(&str, &[&str])] = &[
    ("welcome", &["user_name", "dashboard_url"]),
    ("render_completed", &["project_name", "download_url"]),
    (
        "render_failed",
        &["project_name", "error_message", "support_url"],
    ),
    ("payment_failed", &["amount", "currency", "retry_url"]),
    (
        "quota_warning",
        &["used_percent", "quota_name", "upgrade_url"],
    ),
];

fn starter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

fn load_starter_templates() -> TemplateStore {
    match TemplateStore::load(&starter_dir(), "en") {
        Ok(store) => store,
        Err(error) => panic!("the starter templates failed to load:\n{error}"),
    }
}

#[test]
fn starter_templates_render() {
    let store = load_starter_templates();

    for (template, variables) in STARTER_TEMPLATES {
        let sample = store.sample(template).unwrap();
        for variable in *variables {
            assert!(
                sample.get(variable).is_some(),
                "samples/{template}.json lacks {variable}"
            );
        }
        for channel in ChannelKind::ALL {
            assert!(
                store.has_template(channel, template),
                "missing {channel}/{template}"
            );
        }
    }

    for (channel, template, locales) in store.templates() {
        assert!(locales.contains(&"en"), "{channel}/{template} lacks en");
        assert!(locales.contains(&"de"), "{channel}/{template} lacks de");
        let sample = store.sample(template).unwrap();
        for locale in locales {
            let rendered = store
                .render(channel, template, Some(locale), sample)
                .unwrap();
            assert_eq!(rendered.locale, locale);
            assert_content_filled(&rendered.content, channel, template, locale);
        }
    }
}

fn assert_content_filled(content: &Content, channel: ChannelKind, template: &str, locale: &str) {
    let texts: Vec<&str> = match content {
        Content::Email(email) => {
            let html = email.html.as_deref();
            assert!(
                html.is_some(),
                "{channel}/{template}/{locale} has no HTML body"
            );
            vec![&email.subject, &email.text, html.unwrap_or_default()]
        }
        Content::Sms { body } => vec![body],
        Content::Telegram { text, .. } => vec![text],
        Content::Push { title, body } => vec![title, body],
        Content::Webhook { message, .. } => vec![message],
    };
    for text in texts {
        assert!(
            !text.trim().is_empty(),
            "{channel}/{template}/{locale} renders empty text"
        );
        assert!(
            !text.contains("{{"),
            "{channel}/{template}/{locale} renders a raw tag"
        );
    }
}

/// The GSM 03.38 basic character set, which an SMS encodes in 7 bits each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM 03.38 extension table, which take two septets each.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// Returns the number of GSM-7 septets of `text`, or `None` when `text` has
/// a character outside GSM-7 and would be sent as UCS-2.
fn gsm7_septets(text: &str) -> Option<usize> {
    text.chars().try_fold(0, |septets, c| {
        if GSM7_BASIC.contains(c) {
            Some(septets + 1)
        } else if GSM7_EXTENSION.contains(c) {
            Some(septets + 2)
        } else {
            None
        }
    })
}

#[test]
fn gsm7_septet_count() {
    assert_eq!(gsm7_septets("Hallo Jürgen, 5 €"), Some(18));
    assert_eq!(gsm7_septets("Fertig ✓"), None);
}

#[test]
fn starter_sms_fit_one_segment() {
    let store = load_starter_templates();

    for (channel, template, locales) in store.templates() {
        if channel != ChannelKind::Sms {
            continue;
        }
        let sample = store.sample(template).unwrap();
        for locale in locales {
            let body = sms_body(
                store
                    .render(channel, template, Some(locale), sample)
                    .unwrap(),
            );
            let septets = gsm7_septets(&body);
            assert!(
                septets.is_some(),
                "sms/{template}/{locale} is not GSM-7: {body}"
            );
            assert!(
                septets.unwrap_or_default() <= 160,
                "sms/{template}/{locale} has {septets:?} septets: {body}"
            );
        }
    }
}
