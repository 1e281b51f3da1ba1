//! The HTTP contract: every route's answer validates against the schema the OpenAPI
//! document gives it (generated from `hyperat::wire`), every error against `ErrorBody`,
//! every job event against `JobEvent`; and no route with a schema goes unexercised.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use hyperat_server::serve::openapi::ROUTES;
use serde_json::{Value, json};

/// Checks `v` against `schema` (the OpenAPI 3.0 subset schemars writes: `$ref`, `allOf`,
/// `oneOf`, `anyOf`, `type`, `nullable`, `enum`, `properties`, `required`,
/// `additionalProperties`, `items`, `minimum`), strictly: an object may hold only the
/// keys its schema names. The error names the path.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: dangling $ref {r}"));
        }
        return check(doc, target, v, at);
    }
    if v.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(doc, s, v, at)?;
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts.iter().filter(|s| check(doc, s, v, at).is_ok()).count();
        if ok != 1 {
            return Err(format!("{at}: {ok} of oneOf's {} match {v}", alts.len()));
        }
    }
    if let Some(alts) = schema["anyOf"].as_array()
        && !alts.iter().any(|s| check(doc, s, v, at).is_ok())
    {
        return Err(format!("{at}: no anyOf matches {v}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} not in {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let fits = |t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "null" => v.is_null(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let (Some(min), Some(x)) = (schema["minimum"].as_f64(), v.as_f64())
        && x < min
    {
        return Err(format!("{at}: {x} < minimum {min}"));
    }
    if let Some(obj) = v.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                return Err(format!("{at}: missing required `{key}`"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"))?,
                // Strict: a key the schema does not name is an error unless the schema
                // says others may come (a metrics record's open set of fields).
                None => match &schema["additionalProperties"] {
                    Value::Bool(true) => {}
                    s @ Value::Object(_) => check(doc, s, x, &format!("{at}.{k}"))?,
                    _ if props.is_some() => return Err(format!("{at}: unexpected `{k}`")),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(xs)) = (schema.get("items"), v.as_array()) {
        for (i, x) in xs.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn named(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The 200 schema the document gives `method path`.
fn ok_schema(doc: &Value, method: &str, path: &str) -> Value {
    doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"].clone()
}

#[test]
fn the_checker_refuses_what_does_not_fit() {
    let doc = json!({"components": {"schemas": {"P": {"type": "object", "required": ["a"],
        "additionalProperties": false,
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": "string", "nullable": true}}}}}});
    let p = named("P");
    assert!(check(&doc, &p, &json!({"a": 1, "b": null}), "$").is_ok());
    for bad in [
        json!({"b": "x"}),
        json!({"a": -1}),
        json!({"a": 1, "c": 2}),
        json!({"a": "1"}),
        json!([]),
    ] {
        assert!(check(&doc, &p, &bad, "$").is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_fits_the_documented_schema() {
    let s = server(None, true);
    let r = &s.router;
    let (st, doc) = json(r, get("/api/openapi.json")).await;
    assert_eq!(st, StatusCode::OK);
    let mut seen = BTreeSet::new();
    // Answers one request and checks its body against the route's schema.
    macro_rules! fits {
        ($method:expr, $path:expr, $req:expr) => {{
            let (st, v) = json(r, $req).await;
            assert!(st.is_success(), "{} {}: {st} {v}", $method, $path);
            let schema = ok_schema(&doc, $method, $path);
            assert!(!schema.is_null(), "{} {} has no schema", $method, $path);
            if let Err(e) = check(&doc, &schema, &v, "$") {
                panic!("{} {}: {e}\n{v}", $method, $path);
            }
            seen.insert(($method.to_string(), $path.to_string()));
            v
        }};
    }
    fits!("get", "/api/health", get("/api/health"));
    fits!("get", "/api/models", get("/api/models"));
    fits!("get", "/api/models/{id}", get("/api/models/tiny"));
    fits!(
        "get",
        "/api/models/{id}/showcase",
        get("/api/models/tiny/showcase?n=2")
    );
    fits!("get", "/api/samples", get("/api/samples?n=3"));
    let at = |uri: &str, fields: &[(&str, &str)]| post_form(uri, multipart(fields, None));
    fits!(
        "post",
        "/api/predict",
        at("/api/predict", &[("model", "tiny"), ("sample", "0")])
    );
    fits!(
        "post",
        "/api/attack",
        at(
            "/api/attack",
            &[
                ("model", "tiny"),
                ("sample", "1"),
                ("attack", "pgd"),
                ("steps", "2")
            ]
        )
    );
    fits!(
        "post",
        "/api/compare",
        at(
            "/api/compare",
            &[("model", "tiny"), ("sample", "2"), ("attack", "fgsm")]
        )
    );
    let spec = json!({"kind": "eval", "model": "tiny",
                      "config": {"limit": 8, "steps": 1, "batch_size": 8}});
    let job = fits!("post", "/api/jobs", post_json("/api/jobs", &spec, None));
    let id = job["id"].as_str().unwrap().to_string();
    wait_job(r, &id, 300, |v| v["status"] == "done").await;
    fits!("get", "/api/jobs", get("/api/jobs"));
    fits!("get", "/api/jobs/{id}", get(&format!("/api/jobs/{id}")));
    let rename = Request::patch(format!("/api/jobs/{id}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name": "contract"}"#))
        .unwrap();
    fits!("patch", "/api/jobs/{id}", rename);
    // Every event of the stream is a JobEvent.
    let (st, body) = send(r, get(&format!("/api/jobs/{id}/events"))).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    let mut events = 0;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(data).unwrap();
        check(&doc, &named("JobEvent"), &v, "$").unwrap_or_else(|e| panic!("{e}\n{v}"));
        events += 1;
    }
    assert!(events >= 2, "snapshot and final status at least: {text}");
    seen.insert(("get".into(), "/api/jobs/{id}/events".into()));
    let delete = Request::delete(format!("/api/jobs/{id}"))
        .body(Body::empty())
        .unwrap();
    let v = fits!("delete", "/api/jobs/{id}", delete);
    assert_eq!(v["deleted"], true);
    // Errors: every one is an ErrorBody.
    for req in [
        get("/api/models/nope"),
        get("/api/samples?n=0"),
        at(
            "/api/attack",
            &[("model", "tiny"), ("sample", "0"), ("eps", "7")],
        ),
        post_json(
            "/api/jobs",
            &json!({"kind": "eval", "config": {"atack": 1}}),
            None,
        ),
    ] {
        let (st, v) = json(r, req).await;
        assert!(st.is_client_error(), "{st} {v}");
        check(&doc, &named("ErrorBody"), &v, "$").unwrap_or_else(|e| panic!("{e}\n{v}"));
    }
    // No documented JSON answer went unchecked.
    for (method, path, _, _, response) in ROUTES {
        if !response.is_empty() {
            assert!(
                seen.contains(&(method.to_string(), path.to_string())),
                "{method} {path} not exercised"
            );
        }
    }
    s.state.jobs.stop();
}
