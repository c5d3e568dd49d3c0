//! WebSocket upgrades: who is connecting, decided before the upgrade.
//!
//! A browser cannot set an `Authorization` header on a WebSocket, so the bearer token
//! may come either way: the header (any client that can set it), or the
//! `Sec-WebSocket-Protocol` list as `bearer.<token>` next to [`PROTOCOL`] (what a
//! page does: `new WebSocket(url, ["girder.v1", "bearer." + token])`). The server
//! answers with [`PROTOCOL`] selected, never echoing the token. A missing, forged or
//! expired token is refused with the same 401 problem as any request, before the
//! upgrade; a valid one yields its expiry, at which the connection must end (close
//! code 4001) — a socket never outlives the token that opened it.
//!
//! A token in the URL is deliberately not accepted: URLs end up in access logs.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::identity::{AuthError, Caller, TokenError, Tokens};

/// The subprotocol Girder's WebSocket endpoints speak (JSON text frames).
pub const PROTOCOL: &str = "girder.v1";

/// The prefix of the subprotocol entry that carries the token.
const BEARER_PROTOCOL: &str = "bearer.";

/// The authenticated caller of an upgrade request, with its token's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsCaller {
    /// Who.
    pub caller: Caller,
    /// When the token expires, Unix seconds: the connection ends then.
    pub expires_at: u64,
}

fn token_of(parts: &Parts) -> Result<Option<String>, AuthError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Some(t.to_owned()))
            .ok_or_else(|| AuthError::Unauthenticated(TokenError::Scheme.to_string()));
    }
    let offered = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL))
        .map(str::to_owned);
    Ok(offered)
}

impl<S: Send + Sync> FromRequestParts<S> for WsCaller {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let tokens = parts.extensions.get::<Arc<Tokens>>().ok_or(AuthError::NotConfigured)?;
        let token = token_of(parts)?.ok_or_else(|| {
            AuthError::Unauthenticated(
                "a WebSocket needs a bearer token: the Authorization header, or the subprotocol \
                 `bearer.<token>` beside `girder.v1`"
                    .to_owned(),
            )
        })?;
        let (caller, expires_at) = tokens
            .verify_expiring(&token)
            .map_err(|e| AuthError::Unauthenticated(e.to_string()))?;
        Ok(Self { caller, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;
    use crate::identity::{Role, test_tokens};

    async fn caller(headers: &[(&str, &str)]) -> Result<WsCaller, AuthError> {
        let mut request = Request::builder().uri("/ws");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts.extensions.insert(Arc::new(test_tokens()));
        WsCaller::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn the_token_comes_from_the_header_or_the_subprotocol_list() {
        let issued = test_tokens().issue("ann", Role::User, now());
        let header = format!("Bearer {}", issued.token);
        let by_header = caller(&[("authorization", &header)]).await.unwrap();
        assert_eq!(by_header.caller.id, "ann");
        assert_eq!(by_header.expires_at, issued.expires_at);
        let protocols = format!("girder.v1, bearer.{}", issued.token);
        let by_protocol = caller(&[("sec-websocket-protocol", &protocols)]).await.unwrap();
        assert_eq!(by_protocol, by_header);
    }

    #[tokio::test]
    async fn missing_forged_and_expired_tokens_are_refused() {
        assert!(matches!(caller(&[]).await, Err(AuthError::Unauthenticated(_))));
        assert!(matches!(
            caller(&[("sec-websocket-protocol", "girder.v1, bearer.nope")]).await,
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            caller(&[("authorization", "Basic abc")]).await,
            Err(AuthError::Unauthenticated(_))
        ));
        let expired = test_tokens().issue("ann", Role::User, now() - 7_200);
        let protocols = format!("girder.v1, bearer.{}", expired.token);
        assert!(matches!(
            caller(&[("sec-websocket-protocol", &protocols)]).await,
            Err(AuthError::Unauthenticated(_))
        ));
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }
}
