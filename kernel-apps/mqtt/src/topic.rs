//! Topic names and filters (MQTT 3.1.1 §4.7).
//!
//! A name has levels separated by `/` and no wildcards. A filter may use `+` (exactly one level)
//! and `#` (this level and all below; only as the last level). A filter starting with a wildcard
//! does not match names starting with `$` (§4.7.2), which are reserved for the server.

/// Whether `name` is a valid topic name for PUBLISH: non-empty, no `+` or `#`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#'])
}

/// Whether `filter` is a valid topic filter: non-empty, wildcards only as whole levels, `#` last.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            other if other.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether topic `name` matches `filter` (both assumed valid; an invalid filter matches nothing).
pub fn matches(filter: &str, name: &str) -> bool {
    if !valid_filter(filter) || !valid_name(name) {
        return false;
    }
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match level {
            // `sport/#` also matches `sport` itself (§4.7.1.2).
            "#" => return true,
            "+" => {
                if names.next().is_none() {
                    return false;
                }
            }
            exact => {
                if names.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_specification_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("sensors/temp/dev1", "sensors/temp/dev1"));
        assert!(!matches("sensors/temp", "sensors/temp/dev1"));
    }

    #[test]
    fn invalid_filters_and_names_are_refused() {
        for bad in ["", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/#/b", "##"] {
            assert!(!valid_filter(bad), "{bad:?}");
            assert!(!matches(bad, "sport/tennis"), "{bad:?}");
        }
        for good in ["#", "+", "+/+", "/", "a//b", "sensors/+/dev1", "sensors/#"] {
            assert!(valid_filter(good), "{good:?}");
        }
        assert!(!valid_name("a/+/b") && !valid_name("a/#") && !valid_name(""));
        assert!(valid_name("/") && valid_name("sensors/temp/dev1"));
    }
}
