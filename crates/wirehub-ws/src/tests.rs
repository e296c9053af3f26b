//! Decoder and encoder tests: every RFC 6455 §5 rule, feeding at every byte boundary,
//! incremental UTF-8, size limits, round trips and property tests.
//!
//! The tests play the client with their own tiny masked-frame encoder, independent of the
//! crate's server encoder.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::{
    CloseFrame, Decoder, Message, OpCode, ProtocolError, accept_key, encode_close, encode_frame,
    header_len, write_frame, write_header,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const FIN: u8 = 0x80;
const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BIN: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A client frame: first byte `b0` (FIN/RSV/opcode as given), masked with `key` when set.
fn raw_frame(b0: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match key {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(b0, payload, Some(KEY))
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn text(s: &str) -> Message {
    Message::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn binary(b: &[u8]) -> Message {
    Message::Binary(Bytes::copy_from_slice(b))
}

fn ping(b: &[u8]) -> Message {
    Message::Ping(Bytes::copy_from_slice(b))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned(),
    }))
}

/// What a decoder produced from a byte stream: the messages, then the error that stopped it.
type Outcome = (Vec<Message>, Option<ProtocolError>);

/// Drains every message the decoder can produce from `buf`.
fn drain(dec: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<Message>) -> Option<ProtocolError> {
    loop {
        match dec.decode(buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

/// Feeds `input` in chunks of the given sizes (cycled), decoding after each chunk.
fn run_chunked(max: usize, input: &[u8], chunks: &[usize]) -> Outcome {
    let mut dec = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if let Some(e) = drain(&mut dec, &mut buf, &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

/// Decodes `input` at once and byte by byte; both must give `expected`.
fn check_max(max: usize, input: &[u8], expected: &[Message], error: Option<ProtocolError>) {
    let whole = run_chunked(max, input, &[usize::MAX]);
    assert_eq!(whole, (expected.to_vec(), error.clone()), "whole buffer");
    let bytewise = run_chunked(max, input, &[1]);
    assert_eq!(bytewise, (expected.to_vec(), error), "byte by byte");
}

fn check(input: &[u8], expected: &[Message], error: Option<ProtocolError>) {
    check_max(1 << 20, input, expected, error);
}

fn check_err(input: &[u8], error: ProtocolError) {
    check(input, &[], Some(error));
}

// ---- single frames -------------------------------------------------------------------

#[test]
fn single_frames_of_each_kind() {
    check(&frame(FIN | TEXT, b"hello"), &[text("hello")], None);
    check(
        &frame(FIN | BIN, &[0, 1, 2, 255]),
        &[binary(&[0, 1, 2, 255])],
        None,
    );
    check(&frame(FIN | PING, b"p"), &[ping(b"p")], None);
    check(
        &frame(FIN | PONG, b"q"),
        &[Message::Pong(Bytes::from_static(b"q"))],
        None,
    );
    check(&frame(FIN | TEXT, b""), &[text("")], None);
    check(&frame(FIN | BIN, b""), &[binary(b"")], None);
    check(&frame(FIN | PING, b""), &[ping(b"")], None);
}

#[test]
fn several_frames_in_one_buffer() {
    let input = cat(&[
        frame(FIN | TEXT, b"a"),
        frame(FIN | BIN, b"b"),
        frame(FIN | PING, b"c"),
        frame(FIN | TEXT, "κόσμε".as_bytes()),
    ]);
    check(
        &input,
        &[text("a"), binary(b"b"), ping(b"c"), text("κόσμε")],
        None,
    );
}

#[test]
fn length_encodings_7_16_64_bit() {
    for len in [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let input = frame(FIN | BIN, &payload);
        let expected_header = 2
            + 4
            + match len {
                0..=125 => 0,
                126..=65535 => 2,
                _ => 8,
            };
        assert_eq!(input.len(), expected_header + len);
        let out = run_chunked(1 << 20, &input, &[usize::MAX]);
        assert_eq!(out, (vec![binary(&payload)], None), "len {len}");
    }
    // Byte-by-byte on a 16-bit and a 64-bit frame too.
    let payload = vec![b'x'; 300];
    check(
        &frame(FIN | TEXT, &payload),
        &[text(&"x".repeat(300))],
        None,
    );
    let payload = vec![7u8; 65536];
    check(&frame(FIN | BIN, &payload), &[binary(&payload)], None);
}

#[test]
fn non_minimal_length_encoding_is_accepted() {
    // 5 bytes announced with the 16-bit form.
    let mut input = vec![FIN | TEXT, 0x80 | 126, 0, 5];
    input.extend_from_slice(&KEY);
    input.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    check(&input, &[text("hello")], None);
}

// ---- header rules --------------------------------------------------------------------

#[test]
fn unmasked_frames_are_refused() {
    check_err(
        &raw_frame(FIN | TEXT, b"hi", None),
        ProtocolError::UnmaskedFrame,
    );
    check_err(
        &raw_frame(FIN | PING, b"", None),
        ProtocolError::UnmaskedFrame,
    );
}

#[test]
fn reserved_bits_are_refused() {
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        check_err(&frame(FIN | rsv | TEXT, b"x"), ProtocolError::ReservedBits);
        check_err(&frame(FIN | rsv | PING, b""), ProtocolError::ReservedBits);
    }
}

#[test]
fn unknown_opcodes_are_refused() {
    for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        check_err(&frame(FIN | op, b""), ProtocolError::UnknownOpCode(op));
    }
    // After a valid message, the valid message still comes out first.
    let input = cat(&[frame(FIN | TEXT, b"ok"), frame(FIN | 5, b"")]);
    check(&input, &[text("ok")], Some(ProtocolError::UnknownOpCode(5)));
}

#[test]
fn control_frame_rules() {
    check_err(&frame(PING, b""), ProtocolError::FragmentedControl);
    check_err(&frame(CLOSE, b""), ProtocolError::FragmentedControl);
    check_err(&frame(FIN | PING, &[0; 126]), ProtocolError::ControlTooLong);
    check_err(
        &frame(FIN | PONG, &[0; 70000]),
        ProtocolError::ControlTooLong,
    );
    check(&frame(FIN | PING, &[9; 125]), &[ping(&[9; 125])], None);
}

#[test]
fn control_errors_need_only_the_header() {
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(&[FIN | PING, 0x80 | 126][..]);
    assert_eq!(dec.decode(&mut buf), Err(ProtocolError::ControlTooLong));
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(&[0x40 | TEXT][..]);
    assert_eq!(dec.decode(&mut buf), Err(ProtocolError::ReservedBits));
}

#[test]
fn length_with_msb_set_is_refused() {
    let mut input = vec![FIN | BIN, 0x80 | 127];
    input.extend_from_slice(&(1u64 << 63).to_be_bytes());
    input.extend_from_slice(&KEY);
    check_max(usize::MAX, &input, &[], Some(ProtocolError::InvalidLength));
}

#[test]
fn close_code_mapping() {
    assert_eq!(ProtocolError::UnmaskedFrame.close_code(), 1002);
    assert_eq!(ProtocolError::ReservedBits.close_code(), 1002);
    assert_eq!(ProtocolError::InvalidLength.close_code(), 1002);
    assert_eq!(ProtocolError::InvalidCloseCode(5).close_code(), 1002);
    assert_eq!(ProtocolError::InvalidClosePayload.close_code(), 1002);
    assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
    assert_eq!(
        ProtocolError::TooLarge { size: 2, max: 1 }.close_code(),
        1009
    );
}

// ---- fragmentation -------------------------------------------------------------------

#[test]
fn fragments_are_reassembled() {
    let input = cat(&[
        frame(TEXT, b"Hel"),
        frame(CONT, b"lo, "),
        frame(FIN | CONT, b"world"),
    ]);
    check(&input, &[text("Hello, world")], None);
    let input = cat(&[
        frame(BIN, b"\x00"),
        frame(CONT, b""),
        frame(FIN | CONT, b"\xff"),
    ]);
    check(&input, &[binary(b"\x00\xff")], None);
    // Empty fragments only.
    let input = cat(&[frame(TEXT, b""), frame(FIN | CONT, b"")]);
    check(&input, &[text("")], None);
}

#[test]
fn control_frames_between_fragments_come_out_at_once() {
    let input = cat(&[
        frame(TEXT, b"fra"),
        frame(FIN | PING, b"1"),
        frame(CONT, b"gme"),
        frame(FIN | PONG, b"2"),
        frame(FIN | PING, b"3"),
        frame(FIN | CONT, b"nted"),
        frame(FIN | BIN, b"next"),
    ]);
    check(
        &input,
        &[
            ping(b"1"),
            Message::Pong(Bytes::from_static(b"2")),
            ping(b"3"),
            text("fragmented"),
            binary(b"next"),
        ],
        None,
    );
    // A close in the middle of a fragmented message is returned too.
    let input = cat(&[frame(TEXT, b"a"), frame(FIN | CLOSE, &[0x03, 0xe8])]);
    check(&input, &[close(1000, "")], None);
}

#[test]
fn mid_message_state() {
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(&frame(TEXT, b"abc")[..]);
    assert!(!dec.is_mid_message());
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(buf.is_empty(), "complete fragments are consumed");
    assert!(dec.is_mid_message());
    assert_eq!(dec.buffered_len(), 3);
    buf.extend_from_slice(&frame(FIN | CONT, b"d"));
    assert_eq!(dec.decode(&mut buf), Ok(Some(text("abcd"))));
    assert!(!dec.is_mid_message());
    assert_eq!(dec.buffered_len(), 0);
}

#[test]
fn continuation_without_message_is_refused() {
    check_err(
        &frame(FIN | CONT, b"x"),
        ProtocolError::UnexpectedContinuation,
    );
    check_err(&frame(CONT, b"x"), ProtocolError::UnexpectedContinuation);
    let input = cat(&[frame(FIN | TEXT, b"done"), frame(FIN | CONT, b"x")]);
    check(
        &input,
        &[text("done")],
        Some(ProtocolError::UnexpectedContinuation),
    );
}

#[test]
fn new_message_while_fragmented_is_refused() {
    let input = cat(&[frame(TEXT, b"a"), frame(FIN | TEXT, b"b")]);
    check_err(&input, ProtocolError::ExpectedContinuation);
    let input = cat(&[frame(BIN, b"a"), frame(BIN, b"b")]);
    check_err(&input, ProtocolError::ExpectedContinuation);
    let input = cat(&[
        frame(TEXT, b"a"),
        frame(FIN | PING, b""),
        frame(FIN | BIN, b"b"),
    ]);
    check(
        &input,
        &[ping(b"")],
        Some(ProtocolError::ExpectedContinuation),
    );
}

// ---- UTF-8 ---------------------------------------------------------------------------

#[test]
fn invalid_utf8_in_a_single_frame() {
    check_err(&frame(FIN | TEXT, b"\xff"), ProtocolError::InvalidUtf8);
    check_err(
        &frame(FIN | TEXT, b"ok\xc0\xaf"),
        ProtocolError::InvalidUtf8,
    );
    check_err(
        &frame(FIN | TEXT, b"\xed\xa0\x80"),
        ProtocolError::InvalidUtf8,
    );
    // Truncated code point at the end of a final frame.
    check_err(
        &frame(FIN | TEXT, b"ab\xe2\x82"),
        ProtocolError::InvalidUtf8,
    );
    // Binary is not validated.
    check(&frame(FIN | BIN, b"\xff"), &[binary(b"\xff")], None);
}

#[test]
fn code_point_split_across_fragments() {
    let s = "κόσμε€𝄞".as_bytes();
    for cut in 0..=s.len() {
        let input = cat(&[frame(TEXT, &s[..cut]), frame(FIN | CONT, &s[cut..])]);
        check(&input, &[text("κόσμε€𝄞")], None);
    }
    // One byte per fragment.
    let mut frames: Vec<Vec<u8>> = s.iter().map(|b| frame(CONT, &[*b])).collect();
    frames[0][0] = TEXT;
    frames.push(frame(FIN | CONT, b""));
    check(&cat(&frames), &[text("κόσμε€𝄞")], None);
}

#[test]
fn invalid_byte_fails_at_its_fragment() {
    // The message never finishes: the failure cannot come from end-of-message validation.
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(&frame(TEXT, "κόσμε".as_bytes())[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&frame(CONT, b"\xf4"));
    assert_eq!(
        dec.decode(&mut buf),
        Ok(None),
        "a lead byte may still be completed"
    );
    buf.extend_from_slice(&frame(CONT, b"\x90"));
    assert_eq!(dec.decode(&mut buf), Err(ProtocolError::InvalidUtf8));

    let input = cat(&[
        frame(TEXT, b"valid"),
        frame(CONT, b"\xff"),
        frame(FIN | CONT, b"x"),
    ]);
    check_err(&input, ProtocolError::InvalidUtf8);
    // Truncated code point at the end of the final fragment.
    let input = cat(&[frame(TEXT, b"a\xf0\x9f"), frame(FIN | CONT, b"\x98")]);
    check_err(&input, ProtocolError::InvalidUtf8);
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let whole = frame(
        FIN | TEXT,
        b"hello\xf4\x90\x80\x80world, and much more to come",
    );
    let mut dec = Decoder::new(1 << 20);
    // Valid prefix: needs more, nothing consumed.
    let mut buf = BytesMut::from(&whole[..6 + 5]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 11);
    buf.extend_from_slice(&whole[11..12]);
    assert_eq!(
        dec.decode(&mut buf),
        Ok(None),
        "F4 alone may still be valid"
    );
    buf.extend_from_slice(&whole[12..13]);
    assert_eq!(dec.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
}

#[test]
fn partly_scanned_text_frame_completes_correctly() {
    // A text frame arriving in pieces, followed by another text frame (validator reset).
    let input = cat(&[
        frame(FIN | TEXT, "añb€c𝄞".repeat(40).as_bytes()),
        frame(FIN | TEXT, "z".as_bytes()),
        frame(TEXT, "é".as_bytes()),
        frame(FIN | CONT, "€".repeat(50).as_bytes()),
    ]);
    let expected = [
        text(&"añb€c𝄞".repeat(40)),
        text("z"),
        text(&format!("é{}", "€".repeat(50))),
    ];
    for chunk in [1, 2, 3, 5, 7, 64, 100] {
        let out = run_chunked(1 << 20, &input, &[chunk]);
        assert_eq!(out, (expected.to_vec(), None), "chunk {chunk}");
    }
}

// ---- close frames --------------------------------------------------------------------

#[test]
fn close_frames() {
    check(&frame(FIN | CLOSE, b""), &[Message::Close(None)], None);
    check(&frame(FIN | CLOSE, &[0x03, 0xe8]), &[close(1000, "")], None);
    let mut payload = vec![0x0f, 0xa0];
    payload.extend_from_slice("bye ✓".as_bytes());
    check(&frame(FIN | CLOSE, &payload), &[close(4000, "bye ✓")], None);
    let mut payload = vec![0x03, 0xe9];
    payload.extend_from_slice(&[b'r'; 123]);
    check(
        &frame(FIN | CLOSE, &payload),
        &[close(1001, &"r".repeat(123))],
        None,
    );
}

#[test]
fn close_payload_rules() {
    check_err(
        &frame(FIN | CLOSE, &[0x03]),
        ProtocolError::InvalidClosePayload,
    );
    check_err(
        &frame(FIN | CLOSE, &[0x03, 0xe8, 0xff]),
        ProtocolError::InvalidUtf8,
    );
    check_err(
        &frame(FIN | CLOSE, &[0; 126]),
        ProtocolError::ControlTooLong,
    );
}

#[test]
fn close_codes() {
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    for code in valid {
        check(
            &frame(FIN | CLOSE, &u16::to_be_bytes(code)),
            &[close(code, "")],
            None,
        );
    }
    let invalid = [
        0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in invalid {
        check_err(
            &frame(FIN | CLOSE, &u16::to_be_bytes(code)),
            ProtocolError::InvalidCloseCode(code),
        );
    }
}

// ---- size limit ----------------------------------------------------------------------

#[test]
fn size_limit_is_inclusive() {
    check_max(5, &frame(FIN | TEXT, b"12345"), &[text("12345")], None);
    check_max(
        5,
        &frame(FIN | TEXT, b"123456"),
        &[],
        Some(ProtocolError::TooLarge { size: 6, max: 5 }),
    );
}

#[test]
fn oversized_frame_is_refused_from_its_header() {
    // 64-bit length announcing 1 GiB; only the 10 length bytes have arrived (not even the
    // mask or any payload).
    let mut dec = Decoder::new(16 << 20);
    let mut buf = BytesMut::from(&[FIN | BIN, 0x80 | 127][..]);
    buf.extend_from_slice(&(1u64 << 30).to_be_bytes());
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtocolError::TooLarge {
            size: 1 << 30,
            max: 16 << 20
        })
    );
    // 16-bit length over a small limit.
    let mut dec = Decoder::new(100);
    let mut buf = BytesMut::from(&[FIN | TEXT, 0x80 | 126, 0x01, 0x00][..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtocolError::TooLarge {
            size: 256,
            max: 100
        })
    );
    // Huge length on a decoder without a practical limit.
    let mut dec = Decoder::new(usize::MAX);
    let mut buf = BytesMut::from(&[FIN | BIN, 0x80 | 127][..]);
    buf.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    buf.extend_from_slice(&KEY);
    assert_eq!(dec.decode(&mut buf), Ok(None));
}

#[test]
fn size_limit_counts_accumulated_fragments() {
    let input = cat(&[
        frame(TEXT, b"1234"),
        frame(CONT, b"5678"),
        frame(FIN | CONT, b"9"),
    ]);
    check_max(9, &input, &[text("123456789")], None);
    check_max(
        8,
        &input,
        &[],
        Some(ProtocolError::TooLarge { size: 9, max: 8 }),
    );
    // The refusal comes from the last fragment's header, before its payload.
    let mut dec = Decoder::new(8);
    let mut buf = BytesMut::from(&cat(&[frame(TEXT, b"1234"), frame(CONT, b"5678")])[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&[FIN | CONT, 0x81]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtocolError::TooLarge { size: 9, max: 8 })
    );
    // Control frames are not counted against the message.
    let input = cat(&[
        frame(TEXT, b"1234"),
        frame(FIN | PING, b"12345678"),
        frame(FIN | CONT, b""),
    ]);
    check_max(4, &input, &[ping(b"12345678"), text("1234")], None);
}

// ---- buffer handling -----------------------------------------------------------------

#[test]
fn incomplete_frames_consume_nothing() {
    let input = frame(FIN | BIN, &[1; 300]);
    let mut dec = Decoder::new(1 << 20);
    for end in 0..input.len() {
        let mut buf = BytesMut::from(&input[..end]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &input[..end]);
    }
}

#[test]
fn trailing_bytes_stay_in_the_buffer() {
    let mut input = frame(FIN | TEXT, b"one");
    let second = frame(FIN | TEXT, b"two");
    input.extend_from_slice(&second[..3]);
    let mut dec = Decoder::new(1 << 20);
    let mut buf = BytesMut::from(&input[..]);
    assert_eq!(dec.decode(&mut buf), Ok(Some(text("one"))));
    assert_eq!(&buf[..], &second[..3]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&second[3..]);
    assert_eq!(dec.decode(&mut buf), Ok(Some(text("two"))));
    assert!(buf.is_empty());
}

// ---- encoder -------------------------------------------------------------------------

/// Parses an unmasked server frame: (first byte, payload, total length).
fn parse_server_frame(bytes: &[u8]) -> (u8, &[u8]) {
    assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
    let (len, start) = match bytes[1] & 0x7f {
        126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(bytes.len(), start + len, "one frame, nothing else");
    (bytes[0], &bytes[start..])
}

#[test]
fn header_lengths() {
    assert_eq!(header_len(0), 2);
    assert_eq!(header_len(125), 2);
    assert_eq!(header_len(126), 4);
    assert_eq!(header_len(65535), 4);
    assert_eq!(header_len(65536), 10);
}

#[test]
fn encode_frame_layout() {
    for len in [0, 1, 125, 126, 65535, 65536, 100_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
        let bytes = encode_frame(OpCode::Binary, &payload);
        assert_eq!(bytes.len(), header_len(len) + len);
        let (b0, body) = parse_server_frame(&bytes);
        assert_eq!(b0, 0x82);
        assert_eq!(body, &payload[..]);
    }
    assert_eq!(&encode_frame(OpCode::Text, b"Hello")[..], b"\x81\x05Hello");
    assert_eq!(&encode_frame(OpCode::Ping, b"")[..], b"\x89\x00");
    assert_eq!(&encode_frame(OpCode::Pong, b"x")[..], b"\x8a\x01x");
}

#[test]
fn write_frame_appends() {
    let mut out = BytesMut::from(&b"prefix"[..]);
    write_frame(&mut out, OpCode::Text, b"a");
    write_frame(&mut out, OpCode::Binary, &[0; 200]);
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..9], b"\x81\x01a");
    assert_eq!(&out[9..13], b"\x82\x7e\x00\xc8");
    assert_eq!(out.len(), 13 + 200);
    let mut header = BytesMut::new();
    write_header(&mut header, OpCode::Binary, 200);
    assert_eq!(&header[..], &out[9..13]);
}

#[test]
fn encode_close_truncates_on_a_char_boundary() {
    let bytes = encode_close(1000, "");
    assert_eq!(&bytes[..], b"\x88\x02\x03\xe8");
    let bytes = encode_close(1001, "going away");
    let (b0, body) = parse_server_frame(&bytes);
    assert_eq!(b0, 0x88);
    assert_eq!(body, b"\x03\xe9going away");
    // 122 ASCII bytes then a 2-byte char: the char does not fit in 123 bytes.
    let reason = format!("{}é", "a".repeat(122));
    let bytes = encode_close(1011, &reason);
    let (_, body) = parse_server_frame(&bytes);
    assert_eq!(&body[2..], "a".repeat(122).as_bytes());
    let long = "€".repeat(100);
    let bytes = encode_close(4000, &long);
    let (_, body) = parse_server_frame(&bytes);
    assert_eq!(body.len(), 2 + 123);
    assert!(std::str::from_utf8(&body[2..]).is_ok());
}

#[test]
fn accept_key_rfc_example() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        accept_key(b" dGhlIHNhbXBsZSBub25jZQ==\r"),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn server_frames_round_trip_through_the_decoder() {
    // Turn a server frame into the client frame with the same content and decode it.
    for (op, payload, expected) in [
        (OpCode::Text, "héllo".as_bytes().to_vec(), text("héllo")),
        (OpCode::Binary, vec![3; 70_000], binary(&[3; 70_000])),
        (OpCode::Ping, vec![1; 125], ping(&[1; 125])),
        (OpCode::Pong, vec![], Message::Pong(Bytes::new())),
    ] {
        let server = encode_frame(op, &payload);
        let (b0, body) = parse_server_frame(&server);
        let client = frame(b0, body);
        check(&client, &[expected], None);
    }
    let bytes = encode_close(3001, "done");
    let (b0, body) = parse_server_frame(&bytes);
    check(&frame(b0, body), &[close(3001, "done")], None);
}

#[test]
fn opcode_values() {
    for op in [
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ] {
        assert_eq!(OpCode::from_u8(op.as_u8()), Some(op));
    }
    assert_eq!(OpCode::from_u8(3), None);
    assert!(OpCode::Close.is_control() && !OpCode::Continuation.is_control());
}

// ---- property tests ------------------------------------------------------------------

/// One message as a client would send it, possibly fragmented with pings in between.
#[derive(Debug, Clone)]
enum Item {
    Data {
        text: bool,
        payload: Vec<u8>,
        /// Sorted cut points: fragment boundaries inside the payload.
        cuts: Vec<usize>,
        /// Ping payloads sent after the first fragments.
        pings: Vec<Vec<u8>>,
    },
    Control {
        pong: bool,
        payload: Vec<u8>,
    },
}

fn cuts_for(len: usize, idx: &[prop::sample::Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = idx.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

fn item() -> impl Strategy<Value = Item> {
    let pings = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=125), 0..3);
    let cuts = prop::collection::vec(any::<prop::sample::Index>(), 0..5);
    prop_oneof![
        (".{0,40}", cuts.clone(), pings.clone()).prop_map(|(s, idx, pings): (String, _, _)| {
            let payload = s.into_bytes();
            let cuts = cuts_for(payload.len(), &idx);
            Item::Data {
                text: true,
                payload,
                cuts,
                pings,
            }
        }),
        (prop::collection::vec(any::<u8>(), 0..400), cuts, pings).prop_map(
            |(payload, idx, pings)| {
                let cuts = cuts_for(payload.len(), &idx);
                Item::Data {
                    text: false,
                    payload,
                    cuts,
                    pings,
                }
            }
        ),
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..=125))
            .prop_map(|(pong, payload)| Item::Control { pong, payload }),
    ]
}

/// Client bytes and the messages the decoder must produce from them.
fn encode_items(items: &[Item], key_seed: u32) -> (Vec<u8>, Vec<Message>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    let mut n = key_seed;
    let mut next_key = || {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        n.to_be_bytes()
    };
    for item in items {
        match item {
            Item::Data {
                text,
                payload,
                cuts,
                pings,
            } => {
                let mut bounds = vec![0];
                bounds.extend_from_slice(cuts);
                bounds.push(payload.len());
                let count = bounds.len() - 1;
                for i in 0..count {
                    let op = match (i, text) {
                        (0, true) => TEXT,
                        (0, false) => BIN,
                        _ => CONT,
                    };
                    let fin = if i + 1 == count { FIN } else { 0 };
                    let piece = &payload[bounds[i]..bounds[i + 1]];
                    bytes.extend(raw_frame(fin | op, piece, Some(next_key())));
                    if i + 1 < count
                        && let Some(p) = pings.get(i)
                    {
                        bytes.extend(raw_frame(FIN | PING, p, Some(next_key())));
                        expected.push(ping(p));
                    }
                }
                let data = Bytes::copy_from_slice(payload);
                expected.push(if *text {
                    Message::Text(data)
                } else {
                    Message::Binary(data)
                });
            }
            Item::Control { pong, payload } => {
                let op = if *pong { PONG } else { PING };
                bytes.extend(raw_frame(FIN | op, payload, Some(next_key())));
                let data = Bytes::copy_from_slice(payload);
                expected.push(if *pong {
                    Message::Pong(data)
                } else {
                    Message::Ping(data)
                });
            }
        }
    }
    (bytes, expected)
}

/// A frame-shaped byte string: plausible headers (masked, small lengths) with arbitrary
/// payloads, so the fuzzing gets past the first header byte.
fn framish() -> impl Strategy<Value = Vec<u8>> {
    let b0 = prop_oneof![
        Just(FIN | TEXT),
        Just(TEXT),
        Just(FIN | CONT),
        Just(CONT),
        Just(FIN | BIN),
        Just(FIN | CLOSE),
        Just(FIN | PING),
        any::<u8>(),
    ];
    (
        b0,
        prop::collection::vec(any::<u8>(), 0..200),
        any::<[u8; 4]>(),
        any::<u8>(),
    )
        .prop_map(|(b0, payload, key, mode)| {
            let mut f = raw_frame(b0, &payload, Some(key));
            if mode == 0 {
                f[1] &= 0x7f;
            }
            if mode == 1 {
                f.truncate(f.len() / 2);
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        chunks in prop::collection::vec(1usize..40, 1..8),
        max in 0usize..300,
    ) {
        let whole = run_chunked(max, &bytes, &[usize::MAX]);
        let pieces = run_chunked(max, &bytes, &chunks);
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn frame_shaped_garbage_never_panics(
        frames in prop::collection::vec(framish(), 0..12),
        chunks in prop::collection::vec(1usize..40, 1..8),
        max in 0usize..600,
    ) {
        let bytes = frames.concat();
        let whole = run_chunked(max, &bytes, &[usize::MAX]);
        let pieces = run_chunked(max, &bytes, &chunks);
        prop_assert_eq!(whole, pieces);
        // And the decoder keeps not panicking if it is (wrongly) used after an error.
        let mut dec = Decoder::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..20 {
            let _ = dec.decode(&mut buf);
        }
    }

    #[test]
    fn valid_sequences_round_trip(
        items in prop::collection::vec(item(), 0..10),
        key_seed in any::<u32>(),
        chunks in prop::collection::vec(1usize..300, 1..8),
    ) {
        let (bytes, expected) = encode_items(&items, key_seed);
        let out = run_chunked(1 << 20, &bytes, &chunks);
        prop_assert_eq!(out, (expected.clone(), None));
        let whole = run_chunked(1 << 20, &bytes, &[usize::MAX]);
        prop_assert_eq!(whole, (expected, None));
    }
}

// The client's side: unmasked server frames in, masked client frames out.

/// Decodes everything in `input` with a client's decoder, one byte at a time.
fn client_decode(dec: &mut Decoder, input: &[u8]) -> (Vec<Message>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for byte in input {
        buf.extend_from_slice(&[*byte]);
        if let Some(error) = drain(dec, &mut buf, &mut out) {
            return (out, Some(error));
        }
    }
    (out, None)
}

#[test]
fn a_clients_decoder_takes_unmasked_frames_and_refuses_masked_ones() {
    let input = cat(&[
        encode_frame(OpCode::Text, "héllo".as_bytes()).to_vec(),
        encode_frame(OpCode::Ping, b"p").to_vec(),
        raw_frame(TEXT, b"frag", None),
        raw_frame(FIN | CONT, b"ment", None),
        encode_frame(OpCode::Binary, &vec![7; 70_000]).to_vec(),
        encode_close(4100, "slow").to_vec(),
    ]);
    let (messages, error) = client_decode(&mut Decoder::for_client(1 << 20), &input);
    assert_eq!(error, None);
    assert_eq!(
        messages,
        vec![
            text("héllo"),
            ping(b"p"),
            text("fragment"),
            binary(&vec![7; 70_000]),
            close(4100, "slow"),
        ]
    );
    let (_, error) = client_decode(&mut Decoder::for_client(1024), &frame(FIN | TEXT, b"x"));
    assert_eq!(error, Some(ProtocolError::MaskedFrame));
    assert_eq!(ProtocolError::MaskedFrame.close_code(), 1002);
    // Invalid UTF-8 in a partly arrived frame fails at once, as on the server.
    let mut dec = Decoder::for_client(1024);
    let mut buf = BytesMut::from(&raw_frame(FIN | TEXT, b"ab\xffcdef", None)[..5]);
    assert_eq!(dec.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    // The size limit holds from the header alone.
    let (_, error) = client_decode(
        &mut Decoder::for_client(10),
        &encode_frame(OpCode::Text, b"eleven byte")[..4],
    );
    assert!(matches!(
        error,
        Some(ProtocolError::TooLarge { size: 11, max: 10 })
    ));
}

#[test]
fn client_frames_are_masked_and_a_servers_decoder_reads_them() {
    let mask = [1, 2, 3, 4];
    for payload in [&b""[..], b"hi", &[b'z'; 200][..], &[9; 70_000][..]] {
        let frame = crate::encode_client_frame(OpCode::Text, payload, mask);
        assert_eq!(frame[0], FIN | TEXT);
        assert_eq!(frame[1] & 0x80, 0x80, "mask bit");
        assert_eq!(frame.len(), header_len(payload.len()) + 4 + payload.len());
        if payload.len() > 4 {
            assert_ne!(&frame[frame.len() - payload.len()..], payload, "masked");
        }
        let mut buf = BytesMut::from(&frame[..]);
        let mut dec = Decoder::new(1 << 20);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text(Bytes::copy_from_slice(payload))))
        );
        assert!(buf.is_empty());
    }
    let close = crate::encode_client_close(1000, &"é".repeat(100), mask);
    let mut buf = BytesMut::from(&close[..]);
    match Decoder::new(1024).decode(&mut buf) {
        Ok(Some(Message::Close(Some(CloseFrame { code: 1000, reason })))) => {
            assert_eq!(
                reason,
                "é".repeat(61),
                "cut on a char boundary within 123 bytes"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn compressed_frames_both_ways() {
    let text_payload = "wirehub compresses text that repeats itself ".repeat(40);
    // Client -> server: masked, RSV1, inflated by the server's decoder.
    let frame = crate::deflate_client_frame(OpCode::Text, text_payload.as_bytes(), [9, 8, 7, 6])
        .expect("smaller");
    assert_eq!(frame[0], FIN | 0x40 | TEXT);
    assert!(frame.len() < text_payload.len() / 4, "{}", frame.len());
    let deflate = crate::negotiate(
        [crate::CLIENT_OFFER],
        &crate::DeflateConfig {
            client_context_takeover: false,
        },
    )
    .expect("the server takes the client's offer");
    let mut server = Decoder::new(1 << 20).with_deflate(&deflate, 1 << 20);
    let mut buf = BytesMut::from(&frame[..]);
    assert_eq!(server.decode(&mut buf), Ok(Some(text(&text_payload))));
    // Server -> client: the shared compressed frame, inflated by the client's decoder, in
    // every byte split.
    let shared = crate::deflate_frame(OpCode::Text, text_payload.as_bytes()).expect("smaller");
    let mut client = Decoder::for_client(1 << 20).with_inflate(false, 1 << 20);
    let (messages, error) = client_decode(&mut client, &cat(&[shared.to_vec(), shared.to_vec()]));
    assert_eq!(error, None);
    assert_eq!(messages, vec![text(&text_payload), text(&text_payload)]);
    // A bomb from the server is refused once inflated past the client's cap.
    let bomb = crate::deflate_frame(OpCode::Text, &vec![b'a'; 1 << 20]).expect("smaller");
    let (_, error) = client_decode(
        &mut Decoder::for_client(1 << 20).with_inflate(false, 64 * 1024),
        &bomb,
    );
    assert!(matches!(
        error,
        Some(ProtocolError::TooLarge { max: 65_536, .. })
    ));
    // Without the extension, RSV1 is a protocol error for the client too.
    let (_, error) = client_decode(&mut Decoder::for_client(1 << 20), &shared);
    assert_eq!(error, Some(ProtocolError::ReservedBits));
    // Incompressible or short input is sent plain.
    assert_eq!(
        crate::deflate_client_frame(OpCode::Text, b"ab", [0; 4]),
        None
    );
}

#[test]
fn a_client_checks_the_servers_extension_answer() {
    use crate::{ServerDeflate, accept_response};
    let plain = ServerDeflate {
        server_context_takeover: false,
    };
    assert_eq!(accept_response([]), Ok(None));
    assert_eq!(
        accept_response([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ]),
        Ok(Some(plain))
    );
    assert_eq!(
        accept_response([
            "PerMessage-Deflate;server_no_context_takeover; server_max_window_bits=\"10\""
        ]),
        Ok(Some(plain))
    );
    assert_eq!(
        accept_response(["permessage-deflate"]),
        Ok(Some(ServerDeflate {
            server_context_takeover: true
        }))
    );
    for refused in [
        "x-webkit-deflate-frame",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; mystery",
    ] {
        assert!(accept_response([refused]).is_err(), "{refused}");
    }
    assert!(accept_response(["permessage-deflate", "permessage-deflate"]).is_err());
}
