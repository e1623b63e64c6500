//! Splits the kernel command line into arguments.
//!
//! The command line arrives from `-append` (QEMU), `/chosen/bootargs` (device tree) or the PVH start
//! info. Arguments are separated by ASCII whitespace; a double-quoted span keeps its spaces, and the
//! quotes themselves are removed. An unterminated quote runs to the end of the line rather than
//! failing: a misquoted boot line should still boot.

use alloc::{string::String, vec::Vec};

/// Splits `cmdline` into arguments (see the module docs for the rules).
pub fn split(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    for ch in cmdline.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_arg {
                    args.push(core::mem::take(&mut current));
                    in_arg = false;
                }
            }
            c => {
                current.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(current);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_on_runs_of_whitespace() {
        assert_eq!(split("  a b\t\tc\n"), ["a", "b", "c"]);
    }

    #[test]
    fn empty_line_has_no_arguments() {
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn quotes_keep_spaces_and_are_removed() {
        assert_eq!(split(r#"greet "hello world" x"#), ["greet", "hello world", "x"]);
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
    }

    #[test]
    fn empty_quotes_are_an_empty_argument() {
        assert_eq!(split(r#"a "" b"#), ["a", "", "b"]);
    }

    #[test]
    fn unterminated_quote_runs_to_end() {
        assert_eq!(split(r#"a "b c"#), ["a", "b c"]);
    }

    #[test]
    fn non_ascii_is_kept() {
        assert_eq!(split("héllo wörld"), ["héllo", "wörld"]);
    }
}
