//! `--auth azure-cli`: a token from `az account get-access-token --scope {graph}/.default
//! [--tenant T] --output json`, run again when the cache renews it (5 minutes before
//! `expires_on` for Entra's hour-long tokens). `az` runs without a shell, with nothing secret in
//! its arguments; its output holds the token and is never logged.
//!
//! Only useful when `az` is logged in as a service principal or a managed identity: with a user
//! login, az's own first-party app signs in, and that app cannot be given this API's permission
//! (AADSTS65002: its Graph permissions are pre-authorized by Microsoft, fixed, and lack
//! SecurityIdentitiesActions.ReadWrite.All; research/credentials.md section 4). Such a token is
//! refused here, with the reason, before anything is sent.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::super::refusal::scrub;
use super::super::{Attempt, AuthError};

/// Azure CLI's own app id: a token issued to it is a user login of `az`.
const AZURE_CLI_APP_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
/// The longest `az` may take (the Python SDK allows 10 s; a cold `az` is slow).
const AZ_TIMEOUT: Duration = Duration::from_secs(30);
/// Assumed when `az` is too old to print `expires_on` (before 2.54): renewed soon, to be safe.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(10 * 60);

pub(crate) struct AzureCli {
    scope: String,
    tenant: Option<String>,
}

impl AzureCli {
    pub(crate) fn new(scope: &str, tenant: Option<&str>) -> AzureCli {
        AzureCli {
            scope: scope.to_owned(),
            tenant: tenant
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        }
    }

    fn command(&self) -> tokio::process::Command {
        // On Windows `az` is a .cmd script, which only cmd runs.
        let mut command = if cfg!(windows) {
            let mut command = tokio::process::Command::new("cmd");
            command.args(["/C", "az"]);
            command
        } else {
            tokio::process::Command::new("az")
        };
        command.args([
            "account",
            "get-access-token",
            "--output",
            "json",
            "--scope",
            &self.scope,
        ]);
        if let Some(tenant) = &self.tenant {
            command.args(["--tenant", tenant]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub(crate) async fn request_once(&self) -> Attempt {
        let output = match tokio::time::timeout(AZ_TIMEOUT, self.command().output()).await {
            Err(_) => {
                return Attempt::Final(AuthError::AzureCli {
                    reason: format!(
                        "`az account get-access-token` gave no answer in {}",
                        humantime::format_duration(AZ_TIMEOUT)
                    ),
                });
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                return Attempt::Final(AuthError::AzureCli {
                    reason: "`az` is not on PATH: install the Azure CLI and `az login` as a service principal or managed identity, or choose another --auth".to_owned(),
                });
            }
            Ok(Err(error)) => {
                return Attempt::Final(AuthError::AzureCli {
                    reason: format!("cannot run `az`: {error}"),
                });
            }
            Ok(Ok(output)) => output,
        };
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            stdout.zeroize();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said: String = stderr
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("no message")
                .chars()
                .take(300)
                .collect();
            let said = scrub(&said, "");
            let reason = if stderr.contains("AADSTS65002") {
                format!("{said}. {}", USER_LOGIN)
            } else if stderr.contains("az login") {
                format!(
                    "{said}. Sign az in as a service principal (`az login --service-principal`) or a managed identity (`az login --identity`)"
                )
            } else {
                said
            };
            return Attempt::Final(AuthError::AzureCli {
                reason: format!("`az account get-access-token` failed: {reason}"),
            });
        }
        let parsed = parse_az(&stdout, SystemTime::now());
        stdout.zeroize();
        match parsed {
            Ok((token, lifetime)) => {
                if is_user_login(token.expose_secret()) {
                    return Attempt::Final(AuthError::AzureCliUserLogin);
                }
                Attempt::Issued { token, lifetime }
            }
            Err(reason) => Attempt::Final(AuthError::AzureCli {
                reason: format!("`az account get-access-token` printed {reason}"),
            }),
        }
    }
}

/// Why a user login of `az` cannot serve: for the error message and the README.
pub(crate) const USER_LOGIN: &str = "az is signed in as a user, so its token comes from Azure CLI's own first-party app (04b07795-8ddb-461a-bbee-02f9e1bf7b46), whose Graph permissions Microsoft pre-authorizes and no tenant can extend: it cannot carry SecurityIdentitiesActions.ReadWrite.All (Entra refuses with AADSTS65002). Use `az login --service-principal` or `az login --identity`, or --auth device-code or browser with the tenant's own app";

/// A token `az` got for a user: issued to az's own app, or carrying delegated `scp` (app-only
/// tokens carry `roles`), or typed `idtyp: user`.
fn is_user_login(token: &str) -> bool {
    let Some(claims) = super::super::token_claims(token) else {
        return false;
    };
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
    text("idtyp") == Some("user")
        || claims.get("scp").is_some()
        || text("appid").or_else(|| text("azp")) == Some(AZURE_CLI_APP_ID)
}

/// `az`'s JSON: `accessToken`, and `expires_on` (epoch seconds, az 2.54 and later; a number or a
/// numeric string). Without it, a short lifetime is assumed.
fn parse_az(stdout: &str, now: SystemTime) -> Result<(SecretString, Duration), String> {
    #[derive(Deserialize)]
    struct Printed {
        #[serde(rename = "accessToken")]
        access_token: Option<String>,
        expires_on: Option<serde_json::Value>,
    }
    let mut printed: Printed =
        serde_json::from_str(stdout).map_err(|_| "something that is not JSON".to_owned())?;
    let mut text = printed
        .access_token
        .take()
        .filter(|t| !t.trim().is_empty())
        .ok_or("no accessToken")?;
    let token = SecretString::from(text.trim());
    text.zeroize();
    if token.expose_secret().chars().any(|c| !c.is_ascii_graphic()) {
        return Err("an accessToken an HTTP header cannot carry".to_owned());
    }
    let epoch = match &printed.expires_on {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let lifetime = match epoch {
        Some(epoch) => SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(epoch))
            .and_then(|at| at.duration_since(now).ok())
            .ok_or("a token that has already expired (check the system clock)")?,
        None => UNKNOWN_LIFETIME,
    };
    Ok((token, lifetime.min(super::super::MAX_LIFETIME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(claims: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("eyJhbGciOiJub25lIn0.{}.sig", engine.encode(claims))
    }

    #[test]
    fn issue_18_az_output_gives_the_token_and_its_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let (token, lifetime) = parse_az(
            r#"{"accessToken":"at","expiresOn":"2033-05-18 04:33:20.000000","expires_on":2000003600,"tenant":"t","tokenType":"Bearer"}"#,
            now,
        )
        .unwrap();
        assert_eq!(token.expose_secret(), "at");
        assert_eq!(lifetime, Duration::from_secs(3600));
        let (_, lifetime) =
            parse_az(r#"{"accessToken":"at","expires_on":"2000000060"}"#, now).unwrap();
        assert_eq!(lifetime, Duration::from_secs(60));
        let (_, lifetime) = parse_az(r#"{"accessToken":"at"}"#, now).unwrap();
        assert_eq!(lifetime, UNKNOWN_LIFETIME);
        assert!(parse_az(r#"{"accessToken":"at","expires_on":1}"#, now).is_err());
        assert!(parse_az("ERROR", now).is_err());
    }

    #[test]
    fn issue_18_a_user_login_of_az_is_recognised() {
        assert!(is_user_login(&jwt(r#"{"scp":"User.Read","idtyp":"user"}"#)));
        assert!(is_user_login(&jwt(&format!(
            r#"{{"appid":"{AZURE_CLI_APP_ID}"}}"#
        ))));
        assert!(!is_user_login(&jwt(
            r#"{"roles":["SecurityIdentitiesActions.ReadWrite.All"],"idtyp":"app"}"#
        )));
        assert!(!is_user_login("opaque"));
        assert!(USER_LOGIN.contains("AADSTS65002"));
    }
}
