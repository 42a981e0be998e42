//! `${VAR}` and `${VAR:-default}` placeholders, expanded inside one scalar value of the parsed
//! document, so that whatever a variable holds (`"`, `#`, `: `, a newline) is taken literally.

/// A placeholder that cannot be expanded: the placeholder as written, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unexpanded {
    pub(crate) placeholder: String,
    pub(crate) reason: String,
    /// A well-formed `${NAME}` whose variable is not set (not a broken placeholder).
    pub(crate) unset: bool,
}

/// Replaces every placeholder in `text` with the value `lookup` gives for its variable.
///
/// - `${VAR}`: the variable's value; an error naming `VAR` when it is unset.
/// - `${VAR:-default}`: the value, or `default` when the variable is unset or empty.
/// - `$${`: a literal `${`.
///
/// Other `$` signs are kept.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Unexpanded> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
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
            return Err(Unexpanded {
                placeholder: after.lines().next().unwrap_or(after).trim_end().to_owned(),
                reason: "this placeholder has no closing `}`".to_owned(),
                unset: false,
            });
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_variable_name(name) {
            return Err(Unexpanded {
                placeholder: format!("${{{body}}}"),
                reason: "a variable name is letters, digits and `_`, not starting with a digit"
                    .to_owned(),
                unset: false,
            });
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(Unexpanded {
                    placeholder: format!("${{{name}}}"),
                    reason: format!(
                        "environment variable `{name}` is not set and the placeholder has no \
                         default (write `${{{name}:-default}}` to give one)"
                    ),
                    unset: true,
                });
            }
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables that placeholders in `text` name, so that they can be looked up once before
/// the document is read.
pub(crate) fn names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let body = &rest[start + 2..];
        let len = body
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(body.len());
        if is_variable_name(&body[..len]) && !names.contains(&&body[..len]) {
            names.push(&body[..len]);
        }
        rest = body;
    }
    names
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

    fn run(text: &str) -> Result<String, Unexpanded> {
        expand(text, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(run("${DB_HOST}").unwrap(), "db.internal");
        assert_eq!(run("${DB_PORT:-5432}").unwrap(), "5432", "the default");
        assert_eq!(run("${DB_HOST:-x}").unwrap(), "db.internal");
        assert_eq!(run("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("${NOPE:-}").unwrap(), "");
        assert_eq!(
            run("${DB_HOST}:${DB_PORT:-1}/x").unwrap(),
            "db.internal:1/x"
        );
    }

    #[test]
    fn leaves_other_dollars_alone() {
        assert_eq!(run("a$b$$c$").unwrap(), "a$b$$c$");
        assert_eq!(run("$${HOME}").unwrap(), "${HOME}");
    }

    #[test]
    fn unset_variable_without_default_names_it() {
        let err = run("${DB_PASSWORD}").unwrap_err();
        assert_eq!(err.placeholder, "${DB_PASSWORD}");
        assert!(err.reason.contains("DB_PASSWORD"), "{err:?}");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        assert!(run("${DB_HOST").unwrap_err().reason.contains("closing"));
        assert!(run("${1X}").is_err());
        assert!(run("${}").is_err());
        assert!(run("${A B}").is_err());
    }

    #[test]
    fn names_lists_each_variable_once() {
        assert_eq!(
            names("a: ${A}\nb: ${B:-x} ${A} $${C} ${1D} ${_E:-${F}}"),
            ["A", "B", "C", "_E", "F"]
        );
    }
}

/// Property tests: any text is expanded or refused with a reason, never a panic; text without
/// placeholders passes through unchanged, and a value comes out byte for byte whatever it
/// holds. `PROPTEST_CASES=100000 cargo test --lib props` runs them longer.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn env(name: &str) -> Option<String> {
        name.len().is_multiple_of(2).then(|| format!("<{name}>"))
    }

    proptest! {
        #[test]
        fn any_text_is_expanded_or_refused(text in any::<String>()) {
            if let Err(error) = expand(&text, &env) {
                prop_assert!(!error.reason.is_empty());
            }
        }

        #[test]
        fn text_without_a_dollar_is_unchanged(text in "[^$]*") {
            prop_assert_eq!(expand(&text, &env).unwrap(), text);
        }

        #[test]
        fn a_value_is_taken_literally(value in any::<String>()) {
            let lookup = |_: &str| Some(value.clone());
            prop_assert_eq!(expand("${V}", &lookup).unwrap(), value.clone());
        }

        #[test]
        fn placeholders_take_the_value_or_the_default(
            before in "[^$]*",
            name in "[A-Za-z_][A-Za-z0-9_]{0,12}",
            default in "[^}]*",
            after in "[^$]*",
        ) {
            let text = format!("{before}${{{name}:-{default}}}{after}");
            let value = env(&name).unwrap_or_else(|| default.clone());
            prop_assert_eq!(expand(&text, &env).unwrap(), format!("{before}{value}{after}"));
            prop_assert!(names(&text).contains(&name.as_str()));
        }
    }
}
