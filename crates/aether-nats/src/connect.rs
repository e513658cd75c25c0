//! Sorting a failed connection into a typed error.

use aether_core::Error;

/// Sorts a failed connection to `url`: refused credentials are [`Error::PermissionDenied`]
/// (retrying cannot help), anything else [`Error::Unavailable`]. The client's error is kept as
/// the source.
pub fn connect_error(url: &str, err: async_nats::ConnectError) -> Error {
    let context = format!("connecting to NATS at {url}");
    match err.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation => Error::PermissionDenied {
            context,
            source: Box::new(err),
        },
        _ => Error::unavailable(context, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_not_retryable() {
        let e = connect_error(
            "nats://x",
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::AuthorizationViolation),
        );
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("nats://x"));
        let e = connect_error(
            "nats://x",
            async_nats::ConnectError::new(async_nats::ConnectErrorKind::Io),
        );
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.is_retryable());
    }
}
