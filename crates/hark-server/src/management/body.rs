//! Reading a management request body: any body that parses as JSON is taken, whatever
//! its `Content-Type` (as `/v2` does; cookie sessions are guarded by the CSRF token and
//! SameSite cookies, not by the content type), and a body that does not fit the route
//! is refused in our own words — which field, and what it must be, read from the
//! route's JSON schema. A deserializer's message never reaches the client.

use super::MgmtError;
use schemars::schema::{InstanceType, RootSchema, Schema, SchemaObject, SingleOrVec};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `bytes` as the body of a route taking `T`.
pub fn parse<T: DeserializeOwned + JsonSchema>(bytes: &[u8]) -> Result<T, MgmtError> {
    let invalid = |msg: String| MgmtError::Invalid(msg);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "a JSON body is required (an object with the documented fields)".into(),
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = &value else {
        return Err(invalid(
            "the body must be a JSON object with the documented fields".into(),
        ));
    };
    let missing = |root: &RootSchema| {
        let object = root.schema.object.as_ref()?;
        let name = object
            .required
            .iter()
            .find(|name| fields.get(*name).is_none_or(Value::is_null))?;
        Some(format!(
            "{name} is required{}",
            expectation(root, object.properties.get(name))
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ))
    };
    serde_path_to_error::deserialize::<_, T>(&value).map_err(|e| {
        // The schema is built only for a refusal: the happy path never pays for it.
        let root = schemars::gen::SchemaGenerator::default().into_root_schema_for::<T>();
        let path = e.path().to_string();
        let field = path.split(['.', '[']).next().unwrap_or("");
        let schema = root
            .schema
            .object
            .as_ref()
            .and_then(|o| o.properties.get(field));
        match expectation(&root, schema) {
            Some(e) if path == field => invalid(format!("{field} must be {e}")),
            Some(e) => invalid(format!(
                "{path} has a wrong type or value ({field} must be {e})"
            )),
            None if field.is_empty() || path == "." => {
                invalid(missing(&root).unwrap_or_else(|| {
                    "the body does not have the documented fields and types".into()
                }))
            }
            None => invalid(format!("{path} has a wrong type or value")),
        }
    })
}

/// What a property must be, in words: "one of: admin, reader", "a string", ….
fn expectation(root: &RootSchema, schema: Option<&Schema>) -> Option<String> {
    let object = resolve(root, schema?)?;
    if let Some(values) = &object.enum_values {
        let names: Vec<String> = values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        return Some(format!("one of: {}", names.join(", ")));
    }
    if let Some(any_of) = object.subschemas.as_ref().and_then(|s| s.any_of.as_ref()) {
        // `Option<T>` with a custom schema: the non-null alternative.
        return any_of
            .iter()
            .filter_map(|s| expectation(root, Some(s)))
            .find(|e| e != "null");
    }
    let types: Vec<InstanceType> = match &object.instance_type {
        Some(SingleOrVec::Single(t)) => vec![**t],
        Some(SingleOrVec::Vec(v)) => v.clone(),
        None => return None,
    };
    let main = types.iter().find(|t| **t != InstanceType::Null)?;
    Some(match main {
        InstanceType::String => "a string".into(),
        InstanceType::Integer => "an integer".into(),
        InstanceType::Number => "a number".into(),
        InstanceType::Boolean => "true or false".into(),
        InstanceType::Object => "an object".into(),
        InstanceType::Null => "null".into(),
        InstanceType::Array => {
            let items = object.array.as_ref().and_then(|a| match &a.items {
                Some(SingleOrVec::Single(s)) => expectation(root, Some(s)),
                _ => None,
            });
            match items.as_deref() {
                Some("a string") => "a list of strings".into(),
                Some("an integer") => "a list of integers".into(),
                Some("a number") => "a list of numbers".into(),
                Some(e) if e.starts_with("one of") => format!("a list of values, each {e}"),
                _ => "a list".into(),
            }
        }
    })
}

/// The schema object, following a `$ref` into the root's definitions.
fn resolve<'a>(root: &'a RootSchema, schema: &'a Schema) -> Option<&'a SchemaObject> {
    let Schema::Object(object) = schema else {
        return None;
    };
    match &object.reference {
        Some(r) => {
            let name = r.rsplit('/').next()?;
            resolve(root, root.definitions.get(name)?)
        }
        None => Some(object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::Role;
    use serde::Deserialize;

    fn role_schema(_: &mut schemars::gen::SchemaGenerator) -> Schema {
        SchemaObject {
            instance_type: Some(InstanceType::String.into()),
            enum_values: Some(vec!["admin".into(), "reader".into()]),
            ..Default::default()
        }
        .into()
    }

    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Input {
        email: String,
        #[serde(default)]
        #[schemars(schema_with = "role_schema")]
        role: Option<Role>,
        #[serde(default)]
        count: Option<u32>,
        #[serde(default)]
        flags: Vec<String>,
    }

    fn error(body: &str) -> String {
        match parse::<Input>(body.as_bytes()) {
            Err(MgmtError::Invalid(msg)) => msg,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn refusals_say_which_field_and_what_it_must_be() {
        assert_eq!(
            error("{\"email\": \"a@b\", \"role\": \"boss\"}"),
            "role must be one of: admin, reader"
        );
        assert_eq!(error("{\"email\": 5}"), "email must be a string");
        assert_eq!(
            error("{\"role\": \"admin\"}"),
            "email is required (a string)"
        );
        assert_eq!(
            error("{\"email\": \"a\", \"count\": \"x\"}"),
            "count must be an integer"
        );
        assert_eq!(
            error("{\"email\": \"a\", \"flags\": [1]}"),
            "flags[0] has a wrong type or value (flags must be a list of strings)"
        );
        assert_eq!(
            error("{\"email\": \"a\", \"flags\": 1}"),
            "flags must be a list of strings"
        );
        assert_eq!(
            error("[1]"),
            "the body must be a JSON object with the documented fields"
        );
        assert_eq!(
            error("{\"email\""),
            "the body is not valid JSON (line 1, column 8)"
        );
        assert_eq!(
            error(""),
            "a JSON body is required (an object with the documented fields)"
        );
        for body in [
            "{\"email\": 5}",
            "{\"email\": \"a\", \"role\": \"Boss\"}",
            "{\"email\": \"a\", \"count\": -1}",
        ] {
            let msg = error(body);
            for leak in [
                "invalid type",
                "expected",
                "unknown variant",
                "deserialize",
                "`",
            ] {
                assert!(!msg.contains(leak), "{body}: {msg}");
            }
        }
        let ok = parse::<Input>(b"{\"email\": \"a\", \"role\": \"Reader\"}").unwrap();
        assert_eq!(ok.role, Some(Role::Reader));
    }
}
