//! MQTT topic names and filters (MQTT 3.1.1 §4.7), shared by the embedded broker and the bot.

/// Whether `topic` matches `filter`. Unlike `rumqttc::matches`, never panics on a topic that
/// starts with a multi-byte character.
pub fn matches(topic: &str, filter: &str) -> bool {
    // MQTT-4.7.2-1: a leading wildcard does not match `$SYS/...` and the like.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for wanted in filter.split('/') {
        if wanted == "#" {
            // Also matches the parent level: `a/#` matches `a`.
            return true;
        }
        match levels.next() {
            Some(level) if wanted == "+" || wanted == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Whether `filter` contains a wildcard (`+` or `#`), i.e. may match more than one topic.
pub fn is_pattern(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Whether every topic matching `specific` also matches `general` (so subscribing to both would
/// only deliver some messages twice).
pub fn covers(general: &str, specific: &str) -> bool {
    let mut specific_levels = specific.split('/');
    for wanted in general.split('/') {
        if wanted == "#" {
            // `#` covers everything below, and `$`-topics only if the specific filter names them.
            return !(specific.starts_with('$') && general.starts_with('#'));
        }
        match specific_levels.next() {
            Some("#") | None => return false,
            Some("+") if wanted == "+" => {}
            Some(level) if level != "+" && (wanted == "+" || wanted == level) => {
                if level.starts_with('$') && wanted == "+" && general.starts_with('+') {
                    return false;
                }
            }
            _ => return false,
        }
    }
    specific_levels.next().is_none()
}

/// Checks a subscription filter; the error says what is wrong in words a user can act on.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("a topic cannot be empty");
    }
    if filter.contains('\0') || filter.len() > 65_535 {
        return Err("not a valid MQTT topic");
    }
    if !rumqttc::mqttbytes::valid_filter(filter) {
        return Err(
            "'+' must stand alone in a level and '#' only as the last level, \
                    e.g. building/+/temp or building/#",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_match_filters_as_the_specification_says() {
        let cases = [
            ("sensors/temperature", "sensors/temperature", true),
            ("sensors/temperature", "sensors/+", true),
            ("sensors/temperature", "sensors/#", true),
            ("sensors", "sensors/#", true),
            ("sensors/a/b", "sensors/+", false),
            ("sensors/a/b", "sensors/+/b", true),
            ("sensors/a/b", "#", true),
            ("sensors", "sensors/+", false),
            ("/", "+/+", true),
            ("/", "+", false),
            ("a", "b", false),
            ("a/b", "a", false),
            ("$SYS/uptime", "#", false),
            ("$SYS/uptime", "+/uptime", false),
            ("$SYS/uptime", "$SYS/#", true),
            ("é/x", "+/x", true),
            ("é", "#", true),
            ("€uro", "+", true),
            ("EDIFICIO_1/P_2/O/4/VIBR", "EDIFICIO_1/+/O/+/VIBR", true),
            ("EDIFICIO_1/P_2/N/4/VIBR", "EDIFICIO_1/+/O/+/VIBR", false),
        ];
        for (topic, filter, expected) in cases {
            assert_eq!(matches(topic, filter), expected, "{topic} vs {filter}");
        }
    }

    #[test]
    fn filters_are_checked() {
        for good in [
            "a",
            "a/b",
            "+",
            "#",
            "a/+/b",
            "a/#",
            "+/+/#",
            "EDIFICIO_1/P_2/O/4/VIBR",
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "a\0b", "#/a"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
        assert!(is_pattern("a/+") && is_pattern("#") && !is_pattern("a/b"));
    }

    #[test]
    fn a_filter_covers_another_when_it_matches_all_its_topics() {
        for (general, specific, expected) in [
            ("B/#", "B/+/+/+/VIBR", true),
            ("B/#", "B", true),
            ("#", "anything/at/all", true),
            ("B/+/O/+/VIBR", "B/P_1/O/2/VIBR", true),
            ("B/+/+/+/VIBR", "B/+/O/+/VIBR", true),
            ("B/+/O/+/VIBR", "B/+/+/+/VIBR", false),
            ("B/+/VIBR", "B/#", false),
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
        ] {
            assert_eq!(
                covers(general, specific),
                expected,
                "{general} ⊇ {specific}"
            );
        }
    }
}
