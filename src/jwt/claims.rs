//! The claims the authorizer reads from a verified token: Mercure's `mercure.publish` and
//! `mercure.subscribe` selector lists, and the expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::selector::Selector;

/// What a verified token allows.
#[derive(Debug, Clone)]
pub(crate) struct Claims {
    /// `mercure.publish`, when present.
    pub(crate) publish: Option<Arc<[Selector]>>,
    /// `mercure.subscribe`, when present.
    pub(crate) subscribe: Option<Arc<[Selector]>>,
    /// `exp`, when present.
    pub(crate) expires: Option<SystemTime>,
    #[cfg_attr(not(feature = "mercure"), allow(dead_code))]
    /// `mercure.payload`, when present: anything the token's issuer attached to the subscriber,
    /// shown in Mercure's subscription events.
    pub(crate) payload: Option<Value>,
}

impl Claims {
    /// Reads the claims of a token whose signature, `exp` and `nbf` were checked.
    ///
    /// # Errors
    ///
    /// A reason for the client when a claim has the wrong shape: `mercure` not an object, a
    /// selector list not an array of strings, a selector that cannot be one.
    pub(crate) fn read(claims: &Value) -> Result<Self, String> {
        let mercure = match claims.get("mercure") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mercure)) => Some(mercure),
            Some(_) => return Err("the `mercure` claim must be an object".to_owned()),
        };
        let list = |key: &str| match mercure.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => selectors(key, value).map(Some),
        };
        let expires = match claims.get("exp") {
            None | Some(Value::Null) => None,
            Some(exp) => Some(
                exp.as_f64()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .and_then(|since| UNIX_EPOCH.checked_add(since))
                    .ok_or("the `exp` claim must be a date in seconds since 1970")?,
            ),
        };
        Ok(Self {
            publish: list("publish")?,
            subscribe: list("subscribe")?,
            expires,
            payload: mercure
                .and_then(|m| m.get("payload"))
                .filter(|payload| !payload.is_null())
                .cloned(),
        })
    }
}

fn selectors(key: &str, value: &Value) -> Result<Arc<[Selector]>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "the `mercure.{key}` claim must be an array of topic selectors"
        ));
    };
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| {
                format!("the `mercure.{key}` claim must hold strings, found {item}")
            })?;
            Selector::new(text).map_err(|e| format!("in the `mercure.{key}` claim: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_lists_and_the_expiry() {
        let claims = Claims::read(&json!({
            "mercure": {"publish": ["*"], "subscribe": ["a", "b/{id}"]},
            "exp": 2_000_000_000,
        }))
        .expect("valid claims");
        let publish = claims.publish.expect("publish");
        assert!(publish[0].is_any());
        let subscribe = claims.subscribe.expect("subscribe");
        assert_eq!(subscribe.len(), 2);
        assert!(subscribe[1].matches("b/7"));
        assert_eq!(
            claims.expires,
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert!(claims.payload.is_none());
    }

    #[test]
    fn the_payload_is_kept_as_sent() {
        let claims = Claims::read(&json!({
            "mercure": {"subscribe": ["*"], "payload": {"user": "ada", "groups": [1, 2]}},
        }))
        .expect("valid claims");
        assert_eq!(
            claims.payload,
            Some(json!({"user": "ada", "groups": [1, 2]}))
        );
    }

    #[test]
    fn missing_claims_are_none_and_an_empty_list_is_kept_empty() {
        let claims = Claims::read(&json!({"sub": "ada"})).expect("valid");
        assert!(claims.publish.is_none() && claims.subscribe.is_none());
        assert!(claims.expires.is_none());
        let claims = Claims::read(&json!({"mercure": {"publish": []}})).expect("valid");
        assert_eq!(claims.publish.map(|p| p.len()), Some(0));
    }

    #[test]
    fn claims_of_the_wrong_shape_are_refused_with_a_reason() {
        for (claims, reason) in [
            (json!({"mercure": "all"}), "must be an object"),
            (json!({"mercure": {"publish": "*"}}), "must be an array"),
            (json!({"mercure": {"subscribe": [1]}}), "must hold strings"),
            (json!({"mercure": {"subscribe": [""]}}), "1..="),
            (json!({"exp": "tomorrow"}), "`exp`"),
            (json!({"exp": -5}), "`exp`"),
        ] {
            let error = Claims::read(&claims).expect_err("refused");
            assert!(error.contains(reason), "{error:?} for {claims}");
        }
    }
}
