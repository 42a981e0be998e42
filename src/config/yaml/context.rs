//! The placeholders of one document and what went wrong in it, while serde reads it: placeholders
//! are masked before the parser sees them and expanded in each scalar after, and a refused value
//! is kept aside so that the error can name its key.
//!
//! Serde's derived `Deserialize` passes no context to the values it reads, so this lives in a
//! thread-local for the length of one [`parse`](super::parse) call on one thread, set before and
//! taken after; it never carries anything between calls, and nothing on the request path reads it.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::de;

use super::text::FromText;
use crate::config::env::{Unexpanded, expand};

/// Why a value was refused, kept aside while serde unwinds so that the error can name the key
/// (which only `serde_path_to_error` knows) together with the value.
pub(super) enum Failure {
    Invalid {
        value: String,
        reason: String,
    },
    /// `named`: the placeholder is a whole value naming a variable that is not set.
    Placeholder {
        placeholder: String,
        reason: String,
        named: bool,
    },
}

#[derive(Default)]
pub(super) struct Context {
    /// The placeholders' variables, looked up before the document is read.
    pub(super) env: HashMap<String, Option<String>>,
    /// The placeholders as written, by their index in the masked text.
    pub(super) placeholders: Vec<String>,
    pub(super) failure: Option<Failure>,
}

/// Opens and closes a masked placeholder: private-use characters, which YAML takes as plain
/// text anywhere, even inside a flow mapping where `{` and `}` are syntax.
const MASK_OPEN: char = '\u{E000}';
const MASK_CLOSE: char = '\u{E001}';

/// `text` with each `${...}` placeholder replaced by a mask holding its index, so that the
/// parser reads `host: ${DB_HOST}` as a plain scalar wherever it stands; the scalars are
/// unmasked and expanded once parsed. `$${` (an escaped `${`) and a placeholder with no `}` on
/// its line are left as written.
pub(super) fn mask(text: &str) -> (String, Vec<String>) {
    let mut masked = String::with_capacity(text.len());
    let mut placeholders = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let escaped = rest[..start].ends_with('$');
        let body = &rest[start..];
        let end = body.find('}').filter(|&end| !body[..end].contains('\n'));
        match end {
            Some(end) if !escaped => {
                masked.push_str(&rest[..start]);
                masked.push(MASK_OPEN);
                masked.push_str(&placeholders.len().to_string());
                masked.push(MASK_CLOSE);
                placeholders.push(body[..=end].to_owned());
                rest = &body[end + 1..];
            }
            _ => {
                masked.push_str(&rest[..start + 2]);
                rest = &body[2..];
            }
        }
    }
    masked.push_str(rest);
    (masked, placeholders)
}

/// `text` with its masks replaced by the placeholders they stand for.
pub(super) fn unmask(text: &str, placeholders: &[String]) -> String {
    if !text.contains(MASK_OPEN) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MASK_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MASK_OPEN.len_utf8()..];
        let Some(end) = after.find(MASK_CLOSE) else {
            out.push_str(&rest[start..]);
            return out;
        };
        match after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| placeholders.get(i))
        {
            Some(placeholder) => out.push_str(placeholder),
            None => out
                .push_str(&rest[start..start + MASK_OPEN.len_utf8() + end + MASK_CLOSE.len_utf8()]),
        }
        rest = &after[end + MASK_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}

thread_local! {
    static CONTEXT: RefCell<Context> = RefCell::default();
}

/// Sets the context of the document about to be read on this thread.
pub(super) fn begin(context: Context) {
    CONTEXT.with_borrow_mut(|c| *c = context);
}

/// Takes the context of the document just read on this thread, leaving it empty.
pub(super) fn end() -> Context {
    CONTEXT.with_borrow_mut(std::mem::take)
}

/// A scalar as written (masked) with its placeholders restored and expanded; else the
/// placeholder, why, and whether it is the scalar's whole text and names a variable not set
/// (`password: ${DB_PASSWORD}`: a name to show, even for a secret).
pub(super) fn expand_scalar(raw: &str) -> Result<String, Failure> {
    let raw = CONTEXT.with_borrow(|c| unmask(raw, &c.placeholders));
    expand(&raw, &|name| {
        CONTEXT.with_borrow(|c| c.env.get(name).cloned().flatten())
    })
    .map_err(
        |Unexpanded {
             placeholder,
             reason,
             unset,
         }| Failure::Placeholder {
            named: unset && raw.trim() == placeholder,
            placeholder,
            reason,
        },
    )
}

pub(super) fn fail<T: FromText, E: de::Error>(failure: Failure) -> E {
    // A secret's text shows nowhere, not even the part that looked like a placeholder (it may
    // be a password that holds `${`): the key and the line say where to look.
    let failure = match failure {
        Failure::Invalid { reason, .. } if T::SECRET => Failure::Invalid {
            value: "[redacted]".to_owned(),
            reason,
        },
        Failure::Placeholder { named: false, .. } if T::SECRET => Failure::Placeholder {
            named: false,
            placeholder: "[redacted]".to_owned(),
            reason: "a `${...}` placeholder in this secret cannot be expanded (a variable that is \
                     not set, or a `${` that is no placeholder: write `$${` for a literal `${`); \
                     its text is not shown"
                .to_owned(),
        },
        other => other,
    };
    let message = match &failure {
        Failure::Invalid { reason, .. } | Failure::Placeholder { reason, .. } => reason.clone(),
    };
    CONTEXT.with_borrow_mut(|c| c.failure = Some(failure));
    E::custom(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_masked_for_the_parser_and_restored() {
        let text = "a: { h: ${A}, p: ${B:-5432} }\nb: $${C}\nc: ${D\n";
        let (masked, placeholders) = mask(text);
        assert_eq!(placeholders, ["${A}", "${B:-5432}"]);
        assert!(!masked.contains("${A}") && masked.contains("$${C}") && masked.contains("${D"));
        assert_eq!(unmask(&masked, &placeholders), text);
    }
}
