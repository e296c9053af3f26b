//! Micro-benchmarks of the WebSocket codec: encoding a server frame (once per published
//! message, or per reply), decoding a masked client frame (once per client message), decoding
//! a server frame in a client, and permessage-deflate: compressing a 2 KB JSON message (once
//! per publication and node) and inflating it (once per delivery, in the client).
//!
//! Run with `cargo bench -p wirehub-ws`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirehub_ws::{Decoder, OpCode, encode_frame, write_header};

const SIZES: [(&str, usize); 3] = [("64B", 64), ("1KiB", 1024), ("64KiB", 65_536)];

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame");
    for (name, size) in SIZES {
        let payload = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| encode_frame(OpCode::Text, black_box(&payload)));
        });
    }
    group.bench_function("header_only", |b| {
        let mut out = BytesMut::with_capacity(16);
        b.iter(|| {
            out.clear();
            write_header(&mut out, OpCode::Text, black_box(70_000));
            out.len()
        });
    });
    group.finish();
}

/// A masked client text frame, as a browser would send it.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        len if len < 126 => frame.push(0x80 | len as u8),
        len if len <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

/// Decoding one frame of each size, as made by `frame`, with a decoder from `decoder`.
fn decode_group(
    c: &mut Criterion,
    group: &str,
    frame: impl Fn(&[u8]) -> Vec<u8>,
    decoder: impl Fn() -> Decoder,
) {
    let mut group = c.benchmark_group(group);
    for (name, size) in SIZES {
        let frame = frame(&vec![b'x'; size]);
        let mut decoder = decoder();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&frame[..]);
                decoder.decode(black_box(&mut buf)).is_ok()
            });
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    decode_group(c, "decode_client_frame", client_frame, || {
        Decoder::new(1 << 20)
    });
}

fn decode_in_client(c: &mut Criterion) {
    let server_frame = |payload: &[u8]| encode_frame(OpCode::Text, payload).to_vec();
    decode_group(c, "decode_server_frame", server_frame, || {
        Decoder::for_client(1 << 20)
    });
}

/// About 2 KB of chat-like JSON.
fn json_2k() -> Vec<u8> {
    let items: Vec<String> = (0..24)
        .map(|i| format!(r#"{{"id":{i},"user":"user-{i}","text":"the quick brown fox {i}"}}"#))
        .collect();
    format!(
        r#"{{"type":"message","channel":"chat","data":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn deflate(c: &mut Criterion) {
    let json = json_2k();
    let mut group = c.benchmark_group("deflate_2KB_json");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("compress", |b| {
        b.iter(|| wirehub_ws::deflate_frame(OpCode::Text, black_box(&json)));
    });
    let frame = wirehub_ws::deflate_frame(OpCode::Text, &json).expect("compressible");
    let mut decoder = Decoder::for_client(1 << 20).with_inflate(false, 1 << 20);
    group.bench_function("inflate", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&frame[..]);
            decoder.decode(black_box(&mut buf)).is_ok()
        });
    });
    group.finish();
}

criterion_group!(benches, encode, decode, decode_in_client, deflate);
criterion_main!(benches);
