//! The bundled server's connection handling on arbitrary client bytes.
//!
//! Input: one byte choosing where in the connection the bytes start (see
//! `mqtt2xmpp::server::stream::fuzzing::Stage`), then everything the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt2xmpp::server::stream::fuzzing::{connection, Stage};

fuzz_target!(|data: &[u8]| {
    let Some((&stage, bytes)) = data.split_first() else {
        return;
    };
    let stage = match stage % 3 {
        0 => Stage::Plain,
        1 => Stage::Sasl,
        _ => Stage::Session,
    };
    connection(stage, bytes);
});
