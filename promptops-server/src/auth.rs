//! Roles, permissions and API keys.
//!
//! A key is `po_` + 43 URL-safe base64 characters (32 random bytes); the
//! registry stores only its SHA-256. Every key belongs to a user and an
//! organisation, carries one role, and is scoped to one project (or, when
//! created without one, to every project of its organisation).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Sdk,
    Viewer,
    Author,
    Reviewer,
    Approver,
    Publisher,
    Auditor,
    Admin,
}

pub const ALL_ROLES: [Role; 8] = [
    Role::Sdk,
    Role::Viewer,
    Role::Author,
    Role::Reviewer,
    Role::Approver,
    Role::Publisher,
    Role::Auditor,
    Role::Admin,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Perm {
    /// GET snapshot, SSE stream.
    SnapshotRead,
    /// Prompts, versions, labels, diffs, reviews, project settings.
    PromptRead,
    /// Create prompts and versions.
    PromptWrite,
    /// Set, move or delete a label that is not protected.
    LabelWrite,
    /// Move a protected label (publish, rollback), archive and unarchive.
    Publish,
    /// Record a review comment (`comment`, `request_changes`).
    Review,
    /// Approve a version for protected labels.
    Approve,
    /// Read and export the audit log; verify its chain.
    AuditRead,
    /// Project settings, API keys, secrets.
    Admin,
    /// Upload SDK telemetry (`POST /v1/telemetry`).
    TelemetryWrite,
}

pub const ALL_PERMS: [Perm; 10] = [
    Perm::SnapshotRead,
    Perm::PromptRead,
    Perm::PromptWrite,
    Perm::LabelWrite,
    Perm::Publish,
    Perm::Review,
    Perm::Approve,
    Perm::AuditRead,
    Perm::Admin,
    Perm::TelemetryWrite,
];

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Sdk => "sdk",
            Role::Viewer => "viewer",
            Role::Author => "author",
            Role::Reviewer => "reviewer",
            Role::Approver => "approver",
            Role::Publisher => "publisher",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        ALL_ROLES.iter().copied().find(|r| r.as_str() == s)
    }

    /// The permission matrix (documented in PERMISSIONS.md).
    pub fn allows(&self, p: Perm) -> bool {
        use Perm::*;
        match self {
            Role::Sdk => matches!(p, SnapshotRead | TelemetryWrite),
            Role::Viewer => matches!(p, SnapshotRead | PromptRead),
            Role::Author => matches!(p, SnapshotRead | PromptRead | PromptWrite | LabelWrite),
            Role::Reviewer => matches!(p, SnapshotRead | PromptRead | Review),
            Role::Approver => matches!(p, SnapshotRead | PromptRead | Review | Approve),
            Role::Publisher => matches!(p, SnapshotRead | PromptRead | LabelWrite | Publish),
            Role::Auditor => matches!(p, SnapshotRead | PromptRead | AuditRead),
            Role::Admin => true,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: resolved from the bearer key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: i64,
    pub key_prefix: String,
    pub user: String,
    pub org_id: i64,
    pub org: String,
    /// `None`: every project of the organisation.
    pub project_id: Option<i64>,
    pub project: Option<String>,
    pub role: Role,
}

impl Principal {
    pub fn can(&self, p: Perm) -> bool {
        self.role.allows(p)
    }

    /// May this key act on a project of `org_id` with id `project_id`?
    pub fn in_scope(&self, org_id: i64, project_id: i64) -> bool {
        self.org_id == org_id && self.project_id.is_none_or(|p| p == project_id)
    }
}

pub const KEY_PREFIX: &str = "po_";

/// A new random API key.
pub fn generate_key() -> Result<String, crate::crypto::CryptoError> {
    let bytes: [u8; 32] = crate::crypto::random_bytes()?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

pub fn hash_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The part of a key that is safe to show (`po_` + 6 characters).
pub fn display_prefix(token: &str) -> String {
    token.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = generate_key().unwrap();
        assert!(k.starts_with("po_"));
        assert_eq!(k.len(), 3 + 43);
        assert_ne!(k, generate_key().unwrap());
        assert_eq!(hash_key(&k).len(), 64);
        assert_eq!(display_prefix(&k).len(), 9);
    }

    #[test]
    fn matrix_basics() {
        assert!(Role::Admin.allows(Perm::Admin));
        assert!(!Role::Sdk.allows(Perm::PromptRead));
        assert!(Role::Sdk.allows(Perm::SnapshotRead));
        assert!(Role::Sdk.allows(Perm::TelemetryWrite));
        assert!(!Role::Viewer.allows(Perm::TelemetryWrite));
        assert!(!Role::Author.allows(Perm::Publish));
        assert!(!Role::Publisher.allows(Perm::Approve));
        assert!(Role::Approver.allows(Perm::Approve));
        for r in ALL_ROLES {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
