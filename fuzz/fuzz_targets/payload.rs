//! MQTT payload parsing (`bridge::reading::parse`) on arbitrary bytes, with and without a JSON
//! pointer.
//!
//! Input: one byte; if it is odd, a JSON pointer follows up to the first NUL byte. The rest is
//! the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt2xmpp::bridge::reading::{excerpt, parse, PayloadFormat};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (pointer, payload) = if mode & 1 == 1 {
        match rest.iter().position(|&b| b == 0) {
            Some(at) => (
                Some(String::from_utf8_lossy(&rest[..at]).into_owned()),
                &rest[at + 1..],
            ),
            None => (Some(String::new()), rest),
        }
    } else {
        (None, rest)
    };
    let format = PayloadFormat {
        json_pointer: pointer,
    };
    if let Ok(reading) = parse(payload, &format) {
        assert!(
            reading.value.is_finite(),
            "{:?} with {format:?} read as {}",
            String::from_utf8_lossy(payload),
            reading.value
        );
        if format.json_pointer.is_none() {
            // Without a pointer the value is the payload's number itself.
            let text = std::str::from_utf8(payload).expect("accepted payloads are UTF-8");
            let direct: f64 = text.trim().parse().expect("accepted payloads are numbers");
            assert_eq!(direct.to_bits(), reading.value.to_bits(), "{text:?}");
        }
    }
    let _ = excerpt(payload, usize::from(mode));
});
