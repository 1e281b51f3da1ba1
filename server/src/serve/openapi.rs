//! The OpenAPI document at `/api/openapi.json`. [`ROUTES`] is the one list of
//! endpoints: the document is built from it and a test checks the router answers each.

use hyperat::wire::schemars::generate::{Contract, SchemaSettings};
use hyperat::wire::{
    AttackResponse, CompareResponse, ErrorBody, Health, JobCancelled, JobEvent, JobList, JobRecord,
    JobSpec, MergeRequest, ModelDetail, ModelList, PredictResponse, SampleList, Showcase,
    TuneRequest,
};
use serde_json::{Map, Value, json};

/// `(method, path, summary, request body kind, response schema)` of every API endpoint;
/// the response is a [`hyperat::wire`] type's name, empty where the answer is not JSON.
pub const ROUTES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "get",
        "/api/health",
        "Liveness, model count, backend, job counts",
        "",
        "Health",
    ),
    (
        "get",
        "/api/models",
        "Models: id, classes, input size, channels, mean/std, variants",
        "",
        "ModelList",
    ),
    (
        "get",
        "/api/models/{id}",
        "One model, with its results table where evaluated",
        "",
        "ModelDetail",
    ),
    (
        "get",
        "/api/models/{id}/export",
        "The variant (`?variant=`) as a timm checkpoint (tar of config.json + model.safetensors)",
        "",
        "",
    ),
    (
        "get",
        "/api/models/{id}/showcase",
        "Test images to open a lesson on (`?n=&variant=&eps=`): both the base and the robust variant right, first those where PGD-10 fools the base and the robust one holds",
        "",
        "Showcase",
    ),
    (
        "post",
        "/api/predict",
        "Class probabilities and top-5 of an image (multipart: image | sample+dataset, model, variant, invert)",
        "multipart",
        "PredictResponse",
    ),
    (
        "post",
        "/api/attack",
        "Clean vs adversarial prediction, the verdict (fooled, held, nothing_found, already_wrong) with its headline, adversarial image and amplified perturbation (multipart: image | sample, model, variant, attack, eps, alpha, steps, restarts, seed, label, invert)",
        "multipart",
        "AttackResponse",
    ),
    (
        "post",
        "/api/compare",
        "Every variant attacked, and the transfer matrix (row: attacked variant, column: evaluated variant)",
        "multipart",
        "CompareResponse",
    ),
    (
        "get",
        "/api/samples",
        "Test images with labels (`?dataset=&class=&n=&offset=`), as PNG data URLs",
        "",
        "SampleList",
    ),
    (
        "post",
        "/api/jobs",
        "Queue a job: {kind: tune|pretrain|eval|report|merge, model, variant, config}",
        "json",
        "JobRecord",
    ),
    ("get", "/api/jobs", "Every job, newest first", "", "JobList"),
    ("get", "/api/jobs/{id}", "One job's record", "", "JobRecord"),
    (
        "delete",
        "/api/jobs/{id}",
        "Cancel a queued or running job; delete a finished one (record, folder and model)",
        "",
        "JobCancelled",
    ),
    (
        "patch",
        "/api/jobs/{id}",
        "Rename a job and its model: `{\"name\": \"…\"}` (empty or null: no name)",
        "json",
        "JobRecord",
    ),
    (
        "get",
        "/api/jobs/{id}/events",
        "Server-sent events: snapshot, metrics, progress, status",
        "",
        "",
    ),
    ("get", "/api/openapi.json", "This document", "", ""),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, response) in ROUTES {
        let ok = match *response {
            "" => json!({"description": "OK"}),
            name => {
                json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
            }
        };
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": ok,
                "4XX": {"description": "Client error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
                "5XX": {"description": "Server error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}},
            }
        });
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        match *body {
            "multipart" => {
                op["requestBody"] = json!({"required": true, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                    "image": {"type": "string", "format": "binary"}, "sample": {"type": "integer"}, "dataset": {"type": "string"},
                    "model": {"type": "string"}, "variant": {"type": "string"}, "attack": {"type": "string"},
                    "eps": {"type": "string", "description": "0.1 or 8/255"}, "alpha": {"type": "string"},
                    "steps": {"type": "integer", "maximum": 1000}, "restarts": {"type": "integer"}, "seed": {"type": "integer"},
                    "label": {"type": "integer"}, "invert": {"type": "boolean"}}}}}})
            }
            "json" => {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSubmission"}}}});
                op["security"] = json!([{"bearer": []}]);
            }
            _ => {}
        }
        if path.starts_with("/api/jobs") {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "HyperAT Studio", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Predictions, attacks, LoRA comparisons and tuning jobs on timm-compatible ViTs."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}

/// The schemas of every body the API answers, generated from the [`hyperat::wire`] types
/// (as they are serialized), and `JobSubmission`: a job spec as it may be sent (fields
/// with defaults optional).
pub fn schemas() -> Map<String, Value> {
    let mut settings = SchemaSettings::openapi3();
    settings.contract = Contract::Serialize;
    let mut g = settings.into_generator();
    g.subschema_for::<Health>();
    g.subschema_for::<ModelList>();
    g.subschema_for::<ModelDetail>();
    g.subschema_for::<Showcase>();
    g.subschema_for::<PredictResponse>();
    g.subschema_for::<AttackResponse>();
    g.subschema_for::<CompareResponse>();
    g.subschema_for::<SampleList>();
    g.subschema_for::<JobRecord>();
    g.subschema_for::<JobList>();
    g.subschema_for::<JobCancelled>();
    g.subschema_for::<JobEvent>();
    g.subschema_for::<ErrorBody>();
    let mut defs = g.take_definitions(true);
    let mut spec = request_schema::<JobSpec>();
    if let Some(o) = spec.as_object_mut() {
        o.insert("description".into(), json!(JOB_CONFIG));
    }
    defs.insert("JobSubmission".into(), spec);
    // The job configs the web UI builds too, field by field with their defaults.
    for (name, schema) in [
        ("TuneRequest", request_schema::<TuneRequest>()),
        ("MergeRequest", request_schema::<MergeRequest>()),
    ] {
        defs.insert(name.into(), schema);
    }
    defs
}

/// A request body's schema as a client sends it (the deserialize contract, inlined).
fn request_schema<T: hyperat::wire::schemars::JsonSchema>() -> Value {
    let mut settings = SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
    }
    schema
}

/// What a job's `config` holds, by kind.
const JOB_CONFIG: &str = "A job: `kind`, the `model` (and `variant`) it works on, a `name`, and `config`: the request of the job kind, as the CLI builds it from its flags (same defaults): tune: TuneRequest (kind, methods, steps, batch_size, lr, eps, attack_steps, rank, ...); pretrain: PretrainRequest (preset, dataset, epochs, max_steps, lr, ...); eval: EvalRequest (dataset, split, limit, attack, eps, alpha, steps, restarts, batch_size, seed, ...); report: ReportRequest (rows [{name, model, variant}], dataset, limit, eps, alpha, steps, aa_limit, ...); merge: MergeRequest (strategy, weights, density, per_layer, merge_steps, check_images, name, seed, ...) of the `model`'s HyperAT run, served as a new model";
