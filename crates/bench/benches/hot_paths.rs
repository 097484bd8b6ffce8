//! Micro-benchmarks of the per-message work of notify-core: parsing the
//! envelope, checking the headers, and rendering the shipped templates.
//!
//! Run with `cargo bench -p bench --bench hot_paths`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lapin::types::{AMQPValue, LongString, ShortString};
use notify_core::envelope::{parse_dispatch, ParsedBody};
use notify_core::headers::{outgoing_properties, read_dispatch_headers, MAX_RETRIES, RETRY_COUNT};
use notify_core::TemplateStore;
use serde_json::json;

fn dispatch_body(padding: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0001",
        "event_type": "notification.created.v1",
        "event_time": "2026-05-27T10:15:00.000000Z",
        "tenant_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0002",
        "user_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0003",
        "trace_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0004",
        "correlation_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0005",
        "producer": "render-service",
        "data": {
            "notification_id": "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f000a",
            "channel": "email",
            "template": "render_completed",
            "locale": "de",
            "recipient": {"email": "user@example.com", "name": "Ada"},
            "variables": {
                "project_name": "Riverside Loft",
                "download_url": "https://app.example.com/renders/8f3a2c1e/download",
                "padding": "x".repeat(padding),
            },
            "expires_at": "2026-05-27T11:15:00Z"
        }
    }))
    .expect("a JSON value serializes")
}

fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_dispatch");
    for (name, padding) in [("small", 0), ("16_KiB_padding", 16 * 1024)] {
        let body = dispatch_body(padding);
        assert!(matches!(parse_dispatch(&body), ParsedBody::Valid(_)), "the benchmark body must be valid");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_dispatch(black_box(&body))));
    }
    group.finish();
}

fn headers(c: &mut Criterion) {
    let properties = outgoing_properties(
        "notification.created.v1",
        "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0002",
        "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0004",
        "0b6f1c2a-5d0e-4f59-8a39-3c1f8a3f0001",
    );
    let mut table = properties.headers().clone().expect("outgoing properties carry headers");
    table.insert(ShortString::from(RETRY_COUNT), AMQPValue::LongInt(1));
    table.insert(ShortString::from(MAX_RETRIES), AMQPValue::LongString(LongString::from("5")));
    let properties = properties.with_headers(table);
    read_dispatch_headers(&properties, 3).expect("the benchmark headers must be valid");
    c.bench_function("read_dispatch_headers", |b| b.iter(|| read_dispatch_headers(black_box(&properties), 3)));
}

fn templates(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let store = TemplateStore::load(&dir, "en").expect("the shipped templates load");
    let mut group = c.benchmark_group("render");
    // Every shipped channel's render_completed, with its sample variables, in the default locale.
    for (channel, name, _) in store.templates() {
        if name != "render_completed" {
            continue;
        }
        let variables = store.sample(name).expect("every template has a sample").clone();
        group.bench_function(format!("{channel}/{name}"), |b| {
            b.iter(|| store.render(channel, black_box(name), None, black_box(&variables)))
        });
    }
    // Every shipped template in every locale once per iteration.
    let all: Vec<_> = store
        .templates()
        .flat_map(|(channel, name, locales)| {
            let variables = store.sample(name).expect("every template has a sample").clone();
            locales.into_iter().map(move |locale| (channel, name, locale.to_owned(), variables.clone()))
        })
        .collect();
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("all_shipped", |b| {
        b.iter(|| {
            for (channel, name, locale, variables) in &all {
                let rendered = store.render(*channel, name, Some(locale), variables);
                black_box(rendered.expect("every shipped template renders its sample"));
            }
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = envelope, headers, templates
}
criterion_main!(benches);
