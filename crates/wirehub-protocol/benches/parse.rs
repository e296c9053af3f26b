//! Micro-benchmarks of the protocol's hot path: parsing a client message (every `publish`
//! goes through it) and encoding a `message` delivery (once per publish, shared by every
//! subscriber).
//!
//! Run with `cargo bench -p wirehub-protocol`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirehub_protocol::{encode_message, parse_client_message};

fn parse(c: &mut Criterion) {
    let chat_line = format!(
        r#"{{"type":"publish","channel":"room:42","id":7,"data":{{"user":"ada","text":"{}"}}}}"#,
        "x".repeat(1000)
    );
    let cases = [
        (
            "publish_small",
            r#"{"type":"publish","channel":"bench-fanout","id":42,"data":{"t":1700000000000,"s":17}}"#
                .to_owned(),
        ),
        ("publish_1k", chat_line),
        (
            "subscribe",
            r#"{"type":"subscribe","channel":"chat:lobby","id":1}"#.to_owned(),
        ),
        ("ping", r#"{"type":"ping","id":3}"#.to_owned()),
    ];
    let mut group = c.benchmark_group("parse_client_message");
    for (name, text) in &cases {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| parse_client_message(black_box(text)).is_ok());
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_message");
    for (name, data) in [
        ("small", r#"{"t":1700000000000,"s":17}"#.to_owned()),
        ("1k", format!(r#"{{"text":"{}"}}"#, "x".repeat(1000))),
    ] {
        let mut out = Vec::with_capacity(2048);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_message(
                    &mut out,
                    black_box("bench-fanout"),
                    123_456,
                    data.as_bytes(),
                );
                out.len()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
