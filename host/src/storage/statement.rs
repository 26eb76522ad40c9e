//! A component's statement read as its database's lexer reads it: names,
//! parentheses, dots and semicolons, with whitespace, comments and the insides of
//! strings skipped exactly as that database skips them. The backends use it
//! to know a statement's kind and that it is one statement (both), and
//! which names it uses (PostgreSQL's screen).
//!
//! Anything that cannot be read with certainty (an unterminated string, a
//! `U&` escape) is an error, so the caller refuses the statement; reading a
//! name where the database sees none only ever refuses more.

/// Whose lexer to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// With `standard_conforming_strings` on: `E'…'` strings take
    /// backslash escapes, `$tag$…$tag$` quotes, comments nest.
    Postgres,
    /// `[…]` and `` `…` `` quote names too; block comments do not nest.
    Sqlite,
}

/// How a component's statement may begin: a query or DML.
const STATEMENTS: &[&str] = &["select", "insert", "update", "delete", "with", "values", "table", "replace"];

/// What a statement is made of, as far as the checks care.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    /// A name, lower-cased; `true` when it was quoted.
    Name(String, bool),
    /// `(`
    Open,
    /// `.`: a qualified name, or a call in attribute notation (`(x).f`).
    Dot,
    /// `;`
    End,
    /// Anything else (operators, numbers, parameters, strings).
    Other,
}

/// `Ok` when `sql` is one statement, a query or DML (it may end with `;`);
/// why not otherwise. Returns its tokens.
pub fn one_query_or_dml(sql: &str, dialect: Syntax) -> Result<Vec<Token>, String> {
    let tokens = tokens(sql, dialect)?;
    match tokens.iter().find(|t| **t != Token::Open) {
        Some(Token::Name(first, false)) if STATEMENTS.contains(&first.as_str()) => {}
        Some(Token::Name(first, false)) => return Err(format!("run {} statements", first.to_uppercase())),
        _ => return Err("run this statement (it must be a query or DML)".into()),
    }
    if let Some(end) = tokens.iter().position(|t| *t == Token::End)
        && end + 1 < tokens.len()
    {
        return Err("send more than one statement at once".into());
    }
    Ok(tokens)
}

/// What a trace span says of a statement: its operation (`SELECT`, …) and
/// the first table it reads or writes (after `FROM`, `INTO`, `UPDATE` or
/// `JOIN`). Names only: strings, numbers and parameters are never names, so
/// no value is ever taken for one.
pub fn summary(sql: &str) -> (String, Option<String>) {
    let Ok(tokens) = tokens(sql, Syntax::Postgres) else {
        let first = sql.split_whitespace().next().unwrap_or("");
        return (first.chars().take_while(char::is_ascii_alphabetic).collect::<String>().to_uppercase(), None);
    };
    let mut names = tokens.iter().filter_map(|t| match t {
        Token::Name(name, _) => Some(name.as_str()),
        _ => None,
    });
    let first = names.next().unwrap_or("");
    let (operation, mut previous) = (first.to_uppercase(), first);
    for name in names {
        if matches!(previous, "from" | "into" | "update" | "join") && name != "select" {
            return (operation, Some(name.to_string()));
        }
        previous = name;
    }
    (operation, None)
}

/// Split `sql` into tokens.
pub fn tokens(sql: &str, dialect: Syntax) -> Result<Vec<Token>, String> {
    let pg = dialect == Syntax::Postgres;
    let s = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b'-' if next == Some(b'-') => {
                while i < s.len() && s[i] != b'\n' && !(pg && s[i] == b'\r') {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => i = block_comment(s, i, pg)?,
            b'\'' => {
                i = string(s, i, false)?;
                continued(s, i, pg)?;
                out.push(Token::Other);
            }
            b'"' => {
                let (name, end) = quoted(s, i, b'"')?;
                out.push(Token::Name(name.to_ascii_lowercase(), true));
                i = end;
            }
            b'`' | b'[' if !pg => {
                let (name, end) = quoted(s, i, if c == b'[' { b']' } else { b'`' })?;
                out.push(Token::Name(name.to_ascii_lowercase(), true));
                i = end;
            }
            b'$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                i += 1;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
                // SQLite reads `$1(…)` and `$1::…` (Tcl's array syntax) as one
                // parameter, quotes and all.
                if !pg && matches!(s.get(i), Some(b'(' | b':')) {
                    return Err("use a parameter other than $1, $2, …".into());
                }
                out.push(Token::Other);
            }
            // SQLite's other parameter forms (`$name`, `:name`, `@name`,
            // `#name`) can swallow what follows; components use `$N`.
            b'$' | b'@' | b'#' if !pg => return Err("use a parameter other than $1, $2, …".into()),
            b':' if !pg && next.is_some_and(|n| continues_name(n) || n == b':') => {
                return Err("use a parameter other than $1, $2, …".into());
            }
            b'$' if pg => {
                i = dollar_quoted(s, i)?;
                out.push(Token::Other);
            }
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b';' => {
                out.push(Token::End);
                i += 1;
            }
            b'.' => {
                out.push(Token::Dot);
                i += 1;
            }
            c if starts_name(c) => {
                let start = i;
                while i < s.len() && continues_name(s[i]) {
                    i += 1;
                }
                let word = &sql[start..i];
                let at = s.get(i).copied();
                if pg && word.eq_ignore_ascii_case("u") && at == Some(b'&') {
                    return Err("use U& escapes".into());
                }
                if pg && word.eq_ignore_ascii_case("e") && at == Some(b'\'') {
                    i = string(s, i, true)?;
                    continued(s, i, pg)?;
                    out.push(Token::Other);
                } else {
                    out.push(Token::Name(word.to_ascii_lowercase(), false));
                }
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Identifier characters (bytes ≥ 0x80 are letters to both databases).
fn starts_name(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn continues_name(c: u8) -> bool {
    starts_name(c) || c.is_ascii_digit() || c == b'$'
}

/// The end of the block comment starting at `i`: nested (PostgreSQL), or
/// at the first `*/` (SQLite, where an unterminated one runs to the end).
fn block_comment(s: &[u8], mut i: usize, nested: bool) -> Result<usize, String> {
    let mut depth = 0usize;
    while i < s.len() {
        match (s[i], s.get(i + 1)) {
            (b'/', Some(b'*')) if nested || depth == 0 => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err("send an unterminated comment".into())
}

/// The end of the string literal whose quote is at `i`; `escapes`: an
/// `E'…'` string, where a backslash escapes the next character.
fn string(s: &[u8], mut i: usize, escapes: bool) -> Result<usize, String> {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' if escapes => i += 2,
            b'\'' if s.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("send an unterminated string".into())
}

/// PostgreSQL joins two string literals separated by whitespace that holds a
/// line break into one, and the second part goes on in the first one's
/// mode (an `E'…'` string's backslashes still escape): refused rather than
/// followed. `i` is just past a literal's closing quote.
fn continued(s: &[u8], mut i: usize, pg: bool) -> Result<(), String> {
    if !pg {
        return Ok(());
    }
    let mut line_break = false;
    while i < s.len() {
        match (s[i], s.get(i + 1)) {
            (b'\n' | b'\r', _) => {
                line_break = true;
                i += 1;
            }
            (b' ' | b'\t' | 0x0b | 0x0c, _) => i += 1,
            (b'-', Some(b'-')) => {
                while i < s.len() && s[i] != b'\n' && s[i] != b'\r' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => i = block_comment(s, i, true)?,
            (b'\'', _) if line_break => return Err("continue a string over a line break".into()),
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// The name quoted from `i` to `close` (doubled to escape it, except `]`),
/// and the end.
fn quoted(s: &[u8], mut i: usize, close: u8) -> Result<(String, usize), String> {
    let mut name = Vec::new();
    i += 1;
    while i < s.len() {
        match s[i] {
            c if c == close && close != b']' && s.get(i + 1) == Some(&close) => {
                name.push(c);
                i += 2;
            }
            c if c == close => return Ok((String::from_utf8_lossy(&name).into_owned(), i + 1)),
            c => {
                name.push(c);
                i += 1;
            }
        }
    }
    Err("send an unterminated quoted name".into())
}

/// The end of the dollar-quoted string at `i` (`$tag$ … $tag$`); a lone `$`
/// that starts none is an operator character to PostgreSQL.
fn dollar_quoted(s: &[u8], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    if j < s.len() && starts_name(s[j]) {
        while j < s.len() && continues_name(s[j]) && s[j] != b'$' {
            j += 1;
        }
    }
    if s.get(j) != Some(&b'$') {
        return Ok(i + 1);
    }
    let tag = &s[i..=j];
    let body = j + 1;
    s[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map(|at| body + at + tag.len())
        .ok_or_else(|| "send an unterminated dollar-quoted string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_summed_up_by_its_operation_and_table_never_a_value() {
        let cases = [
            ("SELECT id, name FROM pets WHERE id = $1", ("SELECT", Some("pets"))),
            ("insert into orders (pet_id) values ($1) returning id", ("INSERT", Some("orders"))),
            ("UPDATE pets SET status = 'sold' WHERE id = 3", ("UPDATE", Some("pets"))),
            ("DELETE FROM pet_tags WHERE pet_id = $1", ("DELETE", Some("pet_tags"))),
            ("SELECT COUNT(*) FROM(SELECT 1 FROM pets)", ("SELECT", Some("pets"))),
            ("SELECT 'secret FROM x' FROM pets", ("SELECT", Some("pets"))),
            ("SELECT 1", ("SELECT", None)),
            ("SELECT 'unterminated", ("SELECT", None)),
        ];
        for (sql, (operation, table)) in cases {
            assert_eq!(summary(sql), (operation.to_string(), table.map(str::to_string)), "{sql}");
        }
    }

    #[test]
    fn one_query_or_dml_passes_and_everything_else_is_refused_in_both_dialects() {
        for dialect in [Syntax::Postgres, Syntax::Sqlite] {
            for sql in [
                "SELECT 1",
                "(SELECT 1);",
                "INSERT INTO pets (name) VALUES ('a;b') RETURNING id",
                "with x as (select 1) select * from x",
            ] {
                assert!(one_query_or_dml(sql, dialect).is_ok(), "{dialect:?} {sql}");
            }
            for sql in [
                "PRAGMA query_only = 1",
                "VACUUM INTO 'x'",
                "ATTACH 'x' AS y",
                "SET x = 1",
                "SELECT 1; VACUUM",
                "/* select */ DELETE",
                "'x'",
                "\"select\" 1",
            ] {
                let verdict = one_query_or_dml(sql, dialect);
                if sql.starts_with("/*") {
                    assert!(verdict.is_ok(), "a comment then DELETE is DML");
                } else {
                    assert!(verdict.is_err(), "{dialect:?} {sql}");
                }
            }
        }
    }

    #[test]
    fn strings_comments_and_quotes_are_skipped_as_each_database_does() {
        // PostgreSQL: a backslash escapes only in E'…'; comments nest.
        let pg = |sql| one_query_or_dml(sql, Syntax::Postgres);
        assert!(pg("SELECT '\\'; VACUUM").is_err(), "'\\' is a whole string: then a second statement");
        assert!(pg("SELECT E'\\'; VACUUM'").is_ok(), "E'…' escapes the quote: all one string");
        assert!(pg("SELECT 1 /* a /* b */ ; VACUUM */").is_ok(), "nested comment");
        assert!(pg("SELECT $x$ ; VACUUM $x$").is_ok(), "dollar quotes");
        // SQLite: no escapes in strings, no nesting, brackets and backticks quote names.
        let lite = |sql| one_query_or_dml(sql, Syntax::Sqlite);
        assert!(lite("SELECT E'\\'; VACUUM'").is_err(), "no E strings: 'x' then ; VACUUM");
        assert!(lite("SELECT 1 /* a /* b */ ; VACUUM */").is_err(), "comments do not nest");
        assert!(lite("SELECT [a;b], `c;d` FROM t").is_ok());
        assert!(lite("SELECT $x$ ; VACUUM $x$").is_err(), "no dollar quotes");
    }

    #[test]
    fn what_the_screen_might_read_otherwise_than_the_database_is_refused() {
        // PostgreSQL continues an E'…' string over a line break in E mode:
        // `\'` then escapes the quote, and what looked like a comment is SQL.
        let pg = |sql| one_query_or_dml(sql, Syntax::Postgres);
        assert!(pg("SELECT E'a'\n'\\' , 1 --' , set_config('a', 'b', false)").is_err());
        assert!(pg("SELECT 'a' -- note\n 'b'").is_err(), "a comment, then a line break, then a quote");
        assert!(pg("SELECT 'a' 'b'").is_ok(), "no line break: two literals, an error for PostgreSQL, no harm");
        assert!(pg("SELECT 'a',\n'b'").is_ok(), "a comma between: two literals");
        // SQLite reads `$1(…)` as one parameter, quote included.
        let lite = |sql| one_query_or_dml(sql, Syntax::Sqlite);
        assert!(lite("SELECT $1(');SELECT 2 --'").is_err());
        for sql in ["SELECT :a", "SELECT @a", "SELECT $a", "SELECT #a", "SELECT $1::x"] {
            assert!(lite(sql).is_err(), "{sql}");
        }
        assert!(lite("SELECT $1, $2 FROM t WHERE a = $3").is_ok());
        assert!(lite("SELECT '$1(' || x FROM t").is_ok(), "inside a string it is text");
    }
}
