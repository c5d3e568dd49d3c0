//! Who is calling: signed, expiring bearer tokens (JWT, HS256) and the extractors
//! every system's handlers take.
//!
//! - [`Tokens`] issues and verifies tokens under one key. `girder serve` generates the
//!   key on first start and shares it through the database, so a token issued by one
//!   instance is accepted by every other.
//! - [`Caller`] is the authenticated caller (any role); [`Operator`] an authenticated
//!   operator; [`MaybeCaller`] accepts anonymous requests but still refuses a bad token.
//! - The server puts its [`Tokens`] into every request's extensions
//!   ([`Tokens::layer`]); the extractors read them from there.
//!
//! **One rule for 401 and 403.** 401 (`unauthenticated`, with `WWW-Authenticate:
//! Bearer`) when the request carries no usable token: none where one is needed, or one
//! that is malformed, forged, expired or signed with another key. 403 (`forbidden`)
//! when the token is valid but its role does not allow the operation. A resource that
//! exists but belongs to someone else is reported by the system as 404 (its existence
//! is not disclosed) or 403, and each system says which.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::Problem;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Acts on its own resources (holds, orders, links).
    User,
    /// Also administers: venues and events, inventory and centres, rate-limit rules.
    Operator,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's id: what resources are owned by.
    pub id: String,
    /// What the token allows.
    pub role: Role,
}

impl Caller {
    /// Whether the caller is an operator.
    #[must_use]
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator(pub Caller);

/// The caller if the request carries a token; `None` for an anonymous request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaybeCaller(pub Option<Caller>);

/// The claims inside a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    /// The caller's id.
    sub: String,
    /// Its role.
    role: Role,
    /// Issued at, Unix seconds.
    iat: u64,
    /// Expires at, Unix seconds.
    exp: u64,
    /// Always [`ISSUER`].
    iss: String,
}

const ISSUER: &str = "girder";

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// It is not a token, is forged, expired, or from another key.
    #[error("invalid or expired token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Scheme,
}

/// Issues and verifies tokens under one key.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// A token and what it grants, as the sign-in endpoints answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The caller's id.
    pub user: String,
    /// What it allows.
    pub role: Role,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
}

impl Tokens {
    /// Tokens signed with `key`, valid for `ttl_secs` after issue.
    #[must_use]
    pub fn new(key: &[u8; 32], ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is exact: no grace beyond what the token says.
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl_secs,
        }
    }

    /// A token for `user` with `role`, issued at `now_secs`.
    ///
    /// # Panics
    /// Never for HS256 with a byte key: encoding cannot fail.
    #[must_use]
    pub fn issue(&self, user: &str, role: Role, now_secs: u64) -> IssuedToken {
        let claims = Claims {
            sub: user.to_owned(),
            role,
            iat: now_secs,
            exp: now_secs.saturating_add(self.ttl_secs),
            iss: ISSUER.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 over a byte key always encodes");
        IssuedToken { token, user: claims.sub, role, expires_at: claims.exp }
    }

    /// The caller a token names, if it is valid now.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for a malformed, forged or expired token.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        self.verify_expiring(token).map(|(caller, _)| caller)
    }

    /// The caller a token names and when it expires (Unix seconds), if it is valid
    /// now: for a connection that outlives its request, which must end at expiry.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for a malformed, forged or expired token.
    pub fn verify_expiring(&self, token: &str) -> Result<(Caller, u64), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(TokenError::Invalid)?;
        Ok((Caller { id: data.claims.sub, role: data.claims.role }, data.claims.exp))
    }

    /// The layer that makes these tokens the ones every extractor checks.
    pub fn layer(self) -> axum::Extension<Arc<Self>> {
        axum::Extension(Arc::new(self))
    }
}

/// Why a request was refused for who it comes from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No usable token: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token whose role does not allow this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The server has no token verifier (a wiring bug): 500.
    #[error("no token verifier installed")]
    NotConfigured,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated(detail) => {
                let mut response =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthenticated")
                        .detail(detail)
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::Forbidden(detail) => Problem::forbidden(detail).into_response(),
            Self::NotConfigured => {
                tracing::error!("a handler needs the caller but no Tokens layer is installed");
                Problem::internal().into_response()
            }
        }
    }
}

/// The caller of `parts`: `Ok(None)` without an `Authorization` header.
pub(crate) fn caller_of(parts: &Parts) -> Result<Option<Caller>, AuthError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    // A layer that already verified this request's token left the caller here.
    if let Some(caller) = parts.extensions.get::<Caller>() {
        return Ok(Some(caller.clone()));
    }
    let tokens = parts.extensions.get::<Arc<Tokens>>().ok_or(AuthError::NotConfigured)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::Unauthenticated(TokenError::Scheme.to_string()))?;
    tokens.verify(token).map(Some).map_err(|e| AuthError::Unauthenticated(e.to_string()))
}

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        caller_of(parts).map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        caller_of(parts)?.ok_or_else(|| {
            AuthError::Unauthenticated(
                "this operation needs a bearer token (POST /api/auth/demo issues one)".to_owned(),
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.is_operator() {
            Ok(Self(caller))
        } else {
            Err(AuthError::Forbidden("this operation needs an operator token".to_owned()))
        }
    }
}

/// `Tokens` on a fixed key, for tests of a system's router: pair with
/// [`Tokens::layer`] and [`Tokens::issue`].
#[must_use]
pub fn test_tokens() -> Tokens {
    Tokens::new(&[7; 32], 3_600)
}

/// An `Authorization` value for `user` with `role`, signed by [`test_tokens`] and
/// valid for an hour from now (tests of a system's router).
///
/// # Panics
/// If the system clock reads before 1970.
#[must_use]
pub fn test_bearer(user: &str, role: Role) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    format!("Bearer {}", test_tokens().issue(user, role, now).token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_what_they_should() {
        let tokens = Tokens::new(&[1; 32], 60);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let issued = tokens.issue("alice", Role::User, now);
        assert_eq!(
            tokens.verify(&issued.token).expect("valid"),
            Caller { id: "alice".into(), role: Role::User }
        );
        // Another key, an expired token, a tampered one, garbage: all refused.
        let other = Tokens::new(&[2; 32], 60);
        assert!(other.verify(&issued.token).is_err());
        let expired = tokens.issue("alice", Role::User, now - 120);
        assert!(tokens.verify(&expired.token).is_err());
        let mut tampered = issued.token.clone();
        tampered.push('x');
        assert!(tokens.verify(&tampered).is_err());
        assert!(tokens.verify("not a token").is_err());
        assert!(tokens.verify("").is_err());
    }
}
