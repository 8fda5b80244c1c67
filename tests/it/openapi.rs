//! The OpenAPI document lists every route, and real responses of every endpoint conform to the
//! schemas it declares (checked by a small validator of the JSON Schema subset utoipa emits).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::common::{event, Server};

#[tokio::test]
async fn the_document_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let doc = server
        .client()
        .await
        .get("/api/v2/openapi.json", None)
        .await
        .unwrap()
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let routed: BTreeSet<&str> = mcplog::http::Route::ALL.iter().map(|r| r.path()).collect();
    assert_eq!(documented, routed);
    assert_eq!(
        doc["paths"]["/api/v2/interactions"]
            .as_object()
            .unwrap()
            .len(),
        2,
        "GET and POST"
    );
}

#[tokio::test]
async fn every_response_conforms_to_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let doc = server
        .client()
        .await
        .get("/api/v2/openapi.json", None)
        .await
        .unwrap()
        .json();
    let mut with_id =
        serde_json::from_str::<Value>(&event("interaction_start", "c-1", "m", 1.0)).unwrap();
    with_id["event_id"] = json!("e-1");
    // (method, path template, request path, body, expected status)
    let cases: Vec<(&str, &str, String, Option<String>, u16)> = vec![
        (
            "post",
            "/api/v2/interactions",
            "/api/v2/interactions".into(),
            Some(with_id.to_string()),
            200,
        ),
        (
            "post",
            "/api/v2/interactions",
            "/api/v2/interactions".into(),
            Some(with_id.to_string()),
            200,
        ),
        (
            "post",
            "/api/v2/interactions",
            "/api/v2/interactions".into(),
            Some("{\"action\":1}".into()),
            422,
        ),
        (
            "post",
            "/api/v2/interactions",
            "/api/v2/interactions".into(),
            Some({
                let mut reused = with_id.clone();
                reused["timestamp"] = json!(2.0);
                reused.to_string()
            }),
            409,
        ),
        (
            "post",
            "/api/v2/interactions/batch",
            "/api/v2/interactions/batch".into(),
            Some(format!(
                "[{},{}]",
                event("interaction_progress", "c-1", "m", 1.5),
                event("interaction_complete", "c-1", "m", 2.0)
            )),
            200,
        ),
        (
            "post",
            "/api/v2/interactions/batch",
            "/api/v2/interactions/batch".into(),
            Some("[{}, {}]".into()),
            422,
        ),
        (
            "post",
            "/api/v2/interactions/batch",
            "/api/v2/interactions/batch".into(),
            Some(format!(
                "{}\n\n{}\n",
                event("interaction_progress", "o-1", "m", 1.0),
                event("interaction_progress", "o-1", "m", 1.1)
            )),
            200,
        ),
        (
            "post",
            "/api/v2/interactions/batch",
            "/api/v2/interactions/batch".into(),
            Some(event("interaction_progress", "o-2", "m", 1.0)),
            400,
        ),
        (
            "get",
            "/api/v2/interactions",
            "/api/v2/interactions?limit=1".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/interactions",
            "/api/v2/interactions?limit=x".into(),
            None,
            400,
        ),
        (
            "get",
            "/api/v2/interactions/{id}",
            "/api/v2/interactions/c-1".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/interactions/{id}",
            "/api/v2/interactions/o-1".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/interactions/{id}",
            "/api/v2/interactions/none".into(),
            None,
            404,
        ),
        (
            "get",
            "/api/v2/interactions/{id}/events",
            "/api/v2/interactions/c-1/events".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/interactions/{id}",
            "/api/v2/interactions/c-1?min_seq=1000".into(),
            None,
            409,
        ),
        (
            "get",
            "/api/v2/interactions/{id}/events",
            "/api/v2/interactions/c-1/events?min_seq=1000".into(),
            None,
            409,
        ),
        (
            "get",
            "/api/v2/interactions/stats",
            "/api/v2/interactions/stats".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/performance/metrics",
            "/api/v2/performance/metrics?time_range=30d".into(),
            None,
            200,
        ),
        (
            "get",
            "/api/v2/performance/metrics",
            "/api/v2/performance/metrics?time_range=1y".into(),
            None,
            400,
        ),
        ("get", "/api/v2/health", "/api/v2/health".into(), None, 200),
    ];
    // Every operation's 400 for a parameter it does not take is documented and shaped so.
    let mut cases = cases;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "c-1");
            cases.push((
                method.as_str(),
                path.as_str(),
                format!("{concrete}?no_such_parameter=1"),
                (method == "post").then(|| "{}".to_owned()),
                400,
            ));
        }
    }
    for (method, template, path, body, status) in cases {
        let mut client = server.client().await;
        let response = match body {
            Some(body) => client.post(&path, Some(&server.key), body).await.unwrap(),
            None => client.get(&path, Some(&server.key)).await.unwrap(),
        };
        assert_eq!(
            response.status.as_u16(),
            status,
            "{method} {path}: {}",
            response.json()
        );
        let declared = &doc["paths"][template][method]["responses"][status.to_string()];
        assert!(
            declared.is_object(),
            "{method} {template} does not declare status {status}"
        );
        let schema = &declared["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no JSON schema"
        );
        if let Err(fault) = conforms(&doc, schema, &response.json(), "$") {
            panic!(
                "{method} {path} ({status}) does not conform: {fault}\n{}",
                response.json()
            );
        }
    }
    // Without a key: 401 in the documented error shape.
    let response = server
        .client()
        .await
        .get("/api/v2/interactions/stats", None)
        .await
        .unwrap();
    let schema = &doc["paths"]["/api/v2/interactions/stats"]["get"]["responses"]["401"]["content"]
        ["application/json"]["schema"];
    conforms(&doc, schema, &response.json(), "$").unwrap();
}

/// `/metrics` is public by default and may need a key (`api.metrics_auth`): the document says
/// both (an empty security requirement beside the bearer one), and its 401 and 403 are the
/// answers it declares.
#[tokio::test]
async fn metrics_behind_a_key_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("MCPLOG_METRICS_AUTH", "true")]);
    let doc = server
        .client()
        .await
        .get("/api/v2/openapi.json", None)
        .await
        .unwrap()
        .json();
    let operation = &doc["paths"]["/metrics"]["get"];
    assert_eq!(operation["security"], json!([{}, {"bearer": []}]));
    let writer = std::process::Command::new(env!("CARGO_BIN_EXE_mcplog"))
        .args([
            "keygen",
            "--mcp-id",
            "m",
            "--expires-in",
            "1h",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("MCPLOG_MASTER_SECRET")
        .output()
        .unwrap();
    let writer = String::from_utf8(writer.stdout).unwrap().trim().to_owned();
    for (key, status) in [(None, 401), (Some(writer.as_str()), 403)] {
        let response = server.client().await.get("/metrics", key).await.unwrap();
        assert_eq!(response.status.as_u16(), status);
        let schema =
            &operation["responses"][status.to_string()]["content"]["application/json"]["schema"];
        conforms(&doc, schema, &response.json(), "$").unwrap();
    }
    let answer = server
        .client()
        .await
        .get("/metrics", Some(&server.key))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(operation["responses"]["200"]["content"]["text/plain"].is_object());
}

/// Whether `value` conforms to `schema`: `$ref`, `oneOf`/`anyOf`/`allOf`, `type` (one or a list),
/// `properties` (extra properties are faults when a schema lists any), `required`, `items`, `enum`.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or(format!("{at}: odd $ref {reference}"))?;
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            if !options.iter().any(|s| conforms(doc, s, value, at).is_ok()) {
                return Err(format!("{at}: matches none of {key} {schema}"));
            }
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            conforms(doc, s, value, at)?;
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name} missing"));
            }
        }
        for (name, field) in object {
            let declared = properties
                .get(name)
                .ok_or(format!("{at}: property {name} is not in the schema"))?;
            conforms(doc, declared, field, &format!("{at}.{name}"))?;
        }
    }
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_validator_catches_drift() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let doc = server
        .client()
        .await
        .get("/api/v2/openapi.json", None)
        .await
        .unwrap()
        .json();
    let schema = &doc["paths"]["/api/v2/interactions/stats"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let good = server.get("/api/v2/interactions/stats").await.json();
    conforms(&doc, schema, &good, "$").unwrap();
    let mut extra = good.clone();
    extra["records"]["surprise"] = json!(1);
    assert!(
        conforms(&doc, schema, &extra, "$").is_err(),
        "an undeclared field passed"
    );
    let mut wrong_type = good.clone();
    wrong_type["records"]["total"] = json!("many");
    assert!(
        conforms(&doc, schema, &wrong_type, "$").is_err(),
        "a wrong type passed"
    );
    let mut missing = good;
    missing["storage"].as_object_mut().unwrap().remove("bytes");
    assert!(
        conforms(&doc, schema, &missing, "$").is_err(),
        "a missing required field passed"
    );
}

#[tokio::test]
async fn a_generator_working_from_the_event_schema_makes_valid_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let doc = server
        .client()
        .await
        .get("/api/v2/openapi.json", None)
        .await
        .unwrap()
        .json();
    let body_schema = &doc["paths"]["/api/v2/interactions"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let event_schema = &doc["components"]["schemas"]["Event"];
    assert_eq!(body_schema["$ref"], "#/components/schemas/Event");
    let variants = event_schema["oneOf"].as_array().unwrap();
    assert_eq!(variants.len(), 5, "one shape per action");
    for (n, variant) in variants.iter().enumerate() {
        // What a naive generator does: every property, each at its simplest valid value.
        let mut instance = serde_json::Map::new();
        for (name, property) in variant["properties"].as_object().unwrap() {
            let value =
                match property["type"].as_str().unwrap() {
                    "string" => match property["enum"].as_array() {
                        Some(allowed) => allowed[0].clone(),
                        None => json!(format!("g{n}")
                            .repeat(property["minLength"].as_u64().unwrap() as usize)),
                    },
                    "number" => json!(property["exclusiveMinimum"].as_f64().unwrap() + 1.0),
                    "object" => json!({}),
                    other => panic!("unexpected type {other}"),
                };
            instance.insert(name.clone(), value);
        }
        let instance = Value::Object(instance);
        conforms(&doc, event_schema, &instance, "$").unwrap();
        let response = server
            .post("/api/v2/interactions", instance.to_string())
            .await;
        assert_eq!(response.status, 200, "{instance} -> {}", response.json());
        // The schema and the server agree on what is refused: an unknown field, and another
        // action's payload field.
        let mut extra = instance.clone();
        extra["colour"] = json!("red");
        assert!(conforms(&doc, variant, &extra, "$").is_err());
        assert_eq!(
            server
                .post("/api/v2/interactions", extra.to_string())
                .await
                .status,
            422
        );
        for field in required_of(variant) {
            let mut missing = instance.clone();
            missing.as_object_mut().unwrap().remove(&field);
            assert_eq!(
                server
                    .post("/api/v2/interactions", missing.to_string())
                    .await
                    .status,
                422,
                "without {field}"
            );
        }
    }
    // The stated bounds are the enforced ones.
    let start = &variants[0]["properties"];
    let too_long = "x".repeat(start["interaction_id"]["maxLength"].as_u64().unwrap() as usize + 1);
    let body = json!({"action": "interaction_start", "interaction_id": too_long, "mcp_id": "m", "timestamp": 1.0});
    assert_eq!(
        server
            .post("/api/v2/interactions", body.to_string())
            .await
            .status,
        422
    );
    let at_max = start["timestamp"]["maximum"].as_f64().unwrap();
    let body = json!({"action": "interaction_start", "interaction_id": "t", "mcp_id": "m", "timestamp": at_max * 1.01});
    assert_eq!(
        server
            .post("/api/v2/interactions", body.to_string())
            .await
            .status,
        422
    );
}

fn required_of(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}
