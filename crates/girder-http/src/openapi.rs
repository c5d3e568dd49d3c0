//! The statuses the shared layers can answer on any operation, declared once.
//!
//! The extractors, the body limit and the rate-limit layer sit in front of every
//! handler, so the problems they produce belong in every operation's document, not in
//! each handler's prose. [`declare_shared_responses`] adds, wherever missing:
//! - 400 to operations that read a path, query or body (unreadable input, by the rule
//!   in [`crate::problem`]);
//! - 413, 415 and 422 to operations with a JSON body;
//! - 401 to every operation that names a security scheme (the identity extractors);
//! - 429 to every operation (a rules file can limit any path).

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::problem::PROBLEM_JSON;

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
        )
        .build()
}

fn declare(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if !responses.contains_key(status) {
        responses.insert(status.to_owned(), problem_response(description).into());
    }
}

/// Adds the shared layers' statuses to every operation of `doc`.
pub fn declare_shared_responses(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let has_body = operation.request_body.is_some();
            if has_params || has_body {
                declare(
                    operation,
                    "400",
                    "Unreadable input: malformed JSON, a parameter that does not parse, a forged cursor",
                );
            }
            if has_body {
                declare(operation, "413", "Request body too large");
                declare(operation, "415", "Expected Content-Type: application/json");
                declare(operation, "422", "A value breaks a rule");
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                declare(operation, "401", "No valid bearer token (see girder_http::identity)");
            }
            declare(operation, "429", "Rate limited: see Retry-After and RateLimit");
        }
    }
}

/// Where a created resource's id comes from, for [`link`].
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The creating operation's path, e.g. `/api/bitly/urls`.
    pub from_path: &'a str,
    /// Its method, lower case: `post`, `put`.
    pub from_method: &'a str,
    /// The status whose response carries the id, e.g. `201`.
    pub status: &'a str,
    /// The operation that takes the id (its `operationId`).
    pub to_operation: &'a str,
    /// The parameter of that operation the id fills.
    pub parameter: &'a str,
    /// A runtime expression for the id: `$response.body#/code`, `$request.path.name`.
    pub value: &'a str,
}

/// Links the `id` that `POST from_path` answers in its 201 body to the `id` path
/// parameter of each of `to_operations`: how every create in the house is linked to
/// the operations that take what it made.
///
/// # Panics
/// As [`link`].
pub fn link_created_ids(doc: &mut OpenApi, from_path: &str, to_operations: &[&str]) {
    for to_operation in to_operations {
        let from = Link {
            from_path,
            from_method: "post",
            status: "201",
            to_operation,
            parameter: "id",
            value: "$response.body#/id",
        };
        link(doc, from);
    }
}

/// Adds an OpenAPI link from a creating operation's response to an operation that
/// takes what it created, so a stateful client (schemathesis' stateful phase) can chain
/// a create into its reads and writes. A link whose source is missing is a bug in the
/// system's list of links: it panics in the system's tests, not at run time.
///
/// # Panics
/// The source operation or its response is not in `doc`.
pub fn link(doc: &mut OpenApi, link: Link<'_>) {
    let item = doc
        .paths
        .paths
        .get_mut(link.from_path)
        .unwrap_or_else(|| panic!("no path {}", link.from_path));
    let operation = match link.from_method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "put" => item.put.as_mut(),
        "patch" => item.patch.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("no {} {}", link.from_method, link.from_path));
    let Some(RefOr::T(response)) = operation.responses.responses.get_mut(link.status) else {
        panic!("no {} response on {}", link.status, link.from_path)
    };
    let built = LinkBuilder::new()
        .operation_id(link.to_operation)
        .parameter(link.parameter, link.value)
        .build();
    let name = format!("{}_{}", link.to_operation, link.parameter);
    response.links.insert(name, RefOr::T(built));
}

/// The document as JSON, as clients read it. utoipa 5 writes a link's fields in
/// snake case (`operation_id`); OpenAPI spells them `operationId`, `operationRef` and
/// `requestBody`, and tools ignore links spelled otherwise. This renames them.
///
/// # Panics
/// Never: an `OpenApi` always serialises.
#[must_use]
pub fn to_json(doc: &OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).expect("an OpenApi document serialises");
    if let Some(paths) = value.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
        let responses = paths
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|op| op.get_mut("responses").and_then(serde_json::Value::as_object_mut))
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let Some(links) = response.get_mut("links").and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            for link in links.values_mut().filter_map(serde_json::Value::as_object_mut) {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(v) = link.remove(snake) {
                        link.insert(camel.to_owned(), v);
                    }
                }
            }
        }
    }
    value
}
