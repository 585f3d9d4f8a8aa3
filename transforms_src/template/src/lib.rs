//! `template`: `{"template": "Hi {{name}}", "values": {...}}` -> `{"text": ...}`.
//!
//! * `{{ name }}` is replaced by `values.name`; spaces inside the braces are
//!   ignored. Dotted names walk into objects and, with numeric parts, arrays:
//!   `{{user.emails.0}}`.
//! * A string is inserted as is, `null` as nothing, any other value as its
//!   compact JSON text (`{{count}}` -> `3`, `{{tags}}` -> `["a","b"]`).
//! * There is no escaping, conditionals or loops; to produce a literal `{{`,
//!   pass it as a value.
//! * A name missing from `values` is an `invalid` error naming it, unless
//!   `"strict": false` is given, in which case it renders as nothing. An
//!   unclosed `{{` is always `invalid`.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let template = input.require_str("template")?;
    let values = match input.get("values") {
        None | Some(Value::Null) => Value::Object(Vec::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => {
            return Err(Error::Invalid(format!(
                "field `values` must be an object, got {}",
                other.type_name()
            )))
        }
    };
    let strict = input.opt_bool("strict", true)?;
    let text = render(template, &values, strict)?;
    Ok(Value::object([("text", Value::from(text))]).to_json())
}

fn render(template: &str, values: &Value, strict: bool) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            let at = template.len() - rest.len() + open;
            Error::Invalid(format!("field `template`: `{{{{` at byte {at} is never closed"))
        })?;
        let name = after[..close].trim();
        match lookup(values, name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) => {}
            Some(other) => other.write_json(&mut out),
            None if strict => {
                return Err(Error::Invalid(format!(
                    "field `values` has no `{name}`, which the template uses as `{{{{{raw}}}}}`",
                    raw = &after[..close]
                )))
            }
            None => {}
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(values: &'a Value, name: &str) -> Option<&'a Value> {
    if name.is_empty() {
        return None;
    }
    name.split('.').try_fold(values, |current, part| match current {
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        other => other.get(part),
    })
}

ionflux_pdk::export!(run);

#[cfg(test)]
mod tests {
    use super::*;

    fn render_with(template: &str, values: &str, strict: bool) -> Result<String, Error> {
        render(template, &json::parse(values).unwrap(), strict)
    }

    #[test]
    fn renders() {
        let values = r#"{"name": "Ada", "n": 3, "u": {"tags": ["x", "y"]}, "z": null}"#;
        assert_eq!(render_with("Hi {{name}}!", values, true).unwrap(), "Hi Ada!");
        assert_eq!(render_with("{{ n }}/{{u.tags}}/{{u.tags.1}}/{{z}}.", values, true).unwrap(), "3/[\"x\",\"y\"]/y/.");
        assert_eq!(render_with("no placeholders", values, true).unwrap(), "no placeholders");
        assert_eq!(render_with("a {{missing}} b", values, false).unwrap(), "a  b");
    }

    #[test]
    fn errors_name_the_problem() {
        let err = render_with("Hi {{ who }}", "{}", true).unwrap_err();
        assert_eq!(err, Error::Invalid("field `values` has no `who`, which the template uses as `{{ who }}`".into()));
        let err = render_with("Hi {{name", "{}", true).unwrap_err();
        assert_eq!(err, Error::Invalid("field `template`: `{{` at byte 3 is never closed".into()));
    }
}
