//! Which credential kind signs the run in (SPEC section 9, issue 18), and the unattended kinds
//! themselves, one file each: `federated` (workload identity's token file, GitHub Actions' OIDC
//! token), `managed` (the managed-identity endpoints of every Azure host), `azure_cli` (`az
//! account get-access-token`), while a responder's own sign-in (device code, browser) lives in `graph::auth::delegated`.
//!
//! The choice: `--auth KIND` (or env `AZURE_TOKEN_CREDENTIALS`) picks one kind; without it, the
//! explicit inputs of SPEC section 2 decide (ready token, certificate, secret), then the
//! unattended kinds whose variables are set (workload identity, GitHub OIDC, managed identity by
//! `IDENTITY_ENDPOINT` or `MSI_ENDPOINT`). IMDS has no variable, so it is used only when asked
//! (`--auth managed-identity` or `auto`). This module only decides; `auth::Tokens` builds the
//! chosen kind and owns the cache every kind shares.
//!
//! Env values are read once, by [`Environment::from_process`] (called from `cli.rs`), and passed
//! in, so that tests decide what the environment holds.

pub(crate) mod azure_cli;
pub(crate) mod federated;
pub(crate) mod managed;

use std::path::PathBuf;

use secrecy::SecretString;
use tracing::warn;

use super::{AuthError, CredentialSources, SourceKind};

/// `--auth KIND` and `AZURE_TOKEN_CREDENTIALS`. The SDKs' names for the same kinds are accepted
/// too (ignoring case), so a variable set for azure-identity means the same here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum AuthKind {
    /// A ready access token (--access-token-file or GRAPH_ACCESS_TOKEN).
    Token,
    /// An app registration's client certificate (--certificate).
    Certificate,
    /// An app registration's client secret (AZURE_CLIENT_SECRET or --client-secret-file).
    #[value(alias = "ClientSecretCredential", alias = "EnvironmentCredential")]
    Secret,
    /// AKS workload identity, or any OIDC federation through a token file
    /// (AZURE_FEDERATED_TOKEN_FILE).
    #[value(alias = "WorkloadIdentityCredential")]
    WorkloadIdentity,
    /// GitHub Actions' OIDC token (workflow `permissions: id-token: write`).
    GithubOidc,
    /// The identity the Azure host gives: VM (IMDS), App Service, Functions, Container Apps,
    /// Automation, Cloud Shell, Arc.
    #[value(alias = "ManagedIdentityCredential")]
    ManagedIdentity,
    /// Sign in as yourself on a terminal, with a code entered in a browser elsewhere.
    #[value(alias = "DeviceCodeCredential")]
    DeviceCode,
    /// Sign in as yourself in a browser on this machine.
    #[value(alias = "InteractiveBrowserCredential")]
    Browser,
    /// `az account get-access-token` (az logged in as a service principal or managed identity).
    #[value(alias = "AzureCliCredential", alias = "dev")]
    AzureCli,
    /// Unattended: the one kind the environment holds (workload identity, GitHub OIDC, managed
    /// identity; IMDS last); never prompts.
    #[value(alias = "prod")]
    Auto,
}

impl AuthKind {
    /// The name as `--auth` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Token => "token",
            AuthKind::Certificate => "certificate",
            AuthKind::Secret => "secret",
            AuthKind::WorkloadIdentity => "workload-identity",
            AuthKind::GithubOidc => "github-oidc",
            AuthKind::ManagedIdentity => "managed-identity",
            AuthKind::DeviceCode => "device-code",
            AuthKind::Browser => "browser",
            AuthKind::AzureCli => "azure-cli",
            AuthKind::Auto => "auto",
        }
    }
}

/// A user-assigned managed identity (`--managed-identity-id`): each id goes in its own query
/// parameter, which differs by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedIdentityId {
    Client(String),
    Object(String),
    Resource(String),
}

impl ManagedIdentityId {
    /// `GUID` or `client-id=GUID`: a client id; `object-id=GUID` (or `principal-id=`): an object
    /// id; `/subscriptions/...` or `resource-id=/subscriptions/...`: a resource id. A client id
    /// and an object id look alike, so an object id must say so.
    pub fn parse(text: &str) -> Result<ManagedIdentityId, String> {
        let text = text.trim();
        let (label, value) = match text.split_once('=') {
            Some((label, value)) => (Some(label.trim().to_ascii_lowercase()), value.trim()),
            None => (None, text),
        };
        let guid = |value: &str| {
            value.len() == 36
                && value.chars().enumerate().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                })
        };
        let resource = |value: &str| {
            value.to_ascii_lowercase().starts_with("/subscriptions/")
                && value.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '(' | ')')
                })
        };
        match label.as_deref() {
            None if value.starts_with('/') && resource(value) => {
                Ok(ManagedIdentityId::Resource(value.to_owned()))
            }
            None | Some("client-id" | "client_id" | "clientid") if guid(value) => {
                Ok(ManagedIdentityId::Client(value.to_owned()))
            }
            Some("object-id" | "object_id" | "objectid" | "principal-id" | "principal_id")
                if guid(value) =>
            {
                Ok(ManagedIdentityId::Object(value.to_owned()))
            }
            Some("resource-id" | "resource_id" | "resourceid") if resource(value) => {
                Ok(ManagedIdentityId::Resource(value.to_owned()))
            }
            _ => Err(format!(
                "{text:?} is not a managed identity id: give its client id (a GUID, or client-id=GUID), object-id=GUID, or its resource id (/subscriptions/.../userAssignedIdentities/NAME)"
            )),
        }
    }
}

/// What the environment holds for the unattended kinds. Secrets stay in `SecretString`s.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `AZURE_FEDERATED_TOKEN_FILE` (workload identity).
    pub federated_token_file: Option<PathBuf>,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` (GitHub Actions).
    pub actions_request_url: Option<String>,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`: a secret.
    pub actions_request_token: Option<SecretString>,
    /// `IDENTITY_ENDPOINT` (App Service protocol, or Arc with `IMDS_ENDPOINT`).
    pub identity_endpoint: Option<String>,
    /// `IDENTITY_HEADER`: a secret the platform rotates.
    pub identity_header: Option<SecretString>,
    /// `IDENTITY_SERVER_THUMBPRINT` is set (Service Fabric).
    pub identity_server_thumbprint: bool,
    /// `IMDS_ENDPOINT` (Arc).
    pub imds_endpoint: Option<String>,
    /// `MSI_ENDPOINT` (Cloud Shell, or Azure ML with `MSI_SECRET`).
    pub msi_endpoint: Option<String>,
    /// `MSI_SECRET` is set (Azure ML).
    pub msi_secret: bool,
    /// `AZURE_POD_IDENTITY_AUTHORITY_HOST`: IMDS's scheme and host instead of
    /// `http://169.254.169.254` (tests point it at the mock).
    pub imds_authority_host: Option<String>,
    /// `GRAPH_REMEDIATE_ARC_KEY_DIR`: where Arc's key files must be, instead of the agent's
    /// directory (for tests; the agent's directory needs root to create).
    pub arc_key_dir: Option<PathBuf>,
}

impl Environment {
    /// Reads the variables above from the process environment; empty values count as unset.
    pub fn from_process() -> Environment {
        let text = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let secret = |name: &str| text(name).map(SecretString::from);
        Environment {
            federated_token_file: text("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            actions_request_url: text("ACTIONS_ID_TOKEN_REQUEST_URL"),
            actions_request_token: secret("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
            identity_endpoint: text("IDENTITY_ENDPOINT"),
            identity_header: secret("IDENTITY_HEADER"),
            identity_server_thumbprint: text("IDENTITY_SERVER_THUMBPRINT").is_some(),
            imds_endpoint: text("IMDS_ENDPOINT"),
            msi_endpoint: text("MSI_ENDPOINT"),
            msi_secret: text("MSI_SECRET").is_some(),
            imds_authority_host: text("AZURE_POD_IDENTITY_AUTHORITY_HOST"),
            arc_key_dir: text("GRAPH_REMEDIATE_ARC_KEY_DIR").map(PathBuf::from),
        }
    }
}

/// Which managed-identity protocol the host speaks, detected from its variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedHost {
    /// App Service, Functions, Container Apps, Automation: `IDENTITY_ENDPOINT` +
    /// `IDENTITY_HEADER`.
    AppService,
    /// Cloud Shell: `MSI_ENDPOINT`.
    CloudShell,
    /// Azure Arc: `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`.
    Arc,
    /// An Azure VM or scale set (and AKS nodes): no variable.
    Imds,
}

/// The kind chosen, and whether `auto` chose it (IMDS then gets its shortest first timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    pub(crate) kind: SourceKind,
    pub(crate) by_auto: bool,
}

/// The unattended kinds whose variables are set, in SPEC order. Managed identity counts only
/// with a host variable: IMDS has none.
fn unattended_present(env: &Environment) -> Vec<&'static str> {
    let mut present = Vec::new();
    if env.federated_token_file.is_some() {
        present.push("workload-identity (AZURE_FEDERATED_TOKEN_FILE)");
    }
    if env.actions_request_url.is_some() {
        present.push("github-oidc (ACTIONS_ID_TOKEN_REQUEST_URL)");
    }
    if env.identity_endpoint.is_some() || env.msi_endpoint.is_some() {
        present.push("managed-identity (IDENTITY_ENDPOINT or MSI_ENDPOINT)");
    }
    present
}

/// Picks the kind (SPEC section 9). Reads no file and sends nothing; what a kind needs is
/// checked when it is built.
pub(crate) fn choose(sources: &CredentialSources) -> Result<Chosen, AuthError> {
    let env = &sources.environment;
    let given = sources.given();
    let missing = |kind: AuthKind, missing: &str| AuthError::MissingInput {
        kind: kind.as_str(),
        missing: missing.to_owned(),
    };
    let chosen = |kind: SourceKind| {
        Ok(Chosen {
            kind,
            by_auto: false,
        })
    };
    let Some(auth) = sources.auth else {
        let present = unattended_present(env);
        if let Some(&kind) = given.first() {
            if !present.is_empty() {
                warn!(
                    using = kind.describe(),
                    ignored = %present.join("; "),
                    "explicit credentials win over the unattended kinds set up in the environment (pass --auth to choose)"
                );
            }
            return chosen(kind);
        }
        if present.len() > 1 {
            warn!(
                using = present[0],
                ignored = %present[1..].join("; "),
                "more than one unattended credential is set up: the first in SPEC order wins (pass --auth to choose)"
            );
        }
        return match present.first() {
            Some(first) if first.starts_with("workload-identity") => {
                chosen(SourceKind::WorkloadIdentity)
            }
            Some(first) if first.starts_with("github-oidc") => chosen(SourceKind::GithubOidc),
            Some(_) => chosen(SourceKind::ManagedIdentity(managed_host(env)?)),
            None => Err(AuthError::NoCredentials),
        };
    };
    match auth {
        AuthKind::Token => given
            .iter()
            .find(|k| matches!(k, SourceKind::TokenFile | SourceKind::TokenEnv))
            .map_or_else(
                || {
                    Err(missing(
                        auth,
                        "a ready token: --access-token-file FILE or GRAPH_ACCESS_TOKEN",
                    ))
                },
                |&kind| chosen(kind),
            ),
        AuthKind::Certificate => {
            if given.contains(&SourceKind::Certificate) {
                chosen(SourceKind::Certificate)
            } else {
                Err(missing(
                    auth,
                    "the certificate: --certificate PEM or AZURE_CLIENT_CERTIFICATE_PATH",
                ))
            }
        }
        AuthKind::Secret => given
            .iter()
            .find(|k| matches!(k, SourceKind::SecretFile | SourceKind::SecretEnv))
            .map_or_else(
                || {
                    Err(missing(
                        auth,
                        "the client secret: AZURE_CLIENT_SECRET or --client-secret-file FILE",
                    ))
                },
                |&kind| chosen(kind),
            ),
        AuthKind::WorkloadIdentity => chosen(SourceKind::WorkloadIdentity),
        AuthKind::GithubOidc => chosen(SourceKind::GithubOidc),
        AuthKind::ManagedIdentity => chosen(SourceKind::ManagedIdentity(managed_host(env)?)),
        AuthKind::AzureCli => chosen(SourceKind::AzureCli),
        AuthKind::DeviceCode => chosen(SourceKind::DeviceCode),
        AuthKind::Browser => chosen(SourceKind::Browser),
        AuthKind::Auto => {
            let mut configured: Vec<&str> = given.iter().map(|k| k.describe()).collect();
            configured.extend(unattended_present(env));
            if configured.len() > 1 {
                return Err(AuthError::AutoConflict {
                    found: configured.join("; "),
                });
            }
            let kind = match given.first() {
                Some(&kind) => kind,
                None if env.federated_token_file.is_some() => SourceKind::WorkloadIdentity,
                None if env.actions_request_url.is_some() => SourceKind::GithubOidc,
                None => SourceKind::ManagedIdentity(managed_host(env)?),
            };
            Ok(Chosen {
                kind,
                by_auto: true,
            })
        }
    }
}

/// The managed-identity protocol of this host, as azure-identity detects it (the first match
/// wins); IMDS when no variable says otherwise. Hosts this tool does not speak to are named.
fn managed_host(env: &Environment) -> Result<ManagedHost, AuthError> {
    let unsupported = |what: &str| AuthError::MissingInput {
        kind: AuthKind::ManagedIdentity.as_str(),
        missing: what.to_owned(),
    };
    match (&env.identity_endpoint, &env.msi_endpoint) {
        (Some(_), _) if env.identity_server_thumbprint => Err(unsupported(
            "a host it speaks to: IDENTITY_SERVER_THUMBPRINT says Service Fabric, which this tool does not support; use workload-identity or a certificate",
        )),
        (Some(_), _) if env.identity_header.is_some() => Ok(ManagedHost::AppService),
        (Some(_), _) if env.imds_endpoint.is_some() => Ok(ManagedHost::Arc),
        (Some(_), _) => Err(unsupported(
            "IDENTITY_HEADER (App Service, Functions, Container Apps, Automation) or IMDS_ENDPOINT (Arc) beside IDENTITY_ENDPOINT: IDENTITY_ENDPOINT alone names no protocol",
        )),
        (None, Some(_)) if env.msi_secret => Err(unsupported(
            "a host it speaks to: MSI_ENDPOINT with MSI_SECRET says Azure Machine Learning, which this tool does not support",
        )),
        (None, Some(_)) => Ok(ManagedHost::CloudShell),
        (None, None) => Ok(ManagedHost::Imds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(environment: Environment) -> CredentialSources {
        CredentialSources {
            environment,
            ..CredentialSources::default()
        }
    }

    fn kind(sources: &CredentialSources) -> SourceKind {
        choose(sources).unwrap().kind
    }

    #[test]
    fn issue_18_explicit_inputs_come_before_the_unattended_kinds() {
        let mut sources = with_env(Environment {
            federated_token_file: Some("/t".into()),
            ..Environment::default()
        });
        assert_eq!(kind(&sources), SourceKind::WorkloadIdentity);
        sources.client_secret = Some(SecretString::from("s"));
        assert_eq!(kind(&sources), SourceKind::SecretEnv);
        // --auth wins over both.
        sources.auth = Some(AuthKind::WorkloadIdentity);
        assert_eq!(kind(&sources), SourceKind::WorkloadIdentity);
    }

    #[test]
    fn issue_18_unattended_kinds_in_spec_order_and_imds_only_when_asked() {
        let env = Environment {
            actions_request_url: Some("http://127.0.0.1:1/x?a=1".into()),
            identity_endpoint: Some("http://127.0.0.1:1/msi".into()),
            identity_header: Some(SecretString::from("h")),
            ..Environment::default()
        };
        assert_eq!(kind(&with_env(env.clone())), SourceKind::GithubOidc);
        let env = Environment {
            actions_request_url: None,
            ..env
        };
        assert_eq!(
            kind(&with_env(env)),
            SourceKind::ManagedIdentity(ManagedHost::AppService)
        );
        // Nothing set: no IMDS guess, the run stops.
        assert!(matches!(
            choose(&CredentialSources::default()),
            Err(AuthError::NoCredentials)
        ));
        let asked = CredentialSources {
            auth: Some(AuthKind::ManagedIdentity),
            ..CredentialSources::default()
        };
        assert_eq!(kind(&asked), SourceKind::ManagedIdentity(ManagedHost::Imds));
    }

    #[test]
    fn issue_18_managed_hosts_are_detected_from_their_variables() {
        let asked = |env: Environment| {
            choose(&CredentialSources {
                auth: Some(AuthKind::ManagedIdentity),
                environment: env,
                ..CredentialSources::default()
            })
        };
        let endpoint = Some("http://127.0.0.1:1/x".to_owned());
        let arc = asked(Environment {
            identity_endpoint: endpoint.clone(),
            imds_endpoint: endpoint.clone(),
            ..Environment::default()
        });
        assert_eq!(
            arc.unwrap().kind,
            SourceKind::ManagedIdentity(ManagedHost::Arc)
        );
        let shell = asked(Environment {
            msi_endpoint: endpoint.clone(),
            ..Environment::default()
        });
        assert_eq!(
            shell.unwrap().kind,
            SourceKind::ManagedIdentity(ManagedHost::CloudShell)
        );
        let alone = asked(Environment {
            identity_endpoint: endpoint.clone(),
            ..Environment::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            alone.contains("managed-identity") && alone.contains("IDENTITY_HEADER"),
            "{alone}"
        );
        let ml = asked(Environment {
            msi_endpoint: endpoint,
            msi_secret: true,
            ..Environment::default()
        })
        .unwrap_err()
        .to_string();
        assert!(ml.contains("Machine Learning"), "{ml}");
        let fabric = asked(Environment {
            identity_endpoint: Some("http://127.0.0.1:1/x".to_owned()),
            identity_header: Some(SecretString::from("h")),
            identity_server_thumbprint: true,
            ..Environment::default()
        })
        .unwrap_err()
        .to_string();
        assert!(fabric.contains("Service Fabric"), "{fabric}");
    }

    #[test]
    fn issue_18_auto_takes_the_one_configured_kind_and_refuses_two() {
        let auto = |env: Environment, secret: bool| {
            choose(&CredentialSources {
                auth: Some(AuthKind::Auto),
                environment: env,
                client_secret: secret.then(|| SecretString::from("s")),
                ..CredentialSources::default()
            })
        };
        let file = Environment {
            federated_token_file: Some("/t".into()),
            ..Environment::default()
        };
        let chosen = auto(file.clone(), false).unwrap();
        assert_eq!(chosen.kind, SourceKind::WorkloadIdentity);
        assert!(chosen.by_auto);
        let two = auto(file, true).unwrap_err().to_string();
        assert!(
            two.contains("AZURE_CLIENT_SECRET") && two.contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{two}"
        );
        let imds = auto(Environment::default(), false).unwrap();
        assert_eq!(imds.kind, SourceKind::ManagedIdentity(ManagedHost::Imds));
    }

    #[test]
    fn issue_18_an_explicit_kind_without_its_input_says_what_is_missing() {
        for (auth, wanted) in [
            (AuthKind::Token, "GRAPH_ACCESS_TOKEN"),
            (AuthKind::Certificate, "--certificate"),
            (AuthKind::Secret, "AZURE_CLIENT_SECRET"),
        ] {
            let error = choose(&CredentialSources {
                auth: Some(auth),
                ..CredentialSources::default()
            })
            .unwrap_err()
            .to_string();
            assert!(
                error.contains(auth.as_str()) && error.contains(wanted),
                "{error}"
            );
        }
    }

    #[test]
    fn issue_18_managed_identity_ids_go_by_their_kind() {
        let guid = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            ManagedIdentityId::parse(guid),
            Ok(ManagedIdentityId::Client(guid.into()))
        );
        assert_eq!(
            ManagedIdentityId::parse(&format!("object-id={guid}")),
            Ok(ManagedIdentityId::Object(guid.into()))
        );
        let resource = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi";
        assert_eq!(
            ManagedIdentityId::parse(resource),
            Ok(ManagedIdentityId::Resource(resource.into()))
        );
        assert!(ManagedIdentityId::parse("object-id=nope").is_err());
        assert!(ManagedIdentityId::parse("x&resource=evil").is_err());
    }
}
