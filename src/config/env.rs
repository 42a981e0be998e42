//! `${VAR}` and `${VAR:-default}` placeholders, replaced in the raw configuration text.

use super::ConfigError;

/// Replaces every placeholder in `text` with the value `lookup` gives for its variable.
///
/// - `${VAR}`: the variable's value; an error naming `VAR` when it is unset.
/// - `${VAR:-default}`: the value, or `default` when the variable is unset or empty.
/// - `$${`: a literal `${`.
///
/// Lines whose first non-blank character is `#` are YAML comments and are left alone, so a
/// commented-out setting never asks for a variable.
pub(crate) fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        interpolate_line(line, index + 1, lookup, &mut out)?;
    }
    Ok(out)
}

fn interpolate_line(
    line: &str,
    line_number: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), ConfigError> {
    let mut rest = line;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(ConfigError::placeholder(
                line_number,
                after.trim_end(),
                "this placeholder has no closing `}`",
            ));
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_variable_name(name) {
            return Err(ConfigError::placeholder(
                line_number,
                &format!("${{{body}}}"),
                "a variable name is letters, digits and `_`, not starting with a digit",
            ));
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ConfigError::placeholder(
                    line_number,
                    &format!("${{{name}}}"),
                    &format!(
                        "environment variable `{name}` is not set and the placeholder has no \
                         default (write `${{{name}:-default}}` to give one)"
                    ),
                ));
            }
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DB_HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, ConfigError> {
        interpolate(text, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(run("host: ${DB_HOST}\n").unwrap(), "host: db.internal\n");
        assert_eq!(
            run("port: ${DB_PORT:-5432}\n").unwrap(),
            "port: 5432\n",
            "unset variable takes the default"
        );
        assert_eq!(run("host: ${DB_HOST:-x}").unwrap(), "host: db.internal");
        assert_eq!(run("v: ${EMPTY:-fallback}").unwrap(), "v: fallback");
        assert_eq!(run("v: '${EMPTY}'").unwrap(), "v: ''");
        assert_eq!(run("v: ${NOPE:-}").unwrap(), "v: ");
        assert_eq!(
            run("url: ${DB_HOST}:${DB_PORT:-1}/x").unwrap(),
            "url: db.internal:1/x"
        );
    }

    #[test]
    fn leaves_other_dollars_and_comments_alone() {
        assert_eq!(run("p: a$b$$c$").unwrap(), "p: a$b$$c$");
        assert_eq!(run("p: $${HOME}").unwrap(), "p: ${HOME}");
        assert_eq!(
            run("  # password: ${UNSET}\nhost: x\n").unwrap(),
            "  # password: ${UNSET}\nhost: x\n"
        );
    }

    #[test]
    fn unset_variable_without_default_names_it() {
        let err = run("a: 1\npassword: ${DB_PASSWORD}\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DB_PASSWORD"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        assert!(
            run("a: ${DB_HOST")
                .unwrap_err()
                .to_string()
                .contains("closing")
        );
        assert!(run("a: ${1X}").is_err());
        assert!(run("a: ${}").is_err());
        assert!(run("a: ${A B}").is_err());
    }
}

/// Property tests: any text is replaced or refused with a reason, never a panic; text without
/// placeholders and comment lines pass through unchanged. `PROPTEST_CASES=100000 cargo test
/// --lib props` runs them longer.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        name.len().is_multiple_of(2).then(|| format!("<{name}>"))
    }

    proptest! {
        #[test]
        fn any_text_is_replaced_or_refused(text in any::<String>()) {
            let _ = interpolate(&text, &env);
        }

        #[test]
        fn placeholder_shaped_text_is_replaced_or_refused(
            text in "([a-z: \\n#]|\\$|\\{|\\}|:-|[A-Z_0-9]){0,40}",
        ) {
            if let Err(error) = interpolate(&text, &env) {
                prop_assert!(error.to_string().contains("line"));
            }
        }

        #[test]
        fn text_without_a_dollar_is_unchanged(text in "[^$]*") {
            prop_assert_eq!(interpolate(&text, &env).unwrap(), text);
        }

        #[test]
        fn comment_lines_are_unchanged(comment in "[^\\n]*") {
            let text = format!("  # {comment}\n");
            prop_assert_eq!(interpolate(&text, &env).unwrap(), text);
        }

        #[test]
        fn placeholders_take_the_value_or_the_default(
            before in "[^$#\\n]*",
            name in "[A-Za-z_][A-Za-z0-9_]{0,12}",
            default in "[^}\\n]*",
            after in "[^$\\n]*",
        ) {
            let text = format!("{before}${{{name}:-{default}}}{after}");
            let value = env(&name).unwrap_or_else(|| default.clone());
            prop_assert_eq!(
                interpolate(&text, &env).unwrap(),
                format!("{before}{value}{after}")
            );
        }
    }
}
