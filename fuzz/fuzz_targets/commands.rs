//! Chat command parsing (`bridge::commands::parse`) on arbitrary UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt2xmpp::bridge::commands::{is_command_word, parse, ChatCommand, MAX_WINDOW};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_command_word(text);
    match parse(text) {
        ChatCommand::AlertSet {
            threshold, margin, ..
        } => {
            assert!(threshold.is_finite(), "{text:?}: threshold {threshold}");
            if let Some(margin) = margin {
                assert!(
                    margin.is_finite() && margin >= 0.0,
                    "{text:?}: margin {margin}"
                );
            }
        }
        ChatCommand::Stats { window, .. } => {
            assert!(
                !window.is_zero() && window <= MAX_WINDOW,
                "{text:?}: {window:?}"
            );
        }
        ChatCommand::Get(target) => assert!(!target.is_empty(), "{text:?}"),
        ChatCommand::AlertOff(Some(target)) => assert!(!target.is_empty(), "{text:?}"),
        ChatCommand::Text(rest) => assert_eq!(rest, text.trim(), "{text:?}"),
        _ => {}
    }
});
