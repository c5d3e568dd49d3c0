//! The sign-in endpoints, mounted by the server at `/api/auth`:
//!
//! - `POST /demo` issues a token for a fresh demo user (`demo-` + 16 hex digits). Each
//!   call is a new identity, so nobody can obtain a token for somebody else's name. With
//!   `{"role": "operator"}` it issues an operator token — only while demo operators are
//!   allowed (the default of a server with no operator password, for the dashboard's
//!   one-click pages; never once an operator password is set).
//! - `POST /token` signs the operator in with its password, checked against an argon2
//!   hash (the plain password is hashed at start-up and dropped).

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use girder_core::Clock;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use crate::extract::Json;
use crate::identity::{AuthError, IssuedToken, Role, Tokens};
use crate::problem::Problem;

/// How operators sign in.
#[derive(Clone)]
pub enum OperatorAccess {
    /// No operator password: `POST /demo` may issue operator tokens.
    Demo,
    /// Operators sign in at `POST /token` with the password whose argon2 hash this is;
    /// demo operator tokens are refused.
    Password(String),
}

impl std::fmt::Debug for OperatorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Demo => "OperatorAccess::Demo",
            Self::Password(_) => "OperatorAccess::Password(..)",
        })
    }
}

impl OperatorAccess {
    /// Operators sign in with `password`, kept only as its argon2 hash.
    ///
    /// # Errors
    /// The hash could not be computed (argon2's parameters are fixed: in practice, never).
    pub fn password(password: &str) -> Result<Self, argon2::password_hash::Error> {
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt)?;
        Ok(Self::Password(hash.to_string()))
    }
}

/// What the sign-in endpoints need.
#[derive(Clone)]
pub struct Auth {
    tokens: Tokens,
    operators: OperatorAccess,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The endpoints over `tokens`.
    #[must_use]
    pub fn new(tokens: Tokens, operators: OperatorAccess, clock: Arc<dyn Clock>) -> Self {
        Self { tokens, operators, clock }
    }

    /// The tokens it issues, which every extractor verifies.
    #[must_use]
    pub const fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The routes, to nest at `/api/auth`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/demo", post(demo))
            .route("/token", post(sign_in))
            .with_state(Arc::new(self))
    }

    fn now_secs(&self) -> u64 {
        self.clock.now_ms() / 1_000
    }
}

/// `POST /demo`: which role the demo token has.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoRequest {
    /// `user` (the default) or `operator` (only while demo operators are allowed).
    #[serde(default)]
    pub role: Option<Role>,
}

/// `POST /token`: the operator's credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// Always `operator`.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The operator password.
    #[schema(min_length = 1, max_length = 1024)]
    pub password: String,
}

/// A token for a fresh demo user.
#[utoipa::path(
    post,
    path = "/api/auth/demo",
    tag = "auth",
    request_body(content = Option<DemoRequest>, description = "Optional: the role wanted"),
    responses(
        (status = 201, description = "A token for a new demo identity", body = IssuedToken),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Operator tokens are not issued to demo users on this server", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role or field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn demo(State(auth): State<Arc<Auth>>, body: axum::body::Bytes) -> Response {
    // An empty body is a plain demo user; anything else must be a DemoRequest.
    let request = if body.is_empty() {
        DemoRequest::default()
    } else {
        // Only an object (or null) is a DemoRequest: serde would also read a struct
        // from a JSON array.
        let parsed = serde_json::from_slice::<serde_json::Value>(&body).and_then(|value| {
            if value.is_object() || value.is_null() {
                serde_json::from_value::<Option<DemoRequest>>(value)
            } else {
                Err(serde::de::Error::custom("the body must be a JSON object"))
            }
        });
        match parsed {
            Ok(request) => request.unwrap_or_default(),
            Err(e) if e.is_syntax() || e.is_eof() => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON body",
                )
                .detail(e.to_string())
                .into_response();
            }
            Err(e) => {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "JSON body has the wrong shape",
                )
                .detail(e.to_string())
                .into_response();
            }
        }
    };
    let role = request.role.unwrap_or(Role::User);
    if role == Role::Operator && !matches!(auth.operators, OperatorAccess::Demo) {
        return AuthError::Forbidden(
            "this server has an operator password: sign in at POST /api/auth/token".to_owned(),
        )
        .into_response();
    }
    let user = format!("demo-{:016x}", rand::random::<u64>());
    (StatusCode::CREATED, axum::Json(auth.tokens.issue(&user, role, auth.now_secs())))
        .into_response()
}

/// The operator signs in with its password.
#[utoipa::path(
    post,
    path = "/api/auth/token",
    tag = "auth",
    request_body = SignInRequest,
    responses(
        (status = 200, description = "An operator token", body = IssuedToken),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong name or password, or no operator password on this server", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn sign_in(
    State(auth): State<Arc<Auth>>,
    Json(request): Json<SignInRequest>,
) -> Result<axum::Json<IssuedToken>, AuthError> {
    let refused = || AuthError::Unauthenticated("wrong name or password".to_owned());
    let OperatorAccess::Password(hash) = &auth.operators else { return Err(refused()) };
    if request.name != "operator" {
        return Err(refused());
    }
    let hash = PasswordHash::new(hash).map_err(|_| refused())?;
    argon2::Argon2::default()
        .verify_password(request.password.as_bytes(), &hash)
        .map_err(|_| refused())?;
    Ok(axum::Json(auth.tokens.issue("operator", Role::Operator, auth.now_secs())))
}

/// The sign-in endpoints' OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(demo, sign_in),
    components(schemas(DemoRequest, SignInRequest, IssuedToken, Role)),
    modifiers(&BearerAuth),
)]
pub struct AuthApi;

/// Declares the `bearer` security scheme every protected operation names.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}
