//! The statuses the shared layers can answer on any operation, declared once.
//!
//! The extractors, the body limit and the rate-limit layer sit in front of every
//! handler, so the problems they produce belong in every operation's document, not in
//! each handler's prose. [`declare_shared_responses`] adds, wherever missing:
//! - 400 to operations that read a path, query or body (unreadable input, by the rule
//!   in [`crate::problem`]);
//! - 413, 415 and 422 to operations with a JSON body;
//! - 429 to every operation (a rules file can limit any path).

use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

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
            declare(operation, "429", "Rate limited: see Retry-After and RateLimit");
        }
    }
}
