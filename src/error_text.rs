//! Error text for people: a chain of causes on one line, and bodies of
//! error answers cut to a line.

/// An error with its sources, `a: b: c` (reqwest hides the cause in them).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An error body for a one-line message: whitespace runs (an HTML page's
/// newlines) become one space, and at most `max` characters are kept, cut
/// on a character, never inside one.
pub(crate) fn one_line(body: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, word) in body.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > max {
            break;
        }
    }
    match out.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_error_body_is_one_line_cut_on_a_character() {
        let page = "<html>\n  <body>\n    <h1>Error   response</h1>\n</body>\n</html>\n";
        assert_eq!(
            one_line(page, 200),
            "<html> <body> <h1>Error response</h1> </body> </html>"
        );
        // A multi-byte character across the limit: byte-wise truncation
        // panics here.
        let body = format!("{}é and more", "a".repeat(199));
        assert_eq!(one_line(&body, 200), format!("{}é…", "a".repeat(199)));
        assert_eq!(one_line("short", 200), "short");
        assert_eq!(one_line("", 200), "");
    }
}
