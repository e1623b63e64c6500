//! Showing a command the way a user can paste it back into a shell.

use std::process::Command;

/// `command` as one shell line: the program and its arguments, each quoted only when it must be.
pub fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|w| quote(&w.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` quoted for a POSIX shell: left bare when it holds only characters no shell treats
/// specially, else single-quoted (with embedded single quotes closed, escaped and reopened).
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_bare_and_others_are_quoted() {
        assert_eq!(quote("--target-dir=/tmp/x"), "--target-dir=/tmp/x");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote(r#"a=["b"]"#), r#"'a=["b"]'"#);
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_command_is_shown_as_a_shell_line() {
        let mut command = Command::new("qemu");
        command.args(["-append", "a \"b c\""]);
        assert_eq!(display(&command), r#"qemu -append 'a "b c"'"#);
    }
}
