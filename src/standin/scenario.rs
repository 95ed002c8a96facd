//! Which scenario a session id selects: `name-...` or `nameN-...` (see the table in `mod.rs`).

/// The scenario a session id asks for, and how many requests it fails before it succeeds.
pub(super) fn scenario(id: &str) -> (&str, u32) {
    // Only `name-...` or `nameN-...` select a scenario; a plain hex id that happens to start
    // with letters like "bad" must not.
    let Some((prefix, _)) = id.split_once('-') else {
        return ("", 0);
    };
    let name = prefix.trim_end_matches(|c: char| c.is_ascii_digit());
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
        return ("", 0);
    }
    (name, prefix[name.len()..].parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dashed_prefix_selects_a_scenario() {
        assert_eq!(scenario("flaky2-abc"), ("flaky", 2));
        assert_eq!(scenario("gone-1"), ("gone", 0));
        assert_eq!(scenario("bad3f00d"), ("", 0));
        assert_eq!(scenario("d26aa7b8029bf4f8d34c7dd0013"), ("", 0));
        assert_eq!(scenario("ABC-1"), ("", 0));
    }
}
