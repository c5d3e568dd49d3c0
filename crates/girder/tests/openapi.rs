//! The OpenAPI document as a contract: every link names an operation that exists,
//! every creating operation links to the operations that take its id, and every
//! protected operation declares its bearer scheme and its 401.

use std::collections::BTreeSet;

use serde_json::Value;

fn document() -> Value {
    girder_http::openapi::to_json(&girder::app::openapi())
}

fn operations(doc: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    doc["paths"].as_object().expect("paths").iter().flat_map(|(path, item)| {
        item.as_object()
            .expect("path item")
            .iter()
            .filter(|(method, _)| {
                ["get", "put", "post", "patch", "delete"].contains(&method.as_str())
            })
            .map(move |(method, op)| (path.as_str(), method.as_str(), op))
    })
}

#[test]
fn links_point_at_operations_that_exist() {
    let doc = document();
    let ids: BTreeSet<&str> =
        operations(&doc).filter_map(|(_, _, op)| op["operationId"].as_str()).collect();
    let mut links = 0;
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().expect("operationId");
                assert!(ids.contains(target), "{method} {path} {status}: link {name} -> {target}");
                links += 1;
            }
        }
    }
    // Bit.ly 4, Ticketmaster 9, GoPuff 3, rate limiter 6 (on 200 and 201), News Feed 2,
    // Ad Click Aggregator 3.
    assert_eq!(links, 27, "every create links to the reads and writes that take its id");
}

#[test]
fn protected_operations_declare_bearer_and_401() {
    let doc = document();
    let mut protected = 0;
    for (path, method, op) in operations(&doc) {
        let Some(security) = op["security"].as_array() else { continue };
        assert!(security.iter().any(|s| s.get("bearer").is_some()), "{method} {path}");
        assert!(op["responses"].get("401").is_some(), "{method} {path} declares no 401");
        protected += 1;
    }
    assert!(protected >= 16, "only {protected} operations are protected");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// Two systems may not define different schemas under one component name: merging
/// documents keeps the first and silently drops the other, so one system's responses
/// would be validated against the other's schema.
#[test]
fn component_names_are_not_shared_by_different_schemas() {
    use utoipa::OpenApi as _;
    let mut docs = vec![("auth", girder_http::auth::AuthApi::openapi())];
    for plan in &girder::systems::SYSTEMS {
        if let Some(doc) = plan.openapi() {
            docs.push((plan.info().slug, doc));
        }
    }
    let mut seen: std::collections::BTreeMap<String, (&str, Value)> = Default::default();
    for (slug, doc) in &docs {
        let json = girder_http::openapi::to_json(doc);
        for (name, schema) in json["components"]["schemas"].as_object().into_iter().flatten() {
            match seen.get(name) {
                Some((first, earlier)) => assert_eq!(
                    earlier, schema,
                    "component {name} means different things to {first} and {slug}"
                ),
                None => {
                    seen.insert(name.clone(), (slug, schema.clone()));
                }
            }
        }
    }
    assert!(seen.len() > 50, "only {} components", seen.len());
}
