//! Which part of the fleet an admin-API route touches and what it does
//! there (`Area`, `Action`), so that a role — a domain capability in
//! `service::access::accounts` — can be checked against a request. The
//! console asks the same question before it shows an action.

use axum::http::Method;

use crate::service::access::accounts::{Action, Area, Role};

/// The area of a path (prefixes as routed by `api::router` and the ISE API).
pub fn area(path: &str) -> Area {
    if path.starts_with("/ciscoise/") {
        Area::Ise
    } else if path == "/v1/access/verify" {
        Area::VerifyToken
    } else if path.starts_with("/v1/accounts") {
        Area::Accounts
    } else if path.starts_with("/v1/secrets") {
        Area::Secrets
    } else if path.starts_with("/v1/access-tokens") {
        Area::AccessTokens
    } else if path.starts_with("/v1/push-cert") {
        Area::PushCert
    } else if path.starts_with("/v1/ade/tokens") || path.starts_with("/v1/ade/profiles") {
        Area::AdeTokens
    } else if path.starts_with("/v1/apps-and-books/tokens") {
        Area::AppTokens
    } else if path.starts_with("/v1/cas") {
        Area::Cas
    } else if path.starts_with("/v1/acme") {
        Area::Acme
    } else if path == "/v1/derived-credentials" || path == "/v1/derived-credentials/revocations" {
        Area::DerivedCredentials
    } else if path.starts_with("/v1/derived-credentials") {
        Area::DerivedCredential
    } else if path.starts_with("/v1/enrollments") {
        Area::Enrollments
    } else if path.starts_with("/v1/devices") {
        Area::Devices
    } else if path == "/v1/compliance" {
        Area::Compliance
    } else {
        Area::Other
    }
}

/// What a method does.
pub fn action(method: &Method) -> Action {
    if *method == Method::GET || *method == Method::HEAD {
        Action::Read
    } else if *method == Method::POST {
        Action::Create
    } else {
        Action::Change
    }
}

/// May `role` make this request?
pub fn allowed(role: Role, method: &Method, path: &str) -> bool {
    role.allows(area(path), action(method))
}

#[cfg(test)]
mod tests {
    use super::allowed;
    use crate::service::access::accounts::Role;
    use axum::http::Method;

    #[test]
    fn roles() {
        let g = Method::GET;
        let p = Method::POST;
        assert!(allowed(Role::Admin, &p, "/v1/accounts"));
        assert!(!allowed(Role::Operator, &p, "/v1/accounts"));
        assert!(!allowed(Role::Operator, &g, "/v1/accounts"));
        assert!(allowed(Role::Operator, &p, "/v1/commands"));
        assert!(!allowed(Role::Operator, &Method::PUT, "/v1/push-cert"));
        assert!(allowed(Role::Operator, &g, "/v1/push-cert"));
        // ABM's credentials and where its devices enroll: only admins change them.
        assert!(!allowed(Role::Operator, &Method::PUT, "/v1/ade/tokens/main"));
        assert!(!allowed(Role::Operator, &Method::PUT, "/v1/ade/profiles/corp"));
        assert!(!allowed(Role::Operator, &p, "/v1/ade/profiles/corp/assign"));
        assert!(allowed(Role::Operator, &g, "/v1/ade/profiles"));
        assert!(allowed(Role::Operator, &p, "/v1/ade/sync"));
        assert!(allowed(Role::Operator, &p, "/v1/ade/waiting/X/release"));
        assert!(!allowed(Role::ReadOnly, &p, "/v1/ade/sync"));
        // The organisation's licences: only admins change the content tokens.
        assert!(!allowed(Role::Operator, &Method::PUT, "/v1/apps-and-books/tokens/main"));
        assert!(!allowed(Role::Operator, &Method::DELETE, "/v1/apps-and-books/tokens/main"));
        assert!(allowed(Role::Operator, &g, "/v1/apps-and-books/tokens"));
        assert!(allowed(Role::Operator, &p, "/v1/apps/com.x/install"));
        assert!(!allowed(Role::ReadOnly, &p, "/v1/apps/com.x/install"));
        assert!(allowed(Role::ReadOnly, &g, "/v1/apps"));
        assert!(allowed(Role::ReadOnly, &g, "/v1/devices"));
        assert!(!allowed(Role::ReadOnly, &p, "/v1/commands"));
        // Enrollment material (a profile with a live challenge) is not a read.
        assert!(!allowed(Role::ReadOnly, &g, "/v1/enrollments/profile"));
        assert!(!allowed(Role::Nac, &g, "/v1/enrollments/profile"));
        assert!(allowed(Role::Operator, &g, "/v1/enrollments/profile"));
        assert!(!allowed(Role::ReadOnly, &g, "/ciscoise/mdminfo/"));
        assert!(allowed(Role::Nac, &g, "/ciscoise/mdminfo/"));
        assert!(allowed(Role::Nac, &p, "/ciscoise/mdm/api/v3/action/pinlock"));
        assert!(allowed(Role::Nac, &g, "/v1/devices"));
        assert!(!allowed(Role::Nac, &p, "/v1/commands"));
        assert!(!allowed(Role::Nac, &g, "/v1/certificates"));
        // A derived-credential provider: the collection only, read or post.
        assert!(allowed(Role::Issuer, &p, "/v1/derived-credentials"));
        assert!(allowed(Role::Issuer, &g, "/v1/derived-credentials"));
        assert!(!allowed(Role::Issuer, &Method::DELETE, "/v1/derived-credentials"));
        assert!(!allowed(Role::Issuer, &g, "/v1/derived-credentials/x"));
        // …and says which are revoked; operators may not.
        assert!(allowed(Role::Issuer, &p, "/v1/derived-credentials/revocations"));
        assert!(!allowed(Role::Operator, &p, "/v1/derived-credentials/revocations"));
        assert!(!allowed(Role::Issuer, &Method::DELETE, "/v1/derived-credentials/x"));
        assert!(!allowed(Role::Issuer, &g, "/v1/devices"));
    }
}
