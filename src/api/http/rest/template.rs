//! Path templates of `google.api.http` rules (`/v1/projects/{project_id}/keys/{id}:roll`,
//! `{name=projects/*}`, `*`, `**`): parsing them, and matching request paths against them.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: the rest of the path (zero or more segments); only last.
    Rest,
}

/// A variable: the request field it fills (dotted, as written in the rule) and the segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field_path: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {why}")]
pub struct TemplateError {
    template: String,
    why: &'static str,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        let fail = |why| TemplateError { template: template.to_owned(), why };
        let rest = template.strip_prefix('/').ok_or_else(|| fail("must start with /"))?;
        // The verb follows the last `:` outside braces.
        let (path, verb) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains('}') => (&rest[..at], Some(rest[at + 1..].to_owned())),
            _ => (rest, None),
        };
        if verb.as_deref() == Some("") {
            return Err(fail("the verb after : is empty"));
        }
        let mut parsed = Template { segments: Vec::new(), variables: Vec::new(), verb };
        let mut chars = path;
        while !chars.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| fail("a { is not closed"))?;
                let (field_path, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                if field_path.is_empty() || !field_path.split('.').all(is_ident) {
                    return Err(fail("a variable must name a field"));
                }
                let start = parsed.segments.len();
                for piece in pattern.split('/') {
                    parsed
                        .segments
                        .push(segment(piece).ok_or_else(|| fail("a variable's pattern is invalid"))?);
                }
                let end = parsed.segments.len();
                parsed.variables.push(Variable { field_path: field_path.to_owned(), start, end });
                chars = &inner[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let piece = &chars[..end];
                if piece.contains(['{', '}']) {
                    return Err(fail("a variable must be a whole segment"));
                }
                parsed.segments.push(segment(piece).ok_or_else(|| fail("an empty segment"))?);
                chars = &chars[end..];
            }
            chars = match chars.strip_prefix('/') {
                Some("") => return Err(fail("a trailing /")),
                Some(next) => next,
                None if chars.is_empty() => chars,
                None => return Err(fail("a variable must be a whole segment")),
            };
        }
        if let Some(at) = parsed.segments.iter().position(|s| *s == Segment::Rest)
            && at + 1 != parsed.segments.len()
        {
            return Err(fail("** must be the last segment"));
        }
        Ok(parsed)
    }

    /// The variables' values if `path` (without query) matches, percent-decoded. A single-segment variable
    /// decodes everything; a multi-segment one keeps `%2F` as it is, as the rule syntax asks.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let pieces: Vec<&str> = path.split('/').collect();
        let mut spans = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if pieces.get(at)? != literal {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::One => {
                    pieces.get(at)?;
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::Rest => {
                    spans.push((at, pieces.len()));
                    at = pieces.len();
                }
            }
        }
        if at != pieces.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let from = spans.get(variable.start)?.0;
            let to = if variable.end > variable.start { spans.get(variable.end - 1)?.1 } else { from };
            let raw = pieces.get(from..to)?;
            let value = if raw.len() == 1 && variable.end - variable.start == 1 {
                percent_decode(raw.first()?, false)?
            } else {
                raw.iter().map(|p| percent_decode(p, true)).collect::<Option<Vec<_>>>()?.join("/")
            };
            values.push((variable.field_path.clone(), value));
        }
        Some(values)
    }

    /// How specific the template is: literal segments count, so that `/keys/_search` wins over `/keys/{id}`.
    pub fn literal_count(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
            + usize::from(self.verb.is_some())
    }

    /// The template in OpenAPI's form: each variable as `{name}`, its field path renamed by `rename`.
    pub fn openapi_path(&self, rename: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push('{');
                out.push_str(&rename(&variable.field_path));
                out.push('}');
                index = variable.end.max(index + 1);
            } else {
                if let Some(Segment::Literal(literal)) = self.segments.get(index) {
                    out.push_str(literal);
                } else {
                    out.push('*');
                }
                index += 1;
            }
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.openapi_path(str::to_owned))
    }
}

fn segment(piece: &str) -> Option<Segment> {
    match piece {
        "" => None,
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        literal => Some(Segment::Literal(literal.to_owned())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decodes `%XX` escapes; `None` when an escape is broken or the result is not UTF-8. `keep_slash` leaves `%2F`
/// encoded (multi-segment variables).
pub fn percent_decode(raw: &str, keep_slash: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            // Checked first: `from_str_radix` alone would also read `%+a` as the byte 0x0a.
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if keep_slash && byte == b'/' {
                out.extend_from_slice(&bytes[i..i + 3]);
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template).unwrap().matches(path)
    }

    fn pair(field: &str, value: &str) -> (String, String) {
        (field.to_owned(), value.to_owned())
    }

    #[test]
    fn variables_literals_and_verbs() {
        let t = "/management/v1/projects/{project_id}/apps/{app_id}/keys";
        assert_eq!(
            vars(t, "/management/v1/projects/1/apps/2/keys"),
            Some(vec![pair("project_id", "1"), pair("app_id", "2")])
        );
        assert_eq!(vars(t, "/management/v1/projects/1/apps/2/keys/3"), None);
        assert_eq!(vars(t, "/management/v1/projects/1/apps/2"), None);
        assert_eq!(vars(t, "/management/v1/projects/1/apps/2/key"), None);

        assert_eq!(
            vars("/apikeys/v1/keys/{id}:roll", "/apikeys/v1/keys/7:roll"),
            Some(vec![pair("id", "7")])
        );
        assert_eq!(vars("/apikeys/v1/keys/{id}:roll", "/apikeys/v1/keys/7"), None);
        assert_eq!(vars("/apikeys/v1/keys/{id}:roll", "/apikeys/v1/keys/7:other"), None);
        assert_eq!(
            vars("/apikeys/v1/keys/{id}", "/apikeys/v1/keys/a%2Fb%20c"),
            Some(vec![pair("id", "a/b c")])
        );
        assert_eq!(vars("/apikeys/v1/keys/{id}", "/apikeys/v1/keys/%zz"), None, "a broken escape");
        // Found by the `rest_path` fuzz target: a sign is not a hex digit, though `u8::from_str_radix` takes one.
        assert_eq!(vars("/apikeys/v1/keys/{id}", "/apikeys/v1/keys/%+a"), None, "a signed escape");
        assert_eq!(percent_decode("a%+1b", false), None);
        assert_eq!(percent_decode("%2b%2F", false).as_deref(), Some("+/"));
        assert_eq!(percent_decode("%2b%2F", true).as_deref(), Some("+%2F"));
        assert_eq!(vars("/v1/keys", "/v1/keys/"), None, "a trailing slash is another path");
    }

    #[test]
    fn patterns_inside_variables() {
        let t = "/v1/{name=projects/*/keys/*}:get";
        assert_eq!(vars(t, "/v1/projects/p/keys/k:get"), Some(vec![pair("name", "projects/p/keys/k")]));
        assert_eq!(vars(t, "/v1/projects/p:get"), None);
        assert_eq!(
            vars("/v1/{path=**}", "/v1/a/b%2Fc/d"),
            Some(vec![pair("path", "a/b%2Fc/d")]),
            "multi-segment variables keep %2F"
        );
        assert_eq!(vars("/v1/files/{path=**}", "/v1/file/a"), None);
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in
            ["v1/x", "/v1/{", "/v1/{}", "/v1/x{id}", "/v1/**/x", "/v1/x:", "/v1//x", "/v1/x/", "/v1/{a-b}"]
        {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openapi_paths_and_specificity() {
        let t = Template::parse("/p/{project_id}/k/{id}:roll").unwrap();
        assert_eq!(t.openapi_path(|f| f.to_uppercase()), "/p/{PROJECT_ID}/k/{ID}:roll");
        let search = Template::parse("/p/_search").unwrap();
        let one = Template::parse("/p/{id}").unwrap();
        assert!(search.literal_count() > one.literal_count());
    }
}
