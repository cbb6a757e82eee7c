//! Chat text → [`ChatCommand`]: what the user asked for. Pure.
//!
//! Commands are a first word, case-insensitive, in English or Spanish, then arguments:
//!
//! | command | Spanish | meaning |
//! |---|---|---|
//! | `help` | `ayuda` | the list of commands |
//! | `list` | `lista` | every sensor, value and age |
//! | `get X` | `ver X` | a sensor by name, or every topic matching a pattern with `+` and `#` |
//! | `stats X [window]` | `estadisticas X [ventana]` | min/max/avg/count and a sparkline |
//! | `alert X above\|below N [margin M]` | `alerta X encima\|debajo N [margen M]` | notify when X crosses N |
//! | `alerts` | `alertas` | your alerts |
//! | `alert off [X]` | `alerta quitar [X]` | remove your alerts on X, or all of them |
//! | `unalert [X]` | | the same as `alert off [X]` |
//! | `stale` | `inactivos` | sensors with no reading for longer than `--stale-after` |
//!
//! Anything else is not a command, and gets the default sensor's reading: the bot's behaviour
//! before it had commands.

use std::time::Duration;

/// Every word that starts a command, in English and Spanish. Sensor names may not be one of
/// these, or `get` and a sensor's name would be ambiguous.
pub const WORDS: &[&str] = &[
    "help",
    "ayuda",
    "list",
    "lista",
    "listar",
    "get",
    "ver",
    "leer",
    "stats",
    "estadisticas",
    "estadísticas",
    "alert",
    "alerta",
    "alerts",
    "alertas",
    "stale",
    "inactivos",
];

/// The window `stats` uses when none is given.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// The longest window `stats` accepts.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Whether `word` starts a command (case-insensitive).
pub fn is_command_word(word: &str) -> bool {
    let word = word.to_lowercase();
    WORDS.contains(&word.as_str())
}

/// What a chat message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatCommand {
    /// `help`.
    Help,
    /// `list`.
    List,
    /// `get X`: a sensor name or a topic pattern.
    Get(String),
    /// `stats X [window]`.
    Stats {
        /// Sensor name or topic pattern.
        target: String,
        /// How far back.
        window: Duration,
    },
    /// `alert X above|below N [margin M]`.
    AlertSet {
        /// Sensor name or topic pattern.
        target: String,
        /// `above` (true) or `below` (false).
        above: bool,
        /// The value to cross.
        threshold: f64,
        /// How far back past the threshold the value must go to re-arm; `None` for the default.
        margin: Option<f64>,
    },
    /// `alert off [X]`.
    AlertOff(Option<String>),
    /// `alerts`.
    Alerts,
    /// `stale`.
    Stale,
    /// A command word with arguments that do not fit: the text says what is wrong and how to
    /// write it.
    Invalid(String),
    /// Not a command: the whole message, trimmed (the bot answers with a sensor's reading).
    Text(String),
}

/// Reads one chat message.
pub fn parse(text: &str) -> ChatCommand {
    let text = text.trim();
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return ChatCommand::Text(String::new());
    };
    let args: Vec<&str> = words.collect();
    match first.to_lowercase().as_str() {
        "help" | "ayuda" => ChatCommand::Help,
        "list" | "lista" | "listar" => ChatCommand::List,
        "get" | "ver" | "leer" => match args.as_slice() {
            [target] => ChatCommand::Get(target.to_string()),
            _ => ChatCommand::Invalid(usage(
                "get",
                "get <sensor or topic pattern>, e.g. get temp or get EDIFICIO_1/+/O/+/VIBR",
            )),
        },
        "stats" | "estadisticas" | "estadísticas" => parse_stats(&args),
        "alerts" | "alertas" if args.is_empty() => ChatCommand::Alerts,
        "alert" | "alerta" | "alerts" | "alertas" => parse_alert(&args),
        // `unalert [target]`: the same as `alert off [target]`.
        "unalert" => match args.as_slice() {
            [] => ChatCommand::AlertOff(None),
            [target] => ChatCommand::AlertOff(Some(target.to_string())),
            _ => ChatCommand::Invalid(usage("unalert", "unalert [sensor], e.g. unalert temp")),
        },
        "stale" | "inactivos" => ChatCommand::Stale,
        _ => ChatCommand::Text(text.to_string()),
    }
}

fn usage(command: &str, form: &str) -> String {
    format!("Usage of {command}: {form}")
}

const STATS_FORM: &str =
    "stats <sensor or topic> [window], e.g. stats temp 30m (window: 90s, 30m, 6h, 2d; default 1h)";

const ALERT_FORM: &str = "alert <sensor or topic> above|below <value> [margin <m>], e.g. alert temp above 25; alert off [<sensor>]";

fn parse_stats(args: &[&str]) -> ChatCommand {
    let (target, window) = match args {
        [target] => (target, DEFAULT_WINDOW),
        [target, rest @ ..] => match humantime::parse_duration(&rest.join(" ")) {
            Ok(w) if w.is_zero() => {
                return ChatCommand::Invalid(format!(
                    "The window must be longer than zero. {}",
                    usage("stats", STATS_FORM)
                ))
            }
            Ok(w) if w > MAX_WINDOW => {
                return ChatCommand::Invalid(format!(
                    "The window can be at most 30 days. {}",
                    usage("stats", STATS_FORM)
                ))
            }
            Ok(w) => (target, w),
            Err(_) => {
                return ChatCommand::Invalid(format!(
                    "\"{}\" is not a window. {}",
                    rest.join(" "),
                    usage("stats", STATS_FORM)
                ))
            }
        },
        [] => return ChatCommand::Invalid(usage("stats", STATS_FORM)),
    };
    ChatCommand::Stats {
        target: target.to_string(),
        window,
    }
}

fn parse_alert(args: &[&str]) -> ChatCommand {
    let invalid =
        |problem: &str| ChatCommand::Invalid(format!("{problem}{}", usage("alert", ALERT_FORM)));
    match args {
        [off] if is_off(off) => ChatCommand::AlertOff(None),
        [off, target] if is_off(off) => ChatCommand::AlertOff(Some(target.to_string())),
        [target, direction, value, rest @ ..] => {
            let above = match direction.to_lowercase().as_str() {
                "above" | "over" | ">" | "encima" | "sobre" | "mayor" => true,
                "below" | "under" | "<" | "debajo" | "bajo" | "menor" => false,
                _ => return invalid(&format!("\"{direction}\" should be above or below. ")),
            };
            let Some(threshold) = number(value) else {
                return invalid(&format!("\"{value}\" is not a number. "));
            };
            let margin = match rest {
                [] => None,
                [word, m] if matches!(word.to_lowercase().as_str(), "margin" | "margen") => {
                    match number(m) {
                        Some(m) if m >= 0.0 => Some(m),
                        _ => {
                            return invalid(&format!(
                                "\"{m}\" is not a margin (a number, 0 or more). "
                            ))
                        }
                    }
                }
                _ => return invalid(""),
            };
            ChatCommand::AlertSet {
                target: target.to_string(),
                above,
                threshold,
                margin,
            }
        }
        _ => invalid(""),
    }
}

fn is_off(word: &str) -> bool {
    matches!(
        word.to_lowercase().as_str(),
        "off" | "remove" | "delete" | "quitar" | "borrar" | "desactivar"
    )
}

/// A finite number, with a decimal point or a decimal comma (`25,5`).
pub(crate) fn number(text: &str) -> Option<f64> {
    let value: f64 = text.replace(',', ".").parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_are_case_insensitive_in_both_languages() {
        for text in ["help", "HELP", "Ayuda", "help me"] {
            assert_eq!(parse(text), ChatCommand::Help, "{text}");
        }
        for text in ["list", "Lista", "LISTAR"] {
            assert_eq!(parse(text), ChatCommand::List, "{text}");
        }
        for text in ["stale", "Inactivos"] {
            assert_eq!(parse(text), ChatCommand::Stale, "{text}");
        }
        for text in ["alerts", "ALERTAS"] {
            assert_eq!(parse(text), ChatCommand::Alerts, "{text}");
        }
        assert_eq!(parse("  get   temp "), ChatCommand::Get("temp".into()));
        assert_eq!(
            parse("Ver B/+/O/+/VIBR"),
            ChatCommand::Get("B/+/O/+/VIBR".into())
        );
        for word in WORDS {
            assert!(is_command_word(word) && is_command_word(&word.to_uppercase()));
        }
        assert!(!is_command_word("temp"));
    }

    #[test]
    fn anything_else_is_plain_text() {
        for text in [
            "what's the temperature?",
            "?",
            "temp",
            "hola",
            "gets",
            "listing",
        ] {
            assert_eq!(parse(text), ChatCommand::Text(text.into()), "{text}");
        }
        assert_eq!(parse(" temp? "), ChatCommand::Text("temp?".into()));
    }

    #[test]
    fn stats_take_an_optional_window() {
        assert_eq!(
            parse("stats temp"),
            ChatCommand::Stats {
                target: "temp".into(),
                window: DEFAULT_WINDOW
            }
        );
        assert_eq!(
            parse("estadísticas temp 30m"),
            ChatCommand::Stats {
                target: "temp".into(),
                window: Duration::from_secs(1800)
            }
        );
        assert_eq!(
            parse("stats temp 1h 30m"),
            ChatCommand::Stats {
                target: "temp".into(),
                window: Duration::from_secs(5400)
            }
        );
        for bad in [
            "stats",
            "stats temp soon",
            "stats temp 0s",
            "stats temp 60d",
        ] {
            let ChatCommand::Invalid(text) = parse(bad) else {
                panic!("{bad}")
            };
            assert!(text.contains("Usage of stats: "), "{text}");
        }
    }

    #[test]
    fn alerts_are_set_with_direction_threshold_and_margin() {
        assert_eq!(
            parse("alert temp above 25"),
            ChatCommand::AlertSet {
                target: "temp".into(),
                above: true,
                threshold: 25.0,
                margin: None
            }
        );
        assert_eq!(
            parse("ALERTA B/+/O/+/VIBR encima 4,5 margen 0,5"),
            ChatCommand::AlertSet {
                target: "B/+/O/+/VIBR".into(),
                above: true,
                threshold: 4.5,
                margin: Some(0.5)
            }
        );
        assert_eq!(
            parse("alert hum below -3"),
            ChatCommand::AlertSet {
                target: "hum".into(),
                above: false,
                threshold: -3.0,
                margin: None
            }
        );
        assert_eq!(parse("alert off"), ChatCommand::AlertOff(None));
        assert_eq!(parse("unalert"), ChatCommand::AlertOff(None));
        assert_eq!(
            parse("Unalert temp"),
            ChatCommand::AlertOff(Some("temp".into()))
        );
        assert_eq!(
            parse("alerta quitar temp"),
            ChatCommand::AlertOff(Some("temp".into()))
        );
        for (bad, says) in [
            ("alert", "Usage of alert"),
            ("alert temp", "Usage of alert"),
            ("alert temp near 3", "\"near\" should be above or below"),
            ("alert temp above hot", "\"hot\" is not a number"),
            ("alert temp above NaN", "is not a number"),
            ("alert temp above 3 margin -1", "is not a margin"),
            ("alert temp above 3 please", "Usage of alert"),
        ] {
            let ChatCommand::Invalid(text) = parse(bad) else {
                panic!("{bad}")
            };
            assert!(text.contains(says), "{bad}: {text}");
        }
    }

    #[test]
    fn get_needs_exactly_one_target() {
        for bad in ["get", "get two words"] {
            let ChatCommand::Invalid(text) = parse(bad) else {
                panic!("{bad}")
            };
            assert!(text.starts_with("Usage of get: "), "{text}");
        }
    }
}
