//! Text from outside (a model's answer, an engine's error, a container's log, a reason another
//! agent wrote) made safe to show on a terminal or to keep in a text file someone will `cat`.
//!
//! One cleaner for every place that shows such text: the CLI's output and the report folder's
//! text files and CSV cells.

/// `text` with every control character that could act on a terminal shown as a visible symbol
/// instead: C0 controls as Unicode control pictures (ESC → `␛`, NUL → `␀`, a lone carriage
/// return → `␍`), DEL as `␡`, C1 controls (such as CSI, U+009B) as `<U+009B>`.
///
/// Newline and tab pass through, and so does a carriage return directly before a newline
/// (`\r\n`, a Windows line end, which moves the cursor nowhere a newline would not). A lone
/// `\r` does not: it returns the cursor to the start of the line, so the text after it would
/// overwrite what came before on a terminal.
///
/// The result is valid UTF-8 (the caller decodes lossily); the exact bytes stay where they came
/// from (the object store keeps an answer and its SHA-256).
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if chars.peek() == Some(&'\n') => out.push(c),
            '\u{0}'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("<U+{:04X}>", c as u32)),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn plain_text_and_line_ends_pass_through() {
        assert_eq!(terminal_safe("plain text, é ü 漢字\n\tindented\r\n"), "plain text, é ü 漢字\n\tindented\r\n");
    }

    #[test]
    fn a_lone_carriage_return_is_shown_not_obeyed() {
        // `\r` alone would move the cursor back and let "evil" overwrite "safe" on a terminal.
        assert_eq!(terminal_safe("safe\revil"), "safe␍evil");
        assert_eq!(terminal_safe("end\r"), "end␍");
        assert_eq!(terminal_safe("a\r\r\nb"), "a␍\r\nb");
    }

    #[test]
    fn ansi_escapes_are_shown_not_obeyed() {
        // Clear screen, a window title (OSC ending in BEL) and a colour.
        assert_eq!(terminal_safe("\u{1b}[2J\u{1b}]0;title\u{7}\u{1b}[31mred"), "␛[2J␛]0;title␇␛[31mred");
        // The one-byte CSI of the C1 set.
        assert_eq!(terminal_safe("\u{9b}31m"), "<U+009B>31m");
    }

    #[test]
    fn other_control_characters_become_visible_symbols() {
        assert_eq!(terminal_safe("a\0b\u{8}c\u{7f}d\u{85}e"), "a␀b␈c␡d<U+0085>e");
    }
}
